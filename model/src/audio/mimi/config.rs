//! Mimi's configuration: HF transformers' `MimiConfig` (`model_type` `mimi`), key for key, with
//! its defaults, read from the `config.json` that `MimiModel.save_pretrained` writes (or the
//! original `kyutai/mimi` one).
//!
//! Must match `transformers/models/mimi/configuration_mimi.py` (5.24): the derived values
//! (`frame_rate`, `encodec_frame_rate`, `latent_stride`, `frame_size`, `head_dim`, the RoPE base)
//! are computed as HF computes them. Unknown keys are ignored; a value of the wrong type, or one
//! that HF accepts but this implementation (candle-transformers' Mimi modules) cannot run, is an
//! [`Error::Config`] naming the key.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// `MimiConfig`, with HF's key names and defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct MimiConfig {
    /// Audio sampling rate in Hz.
    pub sampling_rate: u32,
    /// Audio channels (1 mono, 2 stereo).
    pub audio_channels: usize,
    /// Latent / transformer width.
    pub hidden_size: usize,
    /// Channels of the first SEANet convolution.
    pub num_filters: usize,
    /// Residual blocks per SEANet stage.
    pub num_residual_layers: usize,
    /// Decoder upsampling ratios (the encoder uses them reversed); HF's default when null.
    pub upsampling_ratios: Option<Vec<usize>>,
    /// Kernel of the first SEANet convolution.
    pub kernel_size: usize,
    /// Kernel of the last SEANet convolution.
    pub last_kernel_size: usize,
    /// Kernel of the first convolution of each residual block.
    pub residual_kernel_size: usize,
    /// Dilation growth between residual blocks of a stage.
    pub dilation_growth_rate: usize,
    /// Causal (left) padding in every convolution.
    pub use_causal_conv: bool,
    /// Padding mode of the convolutions (`constant` or `replicate` here).
    pub pad_mode: String,
    /// Channel reduction inside residual blocks.
    pub compress: usize,
    /// Share of a transposed convolution's trim taken on the right (1.0 here).
    pub trim_right_ratio: f64,
    /// Entries per codebook.
    pub codebook_size: usize,
    /// Codebook vector size (HF: `hidden_size` when null).
    pub codebook_dim: Option<usize>,
    /// Codebooks in all (semantic + acoustic).
    pub num_quantizers: usize,
    /// A 1x1 convolution instead of the identity as the residual-block skip.
    pub use_conv_shortcut: bool,
    /// Width of the quantisers' space (`input_proj` / `output_proj`).
    pub vector_quantization_hidden_dimension: usize,
    /// Codebooks of the semantic quantiser (they come first in the codes).
    pub num_semantic_quantizers: usize,
    /// Groups of the latent upsampling transposed convolution.
    pub upsample_groups: usize,
    /// Layers of each transformer.
    pub num_hidden_layers: usize,
    /// MLP width of the transformers.
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Key/value heads (equal to `num_attention_heads` here).
    pub num_key_value_heads: usize,
    /// Head size (HF: `hidden_size / num_attention_heads` when null).
    pub head_dim: Option<usize>,
    /// MLP activation (`gelu` here).
    pub hidden_act: String,
    /// Positions the RoPE tables cover: the longest transformer input, in encoder steps.
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon (1e-5 here).
    pub norm_eps: f64,
    /// `{"rope_type": "default", "rope_theta": ...}` (transformers 5).
    pub rope_parameters: Option<serde_json::Value>,
    /// RoPE base in configs written before `rope_parameters`.
    pub rope_theta: Option<f64>,
    /// Keys each query attends to, itself included.
    pub sliding_window: usize,
    /// Initial layer scale (the checkpoint's `scale` tensors are what is used).
    pub layer_scale_initial_scale: f64,
    /// Biases in the attention projections.
    pub attention_bias: bool,
    /// Explicit frame rate (original configs).
    pub frame_rate: Option<f64>,
    /// Explicit frame rate as transformers 5 writes it.
    #[serde(rename = "_frame_rate")]
    pub frame_rate_v5: Option<f64>,
}

