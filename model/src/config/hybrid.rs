//! The hybrid part of a config (issue #23): which token mixer each layer has (attention, Mamba-2,
//! Gated DeltaNet), the recurrent layers' shapes, and the switches of IBM's Granite 4 hybrid
//! (`model_type` "granitemoehybrid", dense: no experts): embedding / residual / attention
//! multipliers, logits divided by `logits_scaling`, optional RoPE, the fused `shared_mlp`.
//!
//! Key names are transformers' `GraniteMoeHybridConfig` (`layer_types` or `layers_block_type`,
//! `mamba_*`, `*_multiplier`, `logits_scaling`, `position_embedding_type`,
//! `shared_intermediate_size`, `num_local_experts`) and Qwen3-Next's for Gated DeltaNet
//! (`linear_num_key_heads`, `linear_num_value_heads`, `linear_key_head_dim`,
//! `linear_value_head_dim`, `linear_conv_kernel_dim`), with their defaults. Must match:
//! `GraniteMoeHybridForCausalLM` on random tiny dense configs (`model/tests/golden_hybrid.rs`).

use super::keys::ConfigFile;
use crate::error::{Error, Result};

/// The token mixer of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Softmax attention with a KV cache (`self_attn`).
    Attention,
    /// A Mamba-2 mixer (`mamba`), O(1) state.
    Mamba2,
    /// A Gated DeltaNet mixer (`linear_attn`), O(1) state.
    GatedDeltaNet,
}

impl LayerKind {
    /// The name `layer_types` uses for it.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Attention => "attention",
            LayerKind::Mamba2 => "mamba2",
            LayerKind::GatedDeltaNet => "gated_deltanet",
        }
    }
}

/// The shape of every Mamba-2 layer of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MambaShape {
    pub num_heads: usize,
    pub head_dim: usize,
    pub state_size: usize,
    pub n_groups: usize,
    pub conv_kernel: usize,
    pub conv_bias: bool,
    pub chunk_size: usize,
}

/// The shape of every Gated DeltaNet layer of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GdnShape {
    pub num_heads: usize,
    pub head_k_dim: usize,
    pub head_v_dim: usize,
    pub conv_kernel: usize,
    pub chunk_size: usize,
}

/// Granite's scalar multipliers; all 1 (and the attention scale `1/√d`) elsewhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    /// Token embeddings are multiplied by it.
    pub embedding: f64,
    /// Each mixer's and MLP's output is multiplied by it before the residual add.
    pub residual: f64,
    /// The attention scores' scale; `None` is `1/√head_dim`.
    pub attention: Option<f64>,
    /// Logits are divided by it.
    pub logits_divisor: f64,
}

impl Default for Scales {
    fn default() -> Self {
        Scales {
            embedding: 1.0,
            residual: 1.0,
            attention: None,
            logits_divisor: 1.0,
        }
    }
}

impl Scales {
    pub fn is_default(&self) -> bool {
        *self == Scales::default()
    }
}

/// A recurrent-depth block (after Geiping et al. 2025, "Scaling up Test-Time Compute with Latent
/// Reasoning: A Recurrent Depth Approach", without their input injection): layers
/// `start..end` run `iterations` times in a row with shared weights, between a prelude
/// (`0..start`) and a coda (`end..`). Training samples the count uniformly from
/// `1..=train_max` each step; inference uses `iterations` unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentDepth {
    pub start: usize,
    pub end: usize,
    pub iterations: usize,
    pub train_max: usize,
}

/// How the MLP's weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpLayout {
    /// `mlp.gate_proj`, `mlp.up_proj`, `mlp.down_proj` (Llama, BitNet).
    Split,
    /// Granite's `shared_mlp.input_linear` `[2·I, C]` (gate rows, then up rows) and
    /// `shared_mlp.output_linear` `[C, I]`; dense weights only.
    Fused,
}

