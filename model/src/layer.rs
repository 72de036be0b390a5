//! One transformer layer (block) of the Tritter / BitNet b1.58 decoder: a token mixer — attention
//! (q/k/v/o BitLinears, optional QK-Norm and SubLN norm) or, in hybrid models, a Mamba-2 or
//! Gated DeltaNet mixer (`hybrid`) — the MLP (gated or ungated, ReLU² or SiLU, optional SubLN norm)
//! and the two block norms, placed pre-norm, swin-norm or SubLN. With Chameleon's switches
//! (`swin_norm`, q/k per-head LayerNorm, dense linears) it is HF's `ChameleonDecoderLayer` /
//! `ChameleonSwinDecoderLayer` (`tests/golden_chameleon.rs`); with Granite 4's (residual and
//! attention multipliers, no RoPE, fused `shared_mlp`) `GraniteMoeHybridDecoderLayer` without
//! experts (`model/tests/golden_hybrid.rs`).
//!
//! The layer is stated once, here: [`Block::load`] names every tensor with its shape (HF BitNet
//! names; `weights::param_shapes` records this walk), [`Block::forward`] is the differentiable
//! candle form (training and the reference), and [`LayerView`] is how the inference paths (CPU
//! slices, the GPU upload, byte counts) read the loaded weights.

use crate::attn::train_op::{self, builtin_mask, KeyMask, TrainMask};
use crate::attn::AttentionMode;
use crate::bitlinear::{BitLinear, BitWeights};
use crate::config::{Activation, Config, LayerKind, MlpLayout, NormPlacement, QkNormKind};
use crate::error::{Error, Result};
use crate::hybrid::{GatedDeltaNet, GdnConfig, Mamba2Config, Mamba2Mixer, Projection};
use crate::layer_cache::LayerState;
pub use crate::layer_cache::TensorKvCache;
use crate::norm::{HeadLayerNorm, QkNorm, RmsNorm, CHAMELEON_QK_EPS};
use crate::rope::Rope;
use crate::source::WeightSource;
use candle_core::{DType, Tensor};

/// One layer's weights as the inference paths read them (shapes from the config).
#[derive(Clone, Copy)]
pub struct LayerView<'a> {
    pub q_proj: &'a BitLinear,
    pub k_proj: &'a BitLinear,
    pub v_proj: &'a BitLinear,
    pub o_proj: &'a BitLinear,
    /// The gate of a gated MLP (`act(gate(x)) * up(x)`).
    pub gate_proj: Option<&'a BitLinear>,
    pub up_proj: &'a BitLinear,
    pub down_proj: &'a BitLinear,
    /// Before attention (pre-norm, SubLN) or after it (swin-norm).
    pub input_norm: &'a RmsNorm,
    /// Before the MLP (pre-norm, SubLN) or after it (swin-norm).
    pub post_attention_norm: &'a RmsNorm,
    /// SubLN's norm before `o_proj`.
    pub attn_sub_norm: Option<&'a RmsNorm>,
    /// QK-Norm over `head_dim`, before RoPE.
    pub q_norm: Option<&'a QkNorm>,
    pub k_norm: Option<&'a QkNorm>,
    /// SubLN's norm before `down_proj`.
    pub ffn_sub_norm: Option<&'a RmsNorm>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub placement: NormPlacement,
    pub activation: Activation,
}

impl LayerView<'_> {
    /// Every BitLinear with its HF name: q, k, v, o, gate (if gated), up, down.
    pub fn linears(&self) -> Vec<(&'static str, &BitLinear)> {
        let mut out = vec![
            ("q_proj", self.q_proj),
            ("k_proj", self.k_proj),
            ("v_proj", self.v_proj),
            ("o_proj", self.o_proj),
        ];
        if let Some(g) = self.gate_proj {
            out.push(("gate_proj", g));
        }
        out.push(("up_proj", self.up_proj));
        out.push(("down_proj", self.down_proj));
        out
    }
}

#[derive(Clone)]
struct Attention {
    q_proj: BitLinear,
    k_proj: BitLinear,
    v_proj: BitLinear,
    o_proj: BitLinear,
    sub_norm: Option<RmsNorm>,
    q_norm: Option<QkNorm>,
    k_norm: Option<QkNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    causal: bool,
    /// `sliding_window_size` (0: none) and the sinks kept with it, as the inference path's
    /// rolling cache holds them: the built-in mask applies them too.
    window: usize,
    sinks: usize,
    /// The scores' scale: `1/√head_dim`, or Granite's `attention_multiplier`.
    scale: f64,
    /// RoPE on queries and keys (Granite 4 hybrids have none).
    rope: bool,
}