impl Default for MimiConfig {
    fn default() -> Self {
        MimiConfig {
            sampling_rate: 24_000,
            audio_channels: 1,
            hidden_size: 512,
            num_filters: 64,
            num_residual_layers: 1,
            upsampling_ratios: None,
            kernel_size: 7,
            last_kernel_size: 3,
            residual_kernel_size: 3,
            dilation_growth_rate: 2,
            use_causal_conv: true,
            pad_mode: "constant".into(),
            compress: 2,
            trim_right_ratio: 1.0,
            codebook_size: 2048,
            codebook_dim: Some(256),
            num_quantizers: 32,
            use_conv_shortcut: false,
            vector_quantization_hidden_dimension: 256,
            num_semantic_quantizers: 1,
            upsample_groups: 512,
            num_hidden_layers: 8,
            intermediate_size: 2048,
            num_attention_heads: 8,
            num_key_value_heads: 8,
            head_dim: None,
            hidden_act: "gelu".into(),
            max_position_embeddings: 8000,
            norm_eps: 1e-5,
            rope_parameters: None,
            rope_theta: None,
            sliding_window: 250,
            layer_scale_initial_scale: 0.01,
            attention_bias: false,
            frame_rate: None,
            frame_rate_v5: None,
        }
    }
}

/// HF's default `upsampling_ratios`.
const DEFAULT_RATIOS: [usize; 4] = [8, 6, 5, 4];

