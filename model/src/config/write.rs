//! Writing a [`Config`] back as `config.json` ([`Config::to_config_file`]): the inverse of
//! `file.rs`'s validation, so a config survives the round trip (`config::tests`).

use super::keys::{ConfigFile, QkNormKey, QuantizationConfig};
use super::{Activation, Config};

impl Config {
    /// The HF-compatible `config.json` object for this config. Tritter checkpoints are saved
    /// packed (`bitlinear` / `offline`), so HF transformers loads them as BitNet (a dense model
    /// is saved ternarised too).
    pub fn to_config_file(&self) -> ConfigFile {
        let ids = |v: &[u32]| match v {
            [] => None,
            [one] => Some(serde_json::json!(one)),
            many => Some(serde_json::json!(many)),
        };
        let mut f = ConfigFile {
            model_type: Some("bitnet".into()),
            vocab_size: Some(self.vocab_size),
            hidden_size: Some(self.hidden_size),
            intermediate_size: Some(self.intermediate_size),
            num_hidden_layers: Some(self.num_layers),
            num_attention_heads: Some(self.num_heads),
            num_key_value_heads: Some(self.num_kv_heads),
            head_dim: Some(self.head_dim),
            hidden_act: Some(match self.activation {
                Activation::Relu2 => "relu2".into(),
                Activation::Silu => "silu".into(),
            }),
            max_position_embeddings: Some(self.max_position_embeddings),
            rms_norm_eps: Some(self.rms_norm_eps),
            rope_theta: Some(self.rope_theta),
            rope_parameters: None,
            rope_scaling: None,
            tie_word_embeddings: Some(self.tie_word_embeddings),
            attention_bias: Some(false),
            mlp_bias: None,
            bos_token_id: self.bos_token_id.map(|b| serde_json::json!(b)),
            eos_token_id: ids(&self.eos_token_ids),
            pad_token_id: self.pad_token_id.map(|b| serde_json::json!(b)),
            swin_norm: None,
            qk_layernorm: None,
            quantization_config: Some(QuantizationConfig {
                quant_method: "bitnet".into(),
                linear_class: "bitlinear".into(),
                quantization_mode: "offline".into(),
                use_rms_norm: self.bitlinear_rms_norm.is_some(),
                rms_norm_eps: self.bitlinear_rms_norm,
                modules_to_not_convert: None,
            }),
            norm_placement: Some(self.norm_placement),
            qk_norm: Some(QkNormKey::of(self.qk_norm)),
            mlp_gated: Some(self.mlp_gated),
            sliding_window_size: Some(self.sliding_window_size),
            use_attention_sinks: Some(self.use_attention_sinks),
            attention_mode: Some(self.attention_mode.name().to_string()),
            ..ConfigFile::default()
        };
        super::hybrid::write_hybrid(&self.hybrid, &mut f);
        f
    }
}
