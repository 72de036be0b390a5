//! EnCodec's configuration: HF transformers' `EncodecConfig` (`model_type` `encodec`), key for
//! key with its defaults, read from the `config.json` that `save_pretrained` writes (and that
//! `facebook/encodec_24khz` / `facebook/encodec_48khz` hold). Keys HF writes that the codec does
//! not read (`architectures`, `dtype`, `transformers_version`, ...) are tolerated.
//!
//! Must match `transformers/models/encodec/configuration_encodec.py`: `hop_length` is the
//! product of `upsampling_ratios`, HF's `frame_rate` is `ceil(sampling_rate / hop_length)` and
//! `num_quantizers` is `1000 · target_bandwidths[-1] // (frame_rate · ceil(log2 codebook_size))`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `EncodecConfig`, with HF's key names and defaults (those of `facebook/encodec_24khz`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncodecConfig {
    /// Bandwidths (kbps) the model can encode at; the last sets the number of codebooks.
    pub target_bandwidths: Vec<f64>,
    /// Sample rate of the waveform (Hz).
    pub sampling_rate: u32,
    /// Audio channels (1 mono, 2 stereo).
    pub audio_channels: usize,
    /// Scale every chunk to unit RMS before encoding (the 48 kHz model).
    pub normalize: bool,
    /// Encode in chunks of this many seconds (the 48 kHz model), or null for the whole clip.
    pub chunk_length_s: Option<f64>,
    /// Overlap of consecutive chunks (a fraction of `chunk_length_s`).
    pub overlap: Option<f64>,
    /// Channels of the latent (encoder output / decoder input).
    pub hidden_size: usize,
    /// Channels of the first convolution; doubled at every downsampling.
    pub num_filters: usize,
    /// Residual blocks per resolution.
    pub num_residual_layers: usize,
    /// Decoder strides; the encoder uses them in reverse order.
    pub upsampling_ratios: Vec<usize>,
    /// `weight_norm` or `time_group_norm`.
    pub norm_type: String,
    /// Kernel of the first convolution.
    pub kernel_size: usize,
    /// Kernel of the last convolution.
    pub last_kernel_size: usize,
    /// Kernel of the first convolution of each residual block.
    pub residual_kernel_size: usize,
    /// Dilation growth from one residual block to the next.
    pub dilation_growth_rate: usize,
    /// Causal (left) padding instead of centred padding.
    pub use_causal_conv: bool,
    /// Padding mode of the convolutions (`reflect`, `constant`, `replicate`).
    pub pad_mode: String,
    /// Channel reduction inside residual blocks.
    pub compress: usize,
    /// LSTM layers after the encoder's convolutions and before the decoder's.
    pub num_lstm_layers: usize,
    /// Share of a causal transposed convolution's padding trimmed on the right.
    pub trim_right_ratio: f64,
    /// Entries per codebook (a power of two).
    pub codebook_size: usize,
    /// Codebook vector size (null: `hidden_size`).
    pub codebook_dim: Option<usize>,
    /// A 1-wide convolution on the residual path of each residual block (else identity).
    pub use_conv_shortcut: bool,
}

impl Default for EncodecConfig {
    fn default() -> Self {
        EncodecConfig {
            target_bandwidths: vec![1.5, 3.0, 6.0, 12.0, 24.0],
            sampling_rate: 24_000,
            audio_channels: 1,
            normalize: false,
            chunk_length_s: None,
            overlap: None,
            hidden_size: 128,
            num_filters: 32,
            num_residual_layers: 1,
            upsampling_ratios: vec![8, 5, 4, 2],
            norm_type: "weight_norm".into(),
            kernel_size: 7,
            last_kernel_size: 7,
            residual_kernel_size: 3,
            dilation_growth_rate: 2,
            use_causal_conv: true,
            pad_mode: "reflect".into(),
            compress: 2,
            num_lstm_layers: 2,
            trim_right_ratio: 1.0,
            codebook_size: 1024,
            codebook_dim: None,
            use_conv_shortcut: true,
        }
    }
}

/// How convolutions are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormType {
    /// Weight normalisation (`weight = g · v / ‖v‖`).
    WeightNorm,
    /// GroupNorm with one group over the conv output.
    TimeGroupNorm,
}

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// Mirror without repeating the edge (`torch` `reflect`).
    Reflect,
    /// Zeros (`constant`, value 0).
    Zeros,
    /// Repeat the edge (`replicate`).
    Replicate,
}