impl MimiConfig {
    /// Reads `config.json`; errors name the key (and the file).
    pub fn from_file(path: &Path) -> Result<MimiConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config { key, msg } => Error::Config {
                key,
                msg: format!("{msg} (in {})", path.display()),
            },
            other => other,
        })
    }

    /// Parses and validates the JSON text of a config (see [`MimiConfig::from_file`]).
    pub fn from_json(text: &str) -> Result<MimiConfig> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("Mimi config: invalid JSON: {e}")))?;
        for half in ["encoder_config", "decoder_config"] {
            if value.get(half).is_some_and(|v| v.is_null()) {
                return Err(Error::config(
                    half,
                    "null (a model without its encoder or decoder) is not supported",
                ));
            }
        }
        let cfg: MimiConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| Error::config(&e.path().to_string(), e.inner().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what the modules need; the error names the key.
    pub fn validate(&self) -> Result<()> {
        self.validate_sizes()?;
        self.validate_supported()?;
        let ratios = self.ratios();
        if ratios.is_empty() || ratios.contains(&0) {
            return Err(Error::config(
                "upsampling_ratios",
                "must be a non-empty list of positive integers",
            ));
        }
        let fr = self.frame_rate();
        if !(fr.is_finite() && fr > 0.0) {
            return Err(Error::config("frame_rate", format!("{fr} is not positive")));
        }
        if fr == self.encodec_frame_rate() as f64 {
            return Err(Error::config(
                "frame_rate",
                "equal to the SEANet rate (a model without latent down/upsampling) is not supported",
            ));
        }
        if self.latent_stride() == 0 {
            return Err(Error::config(
                "frame_rate",
                format!(
                    "{fr} Hz is above the SEANet rate {} Hz",
                    self.encodec_frame_rate()
                ),
            ));
        }
        let theta = self.rope_theta_value()?;
        if !(theta >= 1.0 && theta.fract() == 0.0 && theta <= u32::MAX as f64) {
            return Err(Error::config(
                "rope_parameters.rope_theta",
                format!("{theta}: only a positive whole number is supported"),
            ));
        }
        Ok(())
    }

    fn validate_sizes(&self) -> Result<()> {
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
            ("codebook_size", self.codebook_size),
            ("codebook_dim", self.codebook_dim()),
            ("num_quantizers", self.num_quantizers),
            (
                "vector_quantization_hidden_dimension",
                self.vector_quantization_hidden_dimension,
            ),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
            ("upsample_groups", self.upsample_groups),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(Error::config(key, "must be at least 1"));
            }
        }
        if self.num_semantic_quantizers >= self.num_quantizers {
            return Err(Error::config(
                "num_semantic_quantizers",
                format!("must be below num_quantizers ({})", self.num_quantizers),
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(
                "num_attention_heads",
                format!("does not divide hidden_size {}", self.hidden_size),
            ));
        }
        if self.sliding_window < 2 {
            return Err(Error::config("sliding_window", "must be at least 2"));
        }
        Ok(())
    }

    /// What HF allows but candle-transformers' Mimi modules hard-code otherwise.
    fn validate_supported(&self) -> Result<()> {
        let unsupported = |key: &str, what: String| -> Result<()> {
            Err(Error::config(key, format!("{what} is not supported")))
        };
        if self.num_semantic_quantizers != 1 {
            return unsupported(
                "num_semantic_quantizers",
                format!("{} (only 1)", self.num_semantic_quantizers),
            );
        }
        if self.num_key_value_heads != self.num_attention_heads {
            return unsupported(
                "num_key_value_heads",
                "a value other than num_attention_heads".into(),
            );
        }
        if self.head_dim() * self.num_attention_heads != self.hidden_size {
            return unsupported(
                "head_dim",
                "a value other than hidden_size / num_attention_heads".into(),
            );
        }
        if self.hidden_act != "gelu" {
            return unsupported("hidden_act", format!("`{}` (only gelu)", self.hidden_act));
        }
        if self.norm_eps != 1e-5 {
            return unsupported("norm_eps", format!("{} (only 1e-5)", self.norm_eps));
        }
        if !matches!(self.pad_mode.as_str(), "constant" | "replicate") {
            return unsupported(
                "pad_mode",
                format!("`{}` (constant or replicate)", self.pad_mode),
            );
        }
        if self.trim_right_ratio != 1.0 {
            return unsupported("trim_right_ratio", format!("{}", self.trim_right_ratio));
        }
        if self.upsample_groups != self.hidden_size {
            return unsupported(
                "upsample_groups",
                "a value other than hidden_size (depthwise)".into(),
            );
        }
        if self.vector_quantization_hidden_dimension == self.hidden_size {
            return unsupported(
                "vector_quantization_hidden_dimension",
                "equal to hidden_size (no input_proj / output_proj)".into(),
            );
        }
        if self.codebook_dim() != self.vector_quantization_hidden_dimension {
            return unsupported(
                "codebook_dim",
                "a value other than vector_quantization_hidden_dimension".into(),
            );
        }
        if !self.hidden_size.is_multiple_of(self.compress) {
            return unsupported("compress", "a value not dividing the channels".into());
        }
        Ok(())
    }

    /// Decoder upsampling ratios (`upsampling_ratios`, HF's `[8, 6, 5, 4]` when null).
    pub fn ratios(&self) -> Vec<usize> {
        match &self.upsampling_ratios {
            Some(r) if !r.is_empty() => r.clone(),
            _ => DEFAULT_RATIOS.to_vec(),
        }
    }

    /// Samples per SEANet step: the product of the ratios.
    pub fn hop_length(&self) -> usize {
        self.ratios().iter().product()
    }

    /// HF's `encodec_frame_rate`: `ceil(sampling_rate / hop_length)`.
    pub fn encodec_frame_rate(&self) -> usize {
        (self.sampling_rate as usize).div_ceil(self.hop_length())
    }

    /// HF's `frame_size`: the product of every encoder stride, the latent downsample's 2 included.
    pub fn frame_size(&self) -> usize {
        self.hop_length() * 2
    }

    /// HF's `frame_rate`: the explicit value, else `sampling_rate / frame_size`.
    pub fn frame_rate(&self) -> f64 {
        self.frame_rate_v5
            .or(self.frame_rate)
            .unwrap_or(self.sampling_rate as f64 / self.frame_size() as f64)
    }

    /// HF's `latent_stride`: `int(encodec_frame_rate / frame_rate)`.
    pub fn latent_stride(&self) -> usize {
        (self.encodec_frame_rate() as f64 / self.frame_rate()) as usize
    }

    /// Codebook vector size (`hidden_size` when null, as HF's `__post_init__`).
    pub fn codebook_dim(&self) -> usize {
        self.codebook_dim.unwrap_or(self.hidden_size)
    }

    /// Attention head size.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The RoPE base: `rope_parameters.rope_theta`, else `rope_theta`, else 10000.
    pub fn rope_theta_value(&self) -> Result<f64> {
        if let Some(p) = &self.rope_parameters {
            if let Some(kind) = p.get("rope_type") {
                if kind.as_str() != Some("default") {
                    return Err(Error::config(
                        "rope_parameters.rope_type",
                        format!("{kind} is not supported (only \"default\")"),
                    ));
                }
            }
            if let Some(theta) = p.get("rope_theta") {
                return theta.as_f64().ok_or_else(|| {
                    Error::config("rope_parameters.rope_theta", "must be a number")
                });
            }
        }
        Ok(self.rope_theta.unwrap_or(10_000.0))
    }
}
