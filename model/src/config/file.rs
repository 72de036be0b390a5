//! `config.json` as HF transformers writes it for BitNet and for Chameleon's text model
//! (`model_type` "chameleon": `swin_norm`, q/k LayerNorm, float linears; must match
//! `ChameleonConfig` / `modeling_chameleon.py`), plus Tritter's own switches, and its validation
//! into [`Config`]: one function per section (sizes, activation, unsupported HF switches, RoPE,
//! norms, quantisation, attention mode), each error naming the key; strings are mapped to enums
//! here, once.

use super::{Activation, Config, NormPlacement, QkNormKind, WeightFormat};
use crate::attn::AttentionMode;
use crate::error::{Error, Result};
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
    fn kind(self) -> Option<QkNormKind> {
        match self {
            QkNormKey::Switch(on) => on.then_some(QkNormKind::Rms),
            QkNormKey::Kind(k) => Some(k),
        }
    }

    fn of(kind: Option<QkNormKind>) -> Self {
        match kind {
            None => QkNormKey::Switch(false),
            Some(QkNormKind::Rms) => QkNormKey::Switch(true),
            Some(k) => QkNormKey::Kind(k),
        }
    }
}

/// `config.json` as written by HF transformers for BitNet or Chameleon (plus Tritter's own
/// switches).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
}

fn ids_of(key: &str, v: &Option<serde_json::Value>) -> Result<Vec<u32>> {
    let Some(v) = v else { return Ok(vec![]) };
    let one = |x: &serde_json::Value| -> Result<u32> {
        x.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::config(key, format!("expected a token id, got {x}")))
    };
    match v {
        serde_json::Value::Null => Ok(vec![]),
        serde_json::Value::Array(a) => a.iter().map(one).collect(),
        x => Ok(vec![one(x)?]),
    }
}

fn required(key: &str, v: Option<usize>) -> Result<usize> {
    match v {
        Some(0) => Err(Error::config(key, "must be greater than 0")),
        Some(n) => Ok(n),
        None => Err(Error::config(
            key,
            "missing (a positive integer is required)",
        )),
    }
}

