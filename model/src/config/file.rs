//! `config.json` as HF transformers writes it for BitNet and for Chameleon's text model
//! (`model_type` "chameleon": `swin_norm`, q/k LayerNorm, float linears; must match
//! `ChameleonConfig` / `modeling_chameleon.py`), plus Tritter's own switches, and its validation
//! into [`Config`]: one function per section (sizes, activation, unsupported HF switches, RoPE,
//! norms, quantisation, attention mode), each error naming the key; strings are mapped to enums
//! here, once.

use super::keys::{ConfigFile, QkNormKey};
use super::{Activation, Config, NormPlacement, QkNormKind, WeightFormat};
use crate::attn::AttentionMode;
use crate::error::{Error, Result};

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
        Some(n) if n > super::MAX_SIZE => Err(super::hybrid::too_large(key, n)),
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

/// Chameleon and Granite 4 hybrids: SiLU, pre-norm, float linears, RoPE theta 10000 unless the
/// config says otherwise (transformers' defaults for those model types).
fn is_llama_like(f: &ConfigFile) -> bool {
    is_chameleon(f) || super::hybrid::is_granite(f)
}

fn activation(f: &ConfigFile) -> Result<Activation> {
    // HF's defaults: BitNetConfig relu2, ChameleonConfig silu.
    let default = if is_llama_like(f) { "silu" } else { "relu2" };
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
    let default = if is_llama_like(f) {
        10_000.0
    } else {
        500_000.0
    };
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
    let default = if super::hybrid::is_granite(f) {
        1e-6
    } else {
        1e-5
    };
    let eps = f.rms_norm_eps.unwrap_or(default);
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
        let fmt = if is_llama_like(f) {
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
        (None, _) if is_llama_like(f) => NormPlacement::Pre,
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
        let hybrid = super::hybrid::hybrid_parts(&f, d.num_layers, d.hidden_size)?;
        let intermediate_size = match hybrid.mlp_layout {
            super::MlpLayout::Fused => required(
                "shared_intermediate_size",
                Some(f.shared_intermediate_size.unwrap_or(1024)),
            )?,
            super::MlpLayout::Split => d.intermediate_size,
        };
        if hybrid.mlp_layout == super::MlpLayout::Fused && weight_format != WeightFormat::Dense {
            return Err(Error::config(
                "quantization_config",
                "Granite's fused shared_mlp is supported with float weights only",
            ));
        }
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
        let c = Config {
            vocab_size: d.vocab_size,
            hidden_size: d.hidden_size,
            intermediate_size,
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
            hybrid,
        };
        let n = c.ternary_params_exact();
        if n > super::MAX_PARAMS {
            return Err(Error::config(
                "hidden_size",
                format!("the layers would hold {n} weights, beyond any model"),
            ));
        }
        Ok(c)
    }
}