fn bitlinear(
    src: &mut dyn WeightSource,
    cfg: &Config,
    name: &str,
    out: usize,
    inp: usize,
) -> Result<BitLinear> {
    let w = src.bitlinear(name, out, inp)?;
    let norm = match cfg.bitlinear_rms_norm {
        Some(eps) => Some(RmsNorm::new(
            src.dense(&format!("{name}.rms_norm.weight"), &[inp])?,
            eps,
        )),
        None => None,
    };
    Ok(BitLinear::new(w, norm))
}

fn norm(src: &mut dyn WeightSource, cfg: &Config, name: &str, dim: usize) -> Result<RmsNorm> {
    Ok(RmsNorm::new(
        src.dense(&format!("{name}.weight"), &[dim])?,
        cfg.rms_norm_eps,
    ))
}

/// The QK-Norm of `heads` heads named `name` (`self_attn.q_norm`): an RMSNorm weight
/// `[head_dim]`, or Chameleon's per-head LayerNorm weight and bias `[heads, head_dim]`.
fn qk_norm(
    src: &mut dyn WeightSource,
    cfg: &Config,
    name: &str,
    heads: usize,
) -> Result<Option<QkNorm>> {
    let d = cfg.head_dim;
    Ok(match cfg.qk_norm {
        None => None,
        Some(QkNormKind::Rms) => Some(QkNorm::Rms(norm(src, cfg, name, d)?)),
        Some(QkNormKind::Layernorm) => Some(QkNorm::Layer(HeadLayerNorm::new(
            src.dense(&format!("{name}.weight"), &[heads, d])?,
            src.dense(&format!("{name}.bias"), &[heads, d])?,
            CHAMELEON_QK_EPS,
        )?)),
    })
}