/// The hybrid part of a validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct HybridParts {
    /// Each layer's mixer; empty (the canonical form, so a config stays equal to itself when
    /// `num_layers` changes) when every layer is attention. `Config::layer_kind` reads it.
    pub layer_types: Vec<LayerKind>,
    pub mamba: Option<MambaShape>,
    pub gdn: Option<GdnShape>,
    pub scales: Scales,
    pub use_rope: bool,
    pub mlp_layout: MlpLayout,
    /// A block of layers iterated a variable number of times (`recurrent_block`).
    pub depth: Option<RecurrentDepth>,
}

pub(super) fn is_granite(f: &ConfigFile) -> bool {
    f.model_type.as_deref() == Some("granitemoehybrid")
}

/// A size past [`super::MAX_SIZE`]: no model has it, and the arithmetic on it would overflow.
pub(super) fn too_large(key: &str, n: usize) -> Error {
    Error::config(
        key,
        format!("{n} is beyond any model (at most {})", super::MAX_SIZE),
    )
}

fn positive(key: &str, v: Option<usize>, default: usize) -> Result<usize> {
    match v.unwrap_or(default) {
        0 => Err(Error::config(key, "must be greater than 0")),
        n if n > super::MAX_SIZE => Err(too_large(key, n)),
        n => Ok(n),
    }
}

fn finite(key: &str, v: Option<f64>) -> Result<f64> {
    let x = v.unwrap_or(1.0);
    if x.is_finite() && x != 0.0 {
        Ok(x)
    } else {
        Err(Error::config(key, "must be a finite, non-zero number"))
    }
}

/// `layer_types` (or Granite's `layers_block_type`): one entry per layer. Granite writes
/// `linear_attention` for its Mamba-2 layers and `full_attention` / `attention` for attention;
/// Tritter's names are `attention`, `mamba2`, `gated_deltanet`. Default: all attention (Granite:
/// all Mamba-2, transformers' default).
fn layer_types(f: &ConfigFile, layers: usize) -> Result<Vec<LayerKind>> {
    let granite = is_granite(f);
    let key = if f.layer_types.is_some() {
        "layer_types"
    } else {
        "layers_block_type"
    };
    let Some(list) = f.layer_types.as_ref().or(f.layers_block_type.as_ref()) else {
        let kind = if granite {
            LayerKind::Mamba2
        } else {
            LayerKind::Attention
        };
        return Ok(vec![kind; layers]);
    };
    if list.len() != layers {
        return Err(Error::config(
            key,
            format!("has {} entries for num_hidden_layers {layers}", list.len()),
        ));
    }
    list.iter()
        .map(|s| match s.as_str() {
            "attention" | "full_attention" => Ok(LayerKind::Attention),
            "mamba2" | "mamba" => Ok(LayerKind::Mamba2),
            "linear_attention" if granite => Ok(LayerKind::Mamba2),
            "gated_deltanet" => Ok(LayerKind::GatedDeltaNet),
            other => Err(Error::config(
                key,
                format!("unknown layer kind `{other}` (attention, mamba2 or gated_deltanet)"),
            )),
        })
        .collect()
}

/// `time_step_limit`: absent, null, or `[0, ∞)` (transformers writes ∞ as an object,
/// `{"__float__": "Infinity"}`, or a huge number); any real clamp is refused.
fn check_time_step_limit(f: &ConfigFile) -> Result<()> {
    let Some(v) = &f.time_step_limit else {
        return Ok(());
    };
    let ok = match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) if a.len() == 2 => {
            let lo = a[0].as_f64() == Some(0.0);
            let hi = match &a[1] {
                serde_json::Value::Number(n) => n.as_f64().is_some_and(|x| x >= 1e30),
                serde_json::Value::Object(o) => {
                    o.get("__float__").and_then(|x| x.as_str()) == Some("Infinity")
                }
                serde_json::Value::Null => true,
                _ => false,
            };
            lo && hi
        }
        _ => false,
    };
    match ok {
        true => Ok(()),
        false => Err(Error::config(
            "time_step_limit",
            format!("{v} is not supported (only [0, ∞): no clamp)"),
        )),
    }
}