impl EncodecConfig {
    /// `facebook/encodec_24khz`'s config (the defaults).
    pub fn encodec_24khz() -> EncodecConfig {
        EncodecConfig::default()
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<EncodecConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config { key, msg } => Error::Config {
                key,
                msg: format!("{msg} (in {})", path.display()),
            },
            other => other,
        })
    }

    /// Parses and validates the JSON text of a config.
    pub fn from_json(text: &str) -> Result<EncodecConfig> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("EnCodec config: invalid JSON: {e}")))?;
        let cfg: EncodecConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| Error::config(&e.path().to_string(), e.inner().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as `config.json` text, as HF writes it (`model_type` `encodec`, the resolved
    /// `codebook_dim`).
    pub fn to_json(&self) -> Result<String> {
        let mut cfg = self.clone();
        cfg.codebook_dim = Some(self.codebook_dim());
        let mut value = serde_json::to_value(&cfg)
            .map_err(|e| Error::Invalid(format!("EnCodec config serialisation: {e}")))?;
        if let Some(map) = value.as_object_mut() {
            map.insert("model_type".into(), "encodec".into());
            map.insert("architectures".into(), serde_json::json!(["EncodecModel"]));
        }
        serde_json::to_string_pretty(&value)
            .map_err(|e| Error::Invalid(format!("EnCodec config serialisation: {e}")))
    }

    /// Checks what the modules need; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("sampling_rate", self.sampling_rate as usize),
            ("audio_channels", self.audio_channels),
            ("hidden_size", self.hidden_size),
            ("num_filters", self.num_filters),
            ("kernel_size", self.kernel_size),
            ("last_kernel_size", self.last_kernel_size),
            ("residual_kernel_size", self.residual_kernel_size),
            ("dilation_growth_rate", self.dilation_growth_rate),
            ("compress", self.compress),
            ("num_lstm_layers", self.num_lstm_layers),
            ("codebook_size", self.codebook_size),
            ("codebook_dim", self.codebook_dim()),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(Error::config(key, "must be at least 1"));
            }
        }
        if self.num_filters < self.compress {
            return Err(Error::config(
                "compress",
                format!(
                    "{} leaves no channels of num_filters {}",
                    self.compress, self.num_filters
                ),
            ));
        }
        if self.codebook_dim() != self.hidden_size {
            return Err(Error::config(
                "codebook_dim",
                format!(
                    "{} differs from hidden_size {}; HF's quantiser has no projection",
                    self.codebook_dim(),
                    self.hidden_size
                ),
            ));
        }
        if !self.codebook_size.is_power_of_two() {
            return Err(Error::config("codebook_size", "must be a power of 2"));
        }
        if self.upsampling_ratios.is_empty() || self.upsampling_ratios.contains(&0) {
            return Err(Error::config(
                "upsampling_ratios",
                "must be a non-empty list of positive strides",
            ));
        }
        self.norm()?;
        self.pad()?;
        if !(0.0..=1.0).contains(&self.trim_right_ratio) {
            return Err(Error::config("trim_right_ratio", "must be in [0, 1]"));
        }
        if !self.use_causal_conv && self.trim_right_ratio != 1.0 {
            return Err(Error::config(
                "trim_right_ratio",
                "!= 1.0 only makes sense for causal convolutions (use_causal_conv)",
            ));
        }
        if self.target_bandwidths.is_empty()
            || self
                .target_bandwidths
                .iter()
                .any(|b| !(*b > 0.0 && b.is_finite()))
        {
            return Err(Error::config(
                "target_bandwidths",
                "must be a non-empty list of positive kbps values",
            ));
        }
        if self.num_quantizers() == 0 {
            return Err(Error::config(
                "target_bandwidths",
                format!(
                    "the largest ({} kbps) is below one codebook's {} bps",
                    self.target_bandwidths.last().copied().unwrap_or(0.0),
                    self.bits_per_quantizer()
                ),
            ));
        }
        if let Some(c) = self.chunk_length_s {
            if !(c > 0.0 && c.is_finite()) {
                return Err(Error::config("chunk_length_s", "must be positive or null"));
            }
        }
        if let Some(o) = self.overlap {
            if !(0.0..1.0).contains(&o) {
                return Err(Error::config("overlap", "must be in [0, 1) or null"));
            }
        }
        Ok(())
    }

    /// The normalisation of the convolutions.
    pub fn norm(&self) -> Result<NormType> {
        match self.norm_type.as_str() {
            "weight_norm" => Ok(NormType::WeightNorm),
            "time_group_norm" => Ok(NormType::TimeGroupNorm),
            other => Err(Error::config(
                "norm_type",
                format!("`{other}` is not supported (\"weight_norm\" or \"time_group_norm\")"),
            )),
        }
    }

    /// The padding mode of the convolutions.
    pub fn pad(&self) -> Result<PadMode> {
        match self.pad_mode.as_str() {
            "reflect" => Ok(PadMode::Reflect),
            "constant" | "zeros" => Ok(PadMode::Zeros),
            "replicate" => Ok(PadMode::Replicate),
            other => Err(Error::config(
                "pad_mode",
                format!("`{other}` is not supported (reflect, constant, replicate)"),
            )),
        }
    }

    /// Codebook vector size (`codebook_dim`, or `hidden_size` when null).
    pub fn codebook_dim(&self) -> usize {
        self.codebook_dim.unwrap_or(self.hidden_size)
    }

    /// Samples per code frame: the product of `upsampling_ratios`.
    pub fn hop_length(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    /// Code frames per second, exactly: `sampling_rate / hop_length`.
    pub fn frame_rate(&self) -> f64 {
        self.sampling_rate as f64 / self.hop_length() as f64
    }

    /// HF's `frame_rate`: `ceil(sampling_rate / hop_length)`, which the bandwidths count with.
    pub fn frame_rate_ceil(&self) -> usize {
        (self.sampling_rate as usize).div_ceil(self.hop_length())
    }

    /// Bits per code: `ceil(log2(codebook_size))`.
    pub fn codebook_nbits(&self) -> usize {
        self.codebook_size.next_power_of_two().trailing_zeros() as usize
    }

    fn bits_per_quantizer(&self) -> usize {
        self.frame_rate_ceil() * self.codebook_nbits()
    }

    /// Number of codebooks (HF's `num_quantizers`), set by the largest target bandwidth.
    pub fn num_quantizers(&self) -> usize {
        let max = self.target_bandwidths.last().copied().unwrap_or(0.0);
        let per_q = self.bits_per_quantizer() as f64;
        if per_q == 0.0 {
            return 0;
        }
        (1000.0 * max / per_q).floor() as usize
    }

    /// Codebooks used at `bandwidth` kbps, as HF's `get_num_quantizers_for_bandwidth` counts
    /// them (at least one); the bandwidth must be one of `target_bandwidths`, as HF's `encode`
    /// requires.
    pub fn num_quantizers_for_bandwidth(&self, bandwidth: f64) -> Result<usize> {
        if !self.target_bandwidths.contains(&bandwidth) {
            return Err(Error::Invalid(format!(
                "EnCodec: bandwidth {bandwidth} kbps is not one of target_bandwidths {:?}",
                self.target_bandwidths
            )));
        }
        let per_q = (self.codebook_size as f64).log2() * self.frame_rate_ceil() as f64;
        let n = ((bandwidth * 1000.0 / per_q).floor() as usize).max(1);
        Ok(n.min(self.num_quantizers()))
    }

    /// Channels after the encoder's convolutions (`num_filters · 2^len(upsampling_ratios)`).
    pub fn lstm_dim(&self) -> usize {
        self.num_filters << self.upsampling_ratios.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_24khz_config_counts_like_hf() {
        let cfg = EncodecConfig::from_json("{}").unwrap();
        assert_eq!(cfg, EncodecConfig::encodec_24khz());
        assert_eq!(cfg.hop_length(), 320);
        assert_eq!(cfg.frame_rate(), 75.0);
        assert_eq!(cfg.num_quantizers(), 32);
        assert_eq!(cfg.num_quantizers_for_bandwidth(6.0).unwrap(), 8);
        assert_eq!(cfg.num_quantizers_for_bandwidth(1.5).unwrap(), 2);
        assert!(cfg.num_quantizers_for_bandwidth(7.0).is_err());
        // The 48 kHz model: HF's ceil frame rate (150) counts its bandwidths.
        let hq = r#"{"sampling_rate": 48000, "audio_channels": 2, "normalize": true,
            "chunk_length_s": 1.0, "overlap": 0.01, "target_bandwidths": [3.0, 6.0, 12.0, 24.0],
            "architectures": ["EncodecModel"], "transformers_version": "4.31.0.dev0"}"#;
        let cfg = EncodecConfig::from_json(hq).unwrap();
        assert_eq!(cfg.frame_rate_ceil(), 150);
        assert_eq!(cfg.num_quantizers(), 16);
        let back = EncodecConfig::from_json(&cfg.to_json().unwrap()).unwrap();
        assert_eq!(back.codebook_dim, Some(128));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (r#"{"norm_type": "layer_norm"}"#, "norm_type"),
            (r#"{"pad_mode": "circular"}"#, "pad_mode"),
            (r#"{"codebook_size": 1000}"#, "codebook_size"),
            (r#"{"upsampling_ratios": []}"#, "upsampling_ratios"),
            (r#"{"hidden_size": "x"}"#, "hidden_size"),
            (
                r#"{"use_causal_conv": false, "trim_right_ratio": 0.5}"#,
                "trim_right_ratio",
            ),
            (r#"{"codebook_dim": 64}"#, "codebook_dim"),
            (r#"{"target_bandwidths": [0.1]}"#, "target_bandwidths"),
            (r#"{"num_lstm_layers": 0}"#, "num_lstm_layers"),
        ];
        for (json, key) in cases {
            let err = EncodecConfig::from_json(json).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{json}: {err}");
        }
    }
}