impl Attention {
    fn load(src: &mut dyn WeightSource, cfg: &Config, p: &str) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let q = cfg.num_heads * d;
        let kv = cfg.num_kv_heads * d;
        Ok(Self {
            q_proj: bitlinear(src, cfg, &format!("{p}.q_proj"), q, h)?,
            k_proj: bitlinear(src, cfg, &format!("{p}.k_proj"), kv, h)?,
            v_proj: bitlinear(src, cfg, &format!("{p}.v_proj"), kv, h)?,
            o_proj: bitlinear(src, cfg, &format!("{p}.o_proj"), h, q)?,
            sub_norm: match cfg.norm_placement {
                NormPlacement::Subln => Some(norm(src, cfg, &format!("{p}.attn_sub_norm"), q)?),
                _ => None,
            },
            q_norm: qk_norm(src, cfg, &format!("{p}.q_norm"), cfg.num_heads)?,
            k_norm: qk_norm(src, cfg, &format!("{p}.k_norm"), cfg.num_kv_heads)?,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: d,
            // `bidirectional` and `embedding` attend both ways. `prefix_lm` needs the prompt length,
            // which only the inference path knows (its first chunk); this full forward is causal.
            causal: !matches!(
                cfg.attention_mode,
                crate::attn::AttentionMode::Bidirectional | crate::attn::AttentionMode::Embedding
            ),
            window: cfg.sliding_window_size,
            sinks: if cfg.use_attention_sinks {
                crate::config::ATTENTION_SINKS
            } else {
                0
            },
            scale: cfg
                .hybrid
                .scales
                .attention
                .unwrap_or(1.0 / (d as f64).sqrt()),
            rope: cfg.hybrid.use_rope,
        })
    }

    /// Attention `[B, H, T, D]` of q `[B, H, T, D]` over k, v `[B, H_kv, S, D]`: the fused op
    /// (`attn::train_op`) without a cache on the CPU in f32 — the training path —, the composed
    /// candle ops otherwise (CUDA, bf16, a decode step with a cache).
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<KeyMask>,
        cached: bool,
    ) -> Result<Tensor> {
        let (t, s) = (q.dim(2)?, k.dim(2)?);
        let fused = !cached && q.device().is_cpu() && q.dtype() == DType::F32;
        let composed =
            |builtin, blocked| train_op::composed_attention(q, k, v, self.scale, builtin, blocked);
        match mask {
            Some(KeyMask::Blocked(m)) => composed(None, Some(m)),
            Some(KeyMask::Train(m)) if fused => train_op::attention(q, k, v, self.scale, m),
            Some(KeyMask::Train(m)) => composed(None, Some(&m.blocked(q.dim(0)?, q.device())?)),
            None if fused => {
                let m = TrainMask::single(self.mode(), self.window, self.sinks, t)?;
                train_op::attention(q, k, v, self.scale, &m)
            }
            None => composed(
                builtin_mask(self.causal, self.window, self.sinks, t, s).transpose()?,
                None,
            ),
        }
    }

    /// The built-in mask's mode: causal, or both ways (`bidirectional`, `embedding`).
    fn mode(&self) -> AttentionMode {
        match self.causal {
            true => AttentionMode::Causal,
            false => AttentionMode::Bidirectional,
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        cache: Option<(&mut TensorKvCache, usize)>,
        mask: Option<KeyMask>,
    ) -> Result<Tensor> {
        let (b, t, _c) = x.dims3()?;
        let (h, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self.q_proj.forward(x)?.reshape((b, t, h, d))?;
        let k = self.k_proj.forward(x)?.reshape((b, t, hkv, d))?;
        let v = self.v_proj.forward(x)?.reshape((b, t, hkv, d))?;
        let q = match &self.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let q = q.transpose(1, 2)?.contiguous()?;
        let k = k.transpose(1, 2)?.contiguous()?;
        let (q, k) = match self.rope {
            true => (rope.apply(&q, offset)?, rope.apply(&k, offset)?),
            false => (q, k),
        };
        let v = v.transpose(1, 2)?.contiguous()?;
        let cache_used = cache.is_some();
        let (k, v) = match cache {
            Some((c, layer)) => c.append(layer, &k, &v)?,
            None => (k, v),
        };
        let y = self.attend(&q, &k, &v, mask, cache_used)?;
        let y = y.transpose(1, 2)?.reshape((b, t, h * d))?;
        let y = match &self.sub_norm {
            Some(n) => n.forward(&y)?,
            None => y,
        };
        self.o_proj.forward(&y)
    }
}

#[derive(Clone)]
struct Mlp {
    gate: Option<BitLinear>,
    up: BitLinear,
    down: BitLinear,
    sub_norm: Option<RmsNorm>,
    act: Activation,
}

impl Mlp {
    fn load(src: &mut dyn WeightSource, cfg: &Config, layer: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        if cfg.hybrid.mlp_layout == MlpLayout::Fused {
            return Self::load_fused(src, cfg, &format!("{layer}.shared_mlp"));
        }
        let p = format!("{layer}.mlp");
        Ok(Self {
            gate: if cfg.mlp_gated {
                Some(bitlinear(src, cfg, &format!("{p}.gate_proj"), i, h)?)
            } else {
                None
            },
            up: bitlinear(src, cfg, &format!("{p}.up_proj"), i, h)?,
            down: bitlinear(src, cfg, &format!("{p}.down_proj"), h, i)?,
            sub_norm: match cfg.norm_placement {
                NormPlacement::Subln => Some(norm(src, cfg, &format!("{p}.ffn_sub_norm"), i)?),
                _ => None,
            },
            act: cfg.activation,
        })
    }

    /// Granite's `shared_mlp`: `input_linear` `[2·I, C]` holds the gate's rows, then up's
    /// (`chunk(2)`; the activation goes on the first half); float weights only.
    fn load_fused(src: &mut dyn WeightSource, cfg: &Config, p: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let w = src.dense(&format!("{p}.input_linear.weight"), &[2 * i, h])?;
        let dense = |t: Tensor| BitLinear::new(BitWeights::Dense(t), None);
        Ok(Self {
            gate: Some(dense(w.narrow(0, 0, i)?.contiguous()?)),
            up: dense(w.narrow(0, i, i)?.contiguous()?),
            down: dense(src.dense(&format!("{p}.output_linear.weight"), &[h, i])?),
            sub_norm: None,
            act: cfg.activation,
        })
    }

    fn act(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.act {
            Activation::Relu2 => crate::fused::relu2_or_composed(x)?,
            Activation::Silu => x.silu()?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hdn = match &self.gate {
            Some(g) if self.act == Activation::Relu2 => {
                crate::fused::gated_relu2_or_composed(&g.forward(x)?, &self.up.forward(x)?)?
            }
            Some(g) => (self.act(&g.forward(x)?)? * self.up.forward(x)?)?,
            None => self.act(&self.up.forward(x)?)?,
        };
        let hdn = match &self.sub_norm {
            Some(n) => n.forward(&hdn)?,
            None => hdn,
        };
        self.down.forward(&hdn)
    }
}

/// A layer's token mixer.
#[derive(Clone)]
enum Mixer {
    Attention(Attention),
    Mamba2(Mamba2Mixer),
    GatedDeltaNet(GatedDeltaNet),
}

/// The recurrent layers' projections: BitLinears through the source (ternary, or float for a
/// config without `quantization_config`), as every other linear.
fn recurrent_checks(cfg: &Config, kind: LayerKind) -> Result<()> {
    if cfg.bitlinear_rms_norm.is_some() {
        return Err(Error::config(
            "quantization_config.use_rms_norm",
            format!("is not supported with {} layers", kind.name()),
        ));
    }
    Ok(())
}

fn missing_shape(kind: LayerKind) -> Error {
    Error::config(
        "layer_types",
        format!(
            "names a {} layer but the config has no shape for it",
            kind.name()
        ),
    )
}

impl Mixer {
    fn load(src: &mut dyn WeightSource, cfg: &Config, l: usize, p: &str) -> Result<Self> {
        let kind = cfg.layer_kind(l);
        match kind {
            LayerKind::Attention => Ok(Mixer::Attention(Attention::load(
                src,
                cfg,
                &format!("{p}.self_attn"),
            )?)),
            LayerKind::Mamba2 => {
                recurrent_checks(cfg, kind)?;
                let m = cfg.hybrid.mamba.ok_or_else(|| missing_shape(kind))?;
                let mc = Mamba2Config {
                    hidden_size: cfg.hidden_size,
                    num_heads: m.num_heads,
                    head_dim: m.head_dim,
                    state_size: m.state_size,
                    n_groups: m.n_groups,
                    conv_kernel: m.conv_kernel,
                    use_conv_bias: m.conv_bias,
                    chunk_size: m.chunk_size,
                    eps: cfg.rms_norm_eps,
                    projection: Projection::Ternary,
                };
                Ok(Mixer::Mamba2(Mamba2Mixer::load(
                    src,
                    &mc,
                    &format!("{p}.mamba"),
                )?))
            }
            LayerKind::GatedDeltaNet => {
                recurrent_checks(cfg, kind)?;
                let g = cfg.hybrid.gdn.ok_or_else(|| missing_shape(kind))?;
                let gc = GdnConfig {
                    hidden_size: cfg.hidden_size,
                    num_heads: g.num_heads,
                    head_k_dim: g.head_k_dim,
                    head_v_dim: g.head_v_dim,
                    conv_kernel: g.conv_kernel,
                    conv_bias: false,
                    chunk_size: g.chunk_size,
                    norm_eps: cfg.rms_norm_eps,
                    projection: Projection::Ternary,
                };
                Ok(Mixer::GatedDeltaNet(GatedDeltaNet::load(
                    src,
                    &gc,
                    &format!("{p}.linear_attn"),
                )?))
            }
        }
    }

    /// The mixer over (normed) `x` at positions `offset..`, with layer `l` of a cache when given.
    /// Recurrent mixers run the chunked form over several tokens and the recurrent step over one.
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        cache: Option<(&mut TensorKvCache, usize)>,
        mask: Option<KeyMask>,
    ) -> Result<Tensor> {
        let recurrent = !matches!(self, Mixer::Attention(_));
        if recurrent && mask.is_some() {
            return Err(Error::Invalid(
                "a document mask cannot stop a recurrent (Mamba-2 / Gated DeltaNet) layer's \
                 state from crossing packed documents; train hybrid models with \
                 [train] document_mask = false"
                    .into(),
            ));
        }
        let one = x.dim(1)? == 1;
        match (self, cache) {
            (Mixer::Attention(a), cache) => a.forward(x, rope, offset, cache, mask),
            (Mixer::Mamba2(m), None) => Ok(m.forward(x, None)?.0),
            (Mixer::Mamba2(m), Some((c, l))) => {
                let (y, s) = match one {
                    true => m.forward_recurrent(x, c.mamba2(l)?)?,
                    false => m.forward(x, c.mamba2(l)?)?,
                };
                c.set(l, LayerState::Mamba2(s))?;
                Ok(y)
            }
            (Mixer::GatedDeltaNet(g), None) => Ok(g.forward(x, None)?.0),
            (Mixer::GatedDeltaNet(g), Some((c, l))) => {
                let (y, s) = match one {
                    true => g.forward_recurrent(x, c.gdn(l)?)?,
                    false => g.forward(x, c.gdn(l)?)?,
                };
                c.set(l, LayerState::GatedDeltaNet(s))?;
                Ok(y)
            }
        }
    }

    fn linears(&self) -> Vec<&BitLinear> {
        match self {
            Mixer::Attention(a) => vec![&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj],
            Mixer::Mamba2(m) => m.linears(),
            Mixer::GatedDeltaNet(g) => g.linears(),
        }
    }
}

/// One decoder layer.
#[derive(Clone)]
pub(crate) struct Block {
    mixer: Mixer,
    mlp: Mlp,
    /// Granite's `residual_multiplier` on the mixer's and the MLP's output (1 elsewhere).
    residual: f64,
    norm1: RmsNorm,
    norm2: RmsNorm,
    placement: NormPlacement,
}

impl Block {
    /// Layer `l` from `src`: attention, MLP, then the two block norms (the order of the walk is
    /// the order `Params::init` draws random weights in).
    pub(crate) fn load(src: &mut dyn WeightSource, cfg: &Config, l: usize) -> Result<Self> {
        let h = cfg.hidden_size;
        let p = format!("model.layers.{l}");
        Ok(Block {
            mixer: Mixer::load(src, cfg, l, &p)?,
            mlp: Mlp::load(src, cfg, &p)?,
            residual: cfg.hybrid.scales.residual,
            norm1: norm(src, cfg, &format!("{p}.input_layernorm"), h)?,
            norm2: norm(src, cfg, &format!("{p}.post_attention_layernorm"), h)?,
            placement: cfg.norm_placement,
        })
    }

    /// The read-only view of the loaded weights of an attention layer (`None` for a recurrent
    /// one: the inference paths that read views run attention-only models).
    pub(crate) fn view(&self) -> Option<LayerView<'_>> {
        let Mixer::Attention(a) = &self.mixer else {
            return None;
        };
        let m = &self.mlp;
        Some(LayerView {
            q_proj: &a.q_proj,
            k_proj: &a.k_proj,
            v_proj: &a.v_proj,
            o_proj: &a.o_proj,
            gate_proj: m.gate.as_ref(),
            up_proj: &m.up,
            down_proj: &m.down,
            input_norm: &self.norm1,
            post_attention_norm: &self.norm2,
            attn_sub_norm: a.sub_norm.as_ref(),
            q_norm: a.q_norm.as_ref(),
            k_norm: a.k_norm.as_ref(),
            ffn_sub_norm: m.sub_norm.as_ref(),
            num_heads: a.num_heads,
            num_kv_heads: a.num_kv_heads,
            head_dim: a.head_dim,
            placement: self.placement,
            activation: m.act,
        })
    }

    /// Every BitLinear of the layer (mixer, then MLP).
    pub(crate) fn linears(&self) -> Vec<&BitLinear> {
        let mut out = self.mixer.linears();
        out.extend(self.mlp.gate.as_ref());
        out.extend([&self.mlp.up, &self.mlp.down]);
        out
    }

    /// `y · residual_multiplier` (a no-op at 1).
    fn scaled(&self, y: Tensor) -> Result<Tensor> {
        match self.residual == 1.0 {
            true => Ok(y),
            false => Ok((y * self.residual)?),
        }
    }

    /// The candle forward of `x` `[B, T, C]` at positions `offset..`, appending to layer `l` of
    /// a tensor cache when given; `mask` (a packed batch's) replaces the built-in causal (and
    /// window) mask.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        cache: Option<(&mut TensorKvCache, usize)>,
        mask: Option<KeyMask>,
    ) -> Result<Tensor> {
        match self.placement {
            NormPlacement::Pre | NormPlacement::Subln => {
                let y = self
                    .mixer
                    .forward(&self.norm1.forward(x)?, rope, offset, cache, mask)?;
                let h = (x + self.scaled(y)?)?;
                let y = self.mlp.forward(&self.norm2.forward(&h)?)?;
                Ok((&h + self.scaled(y)?)?)
            }
            NormPlacement::SwinNorm => {
                let y = self.mixer.forward(x, rope, offset, cache, mask)?;
                let h = (x + self.scaled(self.norm1.forward(&y)?)?)?;
                let y = self.norm2.forward(&self.mlp.forward(&h)?)?;
                Ok((&h + self.scaled(y)?)?)
            }
        }
    }
}