/// The sizes of a config (`vocab_size` ... `head_dim`), checked against each other.
struct Dims {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_layers: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

fn dims(f: &ConfigFile) -> Result<Dims> {
    let vocab_size = required("vocab_size", f.vocab_size)?;
    let hidden_size = required("hidden_size", f.hidden_size)?;
    let intermediate_size = required("intermediate_size", f.intermediate_size)?;
    let num_layers = required("num_hidden_layers", f.num_hidden_layers)?;
    let num_heads = required("num_attention_heads", f.num_attention_heads)?;
    let num_kv_heads = required(
        "num_key_value_heads",
        Some(f.num_key_value_heads.unwrap_or(num_heads)),
    )?;
    if num_heads % num_kv_heads != 0 {
        return Err(Error::config(
            "num_key_value_heads",
            format!("{num_kv_heads} does not divide num_attention_heads {num_heads}"),
        ));
    }
    let head_dim = match f.head_dim {
        Some(d) => required("head_dim", Some(d))?,
        None => {
            if hidden_size % num_heads != 0 {
                return Err(Error::config(
                    "hidden_size",
                    format!("{hidden_size} is not divisible by num_attention_heads {num_heads}"),
                ));
            }
            hidden_size / num_heads
        }
    };
    if head_dim % 2 != 0 {
        return Err(Error::config(
            "head_dim",
            format!("{head_dim} must be even for RoPE"),
        ));
    }
    Ok(Dims {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
    })
}

fn is_chameleon(f: &ConfigFile) -> bool {
    f.model_type.as_deref() == Some("chameleon")
}

fn activation(f: &ConfigFile) -> Result<Activation> {
    // HF's defaults: BitNetConfig relu2, ChameleonConfig silu.
    let default = if is_chameleon(f) { "silu" } else { "relu2" };
    match f.hidden_act.as_deref().unwrap_or(default) {
        "relu2" | "relu_squared" | "squared_relu" => Ok(Activation::Relu2),
        "silu" | "swish" => Ok(Activation::Silu),
        other => Err(Error::config(
            "hidden_act",
            format!("unsupported activation `{other}` (expected relu2 or silu)"),
        )),
    }
}

/// HF switches Tritter does not implement: biases and RoPE scaling.
fn check_unsupported(f: &ConfigFile) -> Result<()> {
    if f.attention_bias == Some(true) {
        return Err(Error::config("attention_bias", "true is not supported"));
    }
    if f.mlp_bias == Some(true) {
        return Err(Error::config("mlp_bias", "true is not supported"));
    }
    if let Some(s) = &f.rope_scaling {
        if !s.is_null() {
            return Err(Error::config(
                "rope_scaling",
                "RoPE scaling is not supported",
            ));
        }
    }
    Ok(())
}

/// `rope_parameters.rope_theta` (newer transformers), else `rope_theta`, else HF's default
/// (BitNet 500000, Chameleon 10000).
fn rope_theta(f: &ConfigFile) -> Result<f64> {
    let default = if is_chameleon(f) { 10_000.0 } else { 500_000.0 };
    let rope_theta = match (&f.rope_parameters, f.rope_theta) {
        (Some(p), _) if p.rope_theta.is_some() => {
            if let Some(t) = p.rope_type.as_deref() {
                if t != "default" {
                    return Err(Error::config(
                        "rope_parameters.rope_type",
                        format!("`{t}` is not supported (only default)"),
                    ));
                }
            }
            p.rope_theta.unwrap_or(default)
        }
        (_, Some(t)) => t,
        _ => default,
    };
    if !(rope_theta.is_finite() && rope_theta > 0.0) {
        return Err(Error::config("rope_theta", "must be a positive number"));
    }
    Ok(rope_theta)
}

fn rms_norm_eps(f: &ConfigFile) -> Result<f64> {
    let eps = f.rms_norm_eps.unwrap_or(1e-5);
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::config(
            "rms_norm_eps",
            "must be a non-negative number",
        ));
    }
    Ok(eps)
}

/// The weight layout `quantization_config` names, and the BitLinear input norm's eps
/// (`use_rms_norm`). Without one, a Chameleon config has float linears and a BitNet one latent
/// weights quantised on the fly.
fn quantization(f: &ConfigFile) -> Result<(WeightFormat, Option<f64>)> {
    let Some(q) = &f.quantization_config else {
        let fmt = if is_chameleon(f) {
            WeightFormat::Dense
        } else {
            WeightFormat::Online
        };
        return Ok((fmt, None));
    };
    if q.quant_method != "bitnet" {
        return Err(Error::config(
            "quantization_config.quant_method",
            format!("`{}` is not supported (expected bitnet)", q.quant_method),
        ));
    }
    let fmt = match (q.linear_class.as_str(), q.quantization_mode.as_str()) {
        ("bitlinear", "offline") => WeightFormat::PackedBitLinear,
        ("autobitlinear", "offline") => WeightFormat::PackedAutoBitLinear,
        ("autobitlinear", "online") => WeightFormat::Online,
        (c, m) => {
            return Err(Error::config(
                "quantization_config",
                format!("linear_class `{c}` with quantization_mode `{m}` is not supported"),
            ))
        }
    };
    let norm = q.use_rms_norm.then(|| q.rms_norm_eps.unwrap_or(1e-6));
    Ok((fmt, norm))
}

