//! The VQ-VAE's configuration: HF transformers' `ChameleonVQVAEConfig` (`model_type`
//! `chameleon_vqgan`), key for key, with its defaults, read from a `config.json` that is either
//! that config itself or a full Chameleon config whose `vq_config` holds it.
//!
//! Must match `transformers/models/chameleon/configuration_chameleon.py`. Two keys HF's class does
//! not declare are read as HF's code reads them: `beta` (the quantiser's commitment weight,
//! `getattr(config, "beta", 0.25)`), and `out_channels` (the decoder's output channels; the
//! taming-transformers `out_ch`, default `in_channels`).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// GroupNorm groups of every norm in the encoder and decoder (fixed in HF's code).
pub const NORM_GROUPS: usize = 32;
/// GroupNorm epsilon (fixed in HF's code).
pub const NORM_EPS: f64 = 1e-6;

/// `ChameleonVQVAEConfig`, with HF's key names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VqVaeConfig {
    /// Codebook vector size (`quant_conv` output channels).
    pub embed_dim: usize,
    /// Codebook entries.
    pub num_embeddings: usize,
    /// Encoder output of `2 * latent_channels` (unsupported: HF's `quant_conv` takes
    /// `latent_channels`, so HF itself cannot run such a config).
    pub double_latent: bool,
    /// Encoder output / decoder input channels.
    pub latent_channels: usize,
    /// Image side the attention placement is computed from (`attn_resolutions`).
    pub resolution: usize,
    /// Image channels.
    pub in_channels: usize,
    /// Channels of the first level.
    pub base_channels: usize,
    /// Channel multiplier per level; one level per entry, a downsample between levels.
    pub channel_multiplier: Vec<usize>,
    /// Resnet blocks per encoder level (the decoder has one more per level).
    pub num_res_blocks: usize,
    /// Resolutions (image side at that level) that get attention blocks.
    pub attn_resolutions: Option<Vec<usize>>,
    /// Dropout inside resnet blocks (training only).
    pub dropout: f64,
    /// `"vanilla"` (attention blocks) or null (none, not even in the middle).
    pub attn_type: Option<String>,
    /// Commitment weight β of the quantiser loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// Decoder output channels (default `in_channels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_channels: Option<usize>,
}