fn mamba_shape(f: &ConfigFile, hidden: usize) -> Result<MambaShape> {
    if f.mamba_proj_bias == Some(true) {
        return Err(Error::config("mamba_proj_bias", "true is not supported"));
    }
    check_time_step_limit(f)?;
    let heads = positive("mamba_n_heads", f.mamba_n_heads, 128)?;
    let expand = positive("mamba_expand", f.mamba_expand, 2)?;
    let head_dim = match &f.mamba_d_head {
        None => None,
        Some(serde_json::Value::String(s)) if s == "auto" => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    Error::config(
                        "mamba_d_head",
                        format!("expected a size or \"auto\", got {v}"),
                    )
                })?,
        ),
    };
    let inner = expand * hidden;
    let head_dim = match head_dim {
        Some(d) => d,
        None if inner.is_multiple_of(heads) => inner / heads,
        None => {
            return Err(Error::config(
                "mamba_n_heads",
                format!("{heads} does not divide mamba_expand × hidden_size = {inner}"),
            ))
        }
    };
    let n_groups = positive("mamba_n_groups", f.mamba_n_groups, 1)?;
    if !heads.is_multiple_of(n_groups) {
        return Err(Error::config(
            "mamba_n_groups",
            format!("{n_groups} does not divide mamba_n_heads {heads}"),
        ));
    }
    Ok(MambaShape {
        num_heads: heads,
        head_dim,
        state_size: positive("mamba_d_state", f.mamba_d_state, 256)?,
        n_groups,
        conv_kernel: positive("mamba_d_conv", f.mamba_d_conv, 4)?,
        conv_bias: f.mamba_conv_bias.unwrap_or(true),
        chunk_size: positive("mamba_chunk_size", f.mamba_chunk_size, 256)?,
    })
}

fn gdn_shape(f: &ConfigFile) -> Result<GdnShape> {
    let heads = positive("linear_num_key_heads", f.linear_num_key_heads, 16)?;
    let v_heads = f.linear_num_value_heads.unwrap_or(heads);
    if v_heads != heads {
        return Err(Error::config(
            "linear_num_value_heads",
            format!("{v_heads} differs from linear_num_key_heads {heads}: grouped value heads are not supported"),
        ));
    }
    Ok(GdnShape {
        num_heads: heads,
        head_k_dim: positive("linear_key_head_dim", f.linear_key_head_dim, 128)?,
        head_v_dim: positive("linear_value_head_dim", f.linear_value_head_dim, 128)?,
        conv_kernel: positive("linear_conv_kernel_dim", f.linear_conv_kernel_dim, 4)?,
        chunk_size: positive("linear_chunk_size", f.linear_chunk_size, 64)?,
    })
}

/// Granite's multipliers, `position_embedding_type` and MLP; the experts refused.
fn granite_switches(f: &ConfigFile) -> Result<(Scales, bool, MlpLayout)> {
    if f.num_local_experts.unwrap_or(0) > 0 && is_granite(f) {
        return Err(Error::config(
            "num_local_experts",
            "mixture-of-experts layers are not supported (dense Granite hybrids only: 0)",
        ));
    }
    let scales = Scales {
        embedding: finite("embedding_multiplier", f.embedding_multiplier)?,
        residual: finite("residual_multiplier", f.residual_multiplier)?,
        attention: match f.attention_multiplier {
            None => None,
            Some(a) => Some(finite("attention_multiplier", Some(a))?),
        },
        logits_divisor: finite("logits_scaling", f.logits_scaling)?,
    };
    let use_rope = match f.position_embedding_type.as_deref() {
        Some("rope") => true,
        Some("nope") | Some("none") => false,
        None => !is_granite(f),
        Some(other) => {
            return Err(Error::config(
                "position_embedding_type",
                format!("`{other}` is not supported (rope or none)"),
            ))
        }
    };
    let layout = if is_granite(f) || f.shared_intermediate_size.is_some() {
        MlpLayout::Fused
    } else {
        MlpLayout::Split
    };
    Ok((scales, use_rope, layout))
}

