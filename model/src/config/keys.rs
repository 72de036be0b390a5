//! The keys of `config.json` ([`ConfigFile`] and its nested objects) as serde reads and writes
//! them: HF BitNet's, Chameleon's, Granite 4 hybrids', Qwen3-Next's Gated DeltaNet names, and
//! Tritter's own switches. Their meaning and validation are in `file.rs` and `hybrid.rs`.

use super::{NormPlacement, QkNormKind};
use serde::{Deserialize, Serialize};

/// The `quantization_config` object of an HF BitNet config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuantizationConfig {
    pub quant_method: String,
    #[serde(default = "default_linear_class")]
    pub linear_class: String,
    #[serde(default = "default_quant_mode")]
    pub quantization_mode: String,
    #[serde(default)]
    pub use_rms_norm: bool,
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_to_not_convert: Option<Vec<String>>,
}

fn default_linear_class() -> String {
    "bitlinear".into()
}
fn default_quant_mode() -> String {
    "offline".into()
}

/// The `rope_parameters` object newer transformers versions write instead of `rope_theta`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_type: Option<String>,
}

/// The `qk_norm` key: `true` / `false` (the RMS kind, as older configs write it) or a kind
/// (`"rms"`, `"layernorm"`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum QkNormKey {
    Switch(bool),
    Kind(QkNormKind),
}

impl QkNormKey {
    pub(super) fn kind(self) -> Option<QkNormKind> {
        match self {
            QkNormKey::Switch(on) => on.then_some(QkNormKind::Rms),
            QkNormKey::Kind(k) => Some(k),
        }
    }

    pub(super) fn of(kind: Option<QkNormKind>) -> Self {
        match kind {
            None => QkNormKey::Switch(false),
            Some(QkNormKind::Rms) => QkNormKey::Switch(true),
            Some(k) => QkNormKey::Kind(k),
        }
    }
}

/// `config.json` as written by HF transformers for BitNet or Chameleon (plus Tritter's own
/// switches).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigFile {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub pad_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub quantization_config: Option<QuantizationConfig>,
    /// Chameleon: post-norm "swin" placement (`norm_placement` swin_norm) when true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swin_norm: Option<bool>,
    /// Chameleon-style q/k LayerNorm (`qk_norm` "layernorm") when true. HF's Chameleon has no
    /// such switch and always applies it, so a chameleon config without the key gets it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qk_layernorm: Option<bool>,
    // ---- Tritter's own switches (absent from HF configs; defaults give HF BitNet) ----
    /// "subln" (default), "pre", "swin_norm".
    #[serde(default)]
    pub norm_placement: Option<NormPlacement>,
    /// QK-Norm on queries and keys (`q_norm`, `k_norm`): `true` or "rms" (RMSNorm over head_dim,
    /// one weight for all heads), "layernorm" (Chameleon's per-head LayerNorm), `false`.
    #[serde(default)]
    pub qk_norm: Option<QkNormKey>,
    /// Gated MLP (`act(gate(x)) * up(x)`); false gives `down(act(up(x)))`.
    #[serde(default)]
    pub mlp_gated: Option<bool>,
    /// Sliding attention window (tokens); 0 or absent = full attention.
    #[serde(default)]
    pub sliding_window_size: Option<usize>,
    /// StreamingLLM attention sinks.
    #[serde(default)]
    pub use_attention_sinks: Option<bool>,
    /// "causal" (default), "bidirectional", "prefix_lm", "embedding".
    #[serde(default)]
    pub attention_mode: Option<String>,
    // ---- hybrid layers and Granite 4's switches (`hybrid.rs`) ----
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_block_type: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mamba_n_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mamba_n_groups: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mamba_d_state: Option<usize>,
    /// A size or "auto" (`mamba_expand · hidden_size / mamba_n_heads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mamba_d_head: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mamba_d_conv: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mamba_expand: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mamba_chunk_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mamba_conv_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mamba_proj_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_num_key_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_num_value_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_key_head_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_value_head_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_conv_kernel_dim: Option<usize>,
    /// Tritter's own: the Gated DeltaNet chunk length (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_chunk_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logits_scaling: Option<f64>,
    /// "rope" or none (Granite's default: no positions in attention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_embedding_type: Option<String>,
    /// Granite's fused MLP width (the MLP's `intermediate_size` then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_intermediate_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_local_experts: Option<usize>,
    /// Tritter's recurrent-depth block: layers `[start, end)` iterated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrent_block: Option<Vec<usize>>,
    /// Iterations of the block at inference (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrent_iterations: Option<usize>,
    /// The most iterations a training step samples (uniform from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrent_train_max: Option<usize>,
    /// Mamba-2's clamp of `dt`; only transformers' default `[0, ∞)` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_step_limit: Option<serde_json::Value>,
}