impl Default for VqVaeConfig {
    fn default() -> Self {
        VqVaeConfig {
            embed_dim: 256,
            num_embeddings: 8192,
            double_latent: false,
            latent_channels: 256,
            resolution: 512,
            in_channels: 3,
            base_channels: 128,
            channel_multiplier: vec![1, 1, 2, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: None,
            dropout: 0.0,
            attn_type: Some("vanilla".into()),
            beta: None,
            out_channels: None,
        }
    }
}

impl VqVaeConfig {
    /// Reads `config.json`: a `ChameleonVQVAEConfig`, or a Chameleon config with `vq_config`.
    pub fn from_file(path: &Path) -> Result<VqVaeConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config { key, msg } => Error::Config {
                key,
                msg: format!("{msg} (in {})", path.display()),
            },
            other => other,
        })
    }

    /// Parses and validates the JSON text of a config (see [`VqVaeConfig::from_file`]).
    pub fn from_json(text: &str) -> Result<VqVaeConfig> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("VQ-VAE config: invalid JSON: {e}")))?;
        let (value, prefix) = match value.get("vq_config") {
            Some(vq) if !vq.is_null() => (vq.clone(), "vq_config."),
            _ => (value, ""),
        };
        let cfg: VqVaeConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| Error::config(&format!("{prefix}{}", e.path()), e.inner().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as `config.json` text (`model_type` `chameleon_vqgan`, as HF writes it).
    pub fn to_json(&self) -> Result<String> {
        let mut value = serde_json::to_value(self)
            .map_err(|e| Error::Invalid(format!("VQ-VAE config serialisation: {e}")))?;
        if let Some(map) = value.as_object_mut() {
            map.insert("model_type".into(), "chameleon_vqgan".into());
            map.insert(
                "architectures".into(),
                serde_json::json!(["ChameleonVQVAE"]),
            );
        }
        serde_json::to_string_pretty(&value)
            .map_err(|e| Error::Invalid(format!("VQ-VAE config serialisation: {e}")))
    }

    /// Checks what the modules need; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("embed_dim", self.embed_dim),
            ("num_embeddings", self.num_embeddings),
            ("latent_channels", self.latent_channels),
            ("resolution", self.resolution),
            ("in_channels", self.in_channels),
            ("base_channels", self.base_channels),
            ("num_res_blocks", self.num_res_blocks),
            ("out_channels", self.out_channels()),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(Error::config(key, "must be at least 1"));
            }
        }
        if self.double_latent {
            return Err(Error::config(
                "double_latent",
                "true is not supported (HF's quant_conv takes latent_channels inputs)",
            ));
        }
        if !self.base_channels.is_multiple_of(NORM_GROUPS) {
            return Err(Error::config(
                "base_channels",
                format!("{} is not a multiple of {NORM_GROUPS}", self.base_channels),
            ));
        }
        if self.channel_multiplier.is_empty() {
            return Err(Error::config("channel_multiplier", "must not be empty"));
        }
        for (i, m) in self.channel_multiplier.iter().enumerate() {
            let ch = self.base_channels * m;
            if ch == 0 || !ch.is_multiple_of(NORM_GROUPS) {
                return Err(Error::config(
                    "channel_multiplier",
                    format!(
                        "level {i}: base_channels {} x {m} = {ch} channels; GroupNorm needs a \
                         positive multiple of {NORM_GROUPS}",
                        self.base_channels
                    ),
                ));
            }
        }
        match self.attn_type.as_deref() {
            None | Some("vanilla") => {}
            Some(other) => {
                return Err(Error::config(
                    "attn_type",
                    format!("`{other}` is not supported (\"vanilla\" or null)"),
                ))
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config("dropout", "must be in [0, 1)"));
        }
        if !(self.beta() >= 0.0 && self.beta().is_finite()) {
            return Err(Error::config("beta", "must be finite and at least 0"));
        }
        Ok(())
    }

    /// Number of levels (`len(channel_multiplier)`).
    pub fn levels(&self) -> usize {
        self.channel_multiplier.len()
    }

    /// Side reduction of the encoder: `2^(levels - 1)`.
    pub fn downscale(&self) -> usize {
        1usize << (self.levels() - 1)
    }

    /// Channels of level `i`.
    pub fn level_channels(&self, i: usize) -> usize {
        self.base_channels * self.channel_multiplier[i]
    }

    /// Whether level `i` (image side `resolution / 2^i`) has attention blocks.
    pub fn level_has_attn(&self, i: usize) -> bool {
        let res = self.resolution >> i;
        self.vanilla_attn()
            && self
                .attn_resolutions
                .as_ref()
                .is_some_and(|r| r.contains(&res))
    }

    /// Whether decoder level `i` has attention blocks. The decoder counts its resolution up from
    /// the bottom (`resolution / 2^(levels − 1)`, doubled per level, as taming-transformers
    /// does), which equals the encoder's `resolution / 2^i` when `resolution` is a multiple of
    /// `2^(levels − 1)`.
    pub fn decoder_level_has_attn(&self, i: usize) -> bool {
        let top = self.levels() - 1;
        let res = (self.resolution >> top) << (top - i);
        self.vanilla_attn()
            && self
                .attn_resolutions
                .as_ref()
                .is_some_and(|r| r.contains(&res))
    }

    /// Whether attention blocks exist at all (`attn_type == "vanilla"`).
    pub fn vanilla_attn(&self) -> bool {
        self.attn_type.as_deref() == Some("vanilla")
    }

    /// Commitment weight β (HF: `getattr(config, "beta", 0.25)`).
    pub fn beta(&self) -> f64 {
        self.beta.unwrap_or(0.25)
    }

    /// Decoder output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_hf_defaults_and_vq_config_is_found() {
        let cfg = VqVaeConfig::from_json("{}").unwrap();
        assert_eq!(cfg, VqVaeConfig::default());
        assert_eq!(cfg.beta(), 0.25);
        let full = r#"{"model_type":"chameleon","hidden_size":64,
            "vq_config":{"embed_dim":8,"num_embeddings":64,"base_channels":32,
            "channel_multiplier":[1,2],"attn_resolutions":[16],"resolution":32}}"#;
        let cfg = VqVaeConfig::from_json(full).unwrap();
        assert_eq!(cfg.embed_dim, 8);
        assert_eq!(cfg.downscale(), 2);
        assert!(!cfg.level_has_attn(0) && cfg.level_has_attn(1));
        assert!(!cfg.decoder_level_has_attn(0) && cfg.decoder_level_has_attn(1));
        // Sides 30 → 15 → 7 in the encoder; the decoder counts 7 → 14 → 28 (taming's rule).
        let odd = VqVaeConfig {
            resolution: 30,
            channel_multiplier: vec![1, 1, 1],
            attn_resolutions: Some(vec![14]),
            ..cfg.clone()
        };
        assert!((0..3).all(|i| !odd.level_has_attn(i)));
        assert!(odd.decoder_level_has_attn(1) && !odd.decoder_level_has_attn(0));
        let back = VqVaeConfig::from_json(&cfg.to_json().unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (r#"{"base_channels": 48}"#, "base_channels"),
            (r#"{"channel_multiplier": []}"#, "channel_multiplier"),
            (r#"{"double_latent": true}"#, "double_latent"),
            (r#"{"attn_type": "linear"}"#, "attn_type"),
            (
                r#"{"vq_config": {"embed_dim": "x"}}"#,
                "vq_config.embed_dim",
            ),
            (r#"{"num_embeddings": 0}"#, "num_embeddings"),
        ];
        for (json, key) in cases {
            let err = VqVaeConfig::from_json(json).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{json}: {err}");
        }
    }
}