/// `recurrent_block` `[start, end]` (layers `start..end`), `recurrent_iterations` (default 1),
/// `recurrent_train_max` (default `recurrent_iterations`).
fn recurrent_depth(f: &ConfigFile, layers: usize) -> Result<Option<RecurrentDepth>> {
    let Some(block) = &f.recurrent_block else {
        if f.recurrent_iterations.is_some() || f.recurrent_train_max.is_some() {
            return Err(Error::config(
                "recurrent_iterations",
                "needs recurrent_block [start, end]",
            ));
        }
        return Ok(None);
    };
    let [start, end] = block[..] else {
        return Err(Error::config("recurrent_block", "expected [start, end]"));
    };
    if !(start < end && end <= layers) {
        return Err(Error::config(
            "recurrent_block",
            format!("[{start}, {end}] is not a range of layers within 0..{layers}"),
        ));
    }
    let iterations = positive("recurrent_iterations", f.recurrent_iterations, 1)?;
    let train_max = positive("recurrent_train_max", f.recurrent_train_max, iterations)?;
    Ok(Some(RecurrentDepth {
        start,
        end,
        iterations,
        train_max,
    }))
}

/// The hybrid part of `f` for a model of `layers` layers of width `hidden`.
pub(super) fn hybrid_parts(f: &ConfigFile, layers: usize, hidden: usize) -> Result<HybridParts> {
    let mut layer_types = layer_types(f, layers)?;
    if layer_types.iter().all(|&k| k == LayerKind::Attention) {
        layer_types.clear();
    }
    let mamba = match layer_types.contains(&LayerKind::Mamba2) {
        true => Some(mamba_shape(f, hidden)?),
        false => None,
    };
    let gdn = match layer_types.contains(&LayerKind::GatedDeltaNet) {
        true => Some(gdn_shape(f)?),
        false => None,
    };
    let (scales, use_rope, mlp_layout) = granite_switches(f)?;
    Ok(HybridParts {
        layer_types,
        mamba,
        gdn,
        scales,
        use_rope,
        mlp_layout,
        depth: recurrent_depth(f, layers)?,
    })
}

/// Writes the hybrid part back into `f` (only what differs from a plain BitNet config).
pub(super) fn write_hybrid(h: &HybridParts, f: &mut ConfigFile) {
    if h.layer_types.iter().any(|k| *k != LayerKind::Attention) {
        f.layer_types = Some(h.layer_types.iter().map(|k| k.name().into()).collect());
    }
    if let Some(m) = &h.mamba {
        f.mamba_n_heads = Some(m.num_heads);
        f.mamba_d_head = Some(serde_json::json!(m.head_dim));
        f.mamba_d_state = Some(m.state_size);
        f.mamba_n_groups = Some(m.n_groups);
        f.mamba_d_conv = Some(m.conv_kernel);
        f.mamba_conv_bias = Some(m.conv_bias);
        f.mamba_chunk_size = Some(m.chunk_size);
    }
    if let Some(g) = &h.gdn {
        f.linear_num_key_heads = Some(g.num_heads);
        f.linear_key_head_dim = Some(g.head_k_dim);
        f.linear_value_head_dim = Some(g.head_v_dim);
        f.linear_conv_kernel_dim = Some(g.conv_kernel);
        f.linear_chunk_size = Some(g.chunk_size);
    }
    let s = &h.scales;
    if !s.is_default() {
        f.embedding_multiplier = Some(s.embedding);
        f.residual_multiplier = Some(s.residual);
        f.attention_multiplier = s.attention;
        f.logits_scaling = Some(s.logits_divisor);
    }
    if !h.use_rope {
        f.position_embedding_type = Some("none".into());
    }
    if let Some(d) = &h.depth {
        f.recurrent_block = Some(vec![d.start, d.end]);
        f.recurrent_iterations = Some(d.iterations);
        f.recurrent_train_max = Some(d.train_max);
    }
    if h.mlp_layout == MlpLayout::Fused {
        f.shared_intermediate_size = f.intermediate_size;
    }
}