/// Where the block norms sit (`norm_placement`, or Chameleon's `swin_norm`; default SubLN,
/// Chameleon pre-norm) and the QK-Norm (`qk_norm`, or `qk_layernorm`; default none, Chameleon
/// its LayerNorm, which HF's `ChameleonAttention` always applies). Contradicting keys are errors.
fn norms(f: &ConfigFile) -> Result<(NormPlacement, Option<QkNormKind>)> {
    let chameleon = is_chameleon(f);
    let placement = match (f.norm_placement, f.swin_norm) {
        (Some(p), Some(swin)) if (p == NormPlacement::SwinNorm) != swin => {
            return Err(Error::config(
                "swin_norm",
                format!("{swin} contradicts norm_placement {p:?}"),
            ))
        }
        (Some(p), _) => p,
        (None, Some(true)) => NormPlacement::SwinNorm,
        (None, _) if chameleon => NormPlacement::Pre,
        (None, _) => NormPlacement::Subln,
    };
    let layernorm = f.qk_layernorm.map(|on| on.then_some(QkNormKind::Layernorm));
    let qk = match (f.qk_norm.map(QkNormKey::kind), layernorm) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::config(
                "qk_layernorm",
                format!("contradicts qk_norm {a:?}"),
            ))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) if chameleon => Some(QkNormKind::Layernorm),
        (None, None) => None,
    };
    if chameleon
        && f.head_dim
            .is_some_and(|d| Some(d * f.num_attention_heads.unwrap_or(0)) != f.hidden_size)
    {
        return Err(Error::config(
            "head_dim",
            "Chameleon's attention uses hidden_size / num_attention_heads; a different head_dim is not supported",
        ));
    }
    Ok((placement, qk))
}

/// `attention_mode` (default `causal`).
fn attention_mode(f: &ConfigFile) -> Result<AttentionMode> {
    match f.attention_mode.as_deref() {
        None => Ok(AttentionMode::Causal),
        Some(s) => AttentionMode::parse(s).ok_or_else(|| {
            Error::config(
                "attention_mode",
                format!("`{s}` (expected causal, bidirectional, prefix_lm or embedding)"),
            )
        }),
    }
}

impl TryFrom<ConfigFile> for Config {
    type Error = Error;

    fn try_from(f: ConfigFile) -> Result<Self> {
        let d = dims(&f)?;
        let activation = activation(&f)?;
        check_unsupported(&f)?;
        let rope_theta = rope_theta(&f)?;
        let rms_norm_eps = rms_norm_eps(&f)?;
        let (weight_format, bitlinear_rms_norm) = quantization(&f)?;
        let (norm_placement, qk_norm) = norms(&f)?;
        let bos = ids_of("bos_token_id", &f.bos_token_id)?;
        let pad = ids_of("pad_token_id", &f.pad_token_id)?;
        let attention_mode = attention_mode(&f)?;
        let window = f.sliding_window_size.unwrap_or(0);
        if f.use_attention_sinks == Some(true) && window <= super::ATTENTION_SINKS {
            return Err(Error::config(
                "use_attention_sinks",
                format!(
                    "needs sliding_window_size above {} (the sink tokens are kept inside the \
                     rolling window); it is {window}",
                    super::ATTENTION_SINKS
                ),
            ));
        }
        Ok(Config {
            vocab_size: d.vocab_size,
            hidden_size: d.hidden_size,
            intermediate_size: d.intermediate_size,
            num_layers: d.num_layers,
            num_heads: d.num_heads,
            num_kv_heads: d.num_kv_heads,
            head_dim: d.head_dim,
            activation,
            mlp_gated: f.mlp_gated.unwrap_or(true),
            max_position_embeddings: f.max_position_embeddings.unwrap_or(if is_chameleon(&f) {
                4096
            } else {
                2048
            }),
            rms_norm_eps,
            rope_theta,
            // HF's BitNetConfig defaults to untied.
            tie_word_embeddings: f.tie_word_embeddings.unwrap_or(false),
            norm_placement,
            qk_norm,
            weight_format,
            bitlinear_rms_norm,
            bos_token_id: bos.first().copied(),
            eos_token_ids: ids_of("eos_token_id", &f.eos_token_id)?,
            pad_token_id: pad.first().copied(),
            sliding_window_size: window,
            use_attention_sinks: f.use_attention_sinks.unwrap_or(false),
            attention_mode,
        })
    }
}

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
        ConfigFile {
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
        }
    }
}
