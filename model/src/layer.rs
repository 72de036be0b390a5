//! One transformer layer (block) of the Tritter / BitNet b1.58 decoder: attention (q/k/v/o
//! BitLinears, optional QK-Norm and SubLN norm), the MLP (gated or ungated, ReLU² or SiLU, optional
//! SubLN norm) and the two block norms, placed pre-norm, swin-norm or SubLN. With Chameleon's
//! switches (`swin_norm`, q/k per-head LayerNorm, dense linears) it is HF's
//! `ChameleonDecoderLayer` / `ChameleonSwinDecoderLayer` (`tests/golden_chameleon.rs`).
//!
//! The layer is stated once, here: [`Block::load`] names every tensor with its shape (HF BitNet
//! names; `weights::param_shapes` records this walk), [`Block::forward`] is the differentiable
//! candle form (training and the reference), and [`LayerView`] is how the inference paths (CPU
//! slices, the GPU upload, byte counts) read the loaded weights.

use crate::bitlinear::BitLinear;
use crate::config::{Activation, Config, NormPlacement, QkNormKind};
use crate::error::{Error, Result};
use crate::norm::{HeadLayerNorm, QkNorm, RmsNorm, CHAMELEON_QK_EPS};
use crate::rope::Rope;
use crate::source::WeightSource;
use candle_core::{DType, Tensor, D};

/// Per-layer key/value cache of the candle path (tensors in the model's compute dtype on its
/// device, keys after RoPE), used by `Transformer::hidden_tensor_cache`; the CPU inference path
/// uses `infer::InferenceCache`.
#[derive(Debug, Clone, Default)]
pub struct TensorKvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl TensorKvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }

    /// Bytes held by the cached tensors.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// Records `t` more tokens once every layer has appended them.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::Invalid(format!("cache has no layer {layer}")))?;
        let kv = match slot.take() {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
        };
        *slot = Some(kv.clone());
        Ok(kv)
    }
}

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
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        cache: Option<(&mut TensorKvCache, usize)>,
        blocked: Option<&Tensor>,
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
        let q = rope.apply(&q.transpose(1, 2)?.contiguous()?, offset)?;
        let k = rope.apply(&k.transpose(1, 2)?.contiguous()?, offset)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let (k, v) = match cache {
            Some((c, layer)) => c.append(layer, &k, &v)?,
            None => (k, v),
        };
        let s = k.dim(2)?;
        let rep = h / hkv;
        let (k, v) = if rep > 1 {
            (
                k.unsqueeze(2)?
                    .expand((b, hkv, rep, s, d))?
                    .reshape((b, h, s, d))?,
                v.unsqueeze(2)?
                    .expand((b, hkv, rep, s, d))?
                    .reshape((b, h, s, d))?,
            )
        } else {
            (k, v)
        };
        let scale = 1.0 / (d as f64).sqrt();
        // Scores, mask and softmax in f32; the weighted sum in the compute dtype.
        let mut att = (q.matmul(&k.t()?.contiguous()?)?.to_dtype(DType::F32)? * scale)?;
        if self.causal && t > 1 {
            let past = s - t;
            let mask: Vec<u8> = (0..t)
                .flat_map(|i| (0..s).map(move |j| u8::from(j > i + past)))
                .collect();
            let mask = Tensor::from_vec(mask, (t, s), x.device())?.broadcast_as(att.shape())?;
            let neg = Tensor::new(f32::NEG_INFINITY, x.device())?.broadcast_as(att.shape())?;
            att = mask.where_cond(&neg, &att)?;
        }
        if let Some(m) = blocked {
            // `[B, T, S]` → every head: 1 hides the key from the query (a document mask).
            let m = m.unsqueeze(1)?.broadcast_as(att.shape())?;
            let neg = Tensor::new(f32::NEG_INFINITY, x.device())?.broadcast_as(att.shape())?;
            att = m.where_cond(&neg, &att)?;
        }
        let att = candle_nn::ops::softmax(&att, D::Minus1)?.to_dtype(v.dtype())?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h * d))?;
        let y = match &self.sub_norm {
            Some(n) => n.forward(&y)?,
            None => y,
        };
        self.o_proj.forward(&y)
    }
}

struct Mlp {
    gate: Option<BitLinear>,
    up: BitLinear,
    down: BitLinear,
    sub_norm: Option<RmsNorm>,
    act: Activation,
}

impl Mlp {
    fn load(src: &mut dyn WeightSource, cfg: &Config, p: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
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

    fn act(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.act {
            Activation::Relu2 => x.relu()?.sqr()?,
            Activation::Silu => x.silu()?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hdn = match &self.gate {
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

/// One decoder layer.
pub(crate) struct Block {
    attn: Attention,
    mlp: Mlp,
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
            attn: Attention::load(src, cfg, &format!("{p}.self_attn"))?,
            mlp: Mlp::load(src, cfg, &format!("{p}.mlp"))?,
            norm1: norm(src, cfg, &format!("{p}.input_layernorm"), h)?,
            norm2: norm(src, cfg, &format!("{p}.post_attention_layernorm"), h)?,
            placement: cfg.norm_placement,
        })
    }

    /// The read-only view of the loaded weights.
    pub(crate) fn view(&self) -> LayerView<'_> {
        let (a, m) = (&self.attn, &self.mlp);
        LayerView {
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
        }
    }

    /// The candle forward of `x` `[B, T, C]` at positions `offset..`, appending to layer `l` of
    /// a tensor cache when given; `blocked` `[B, T, S]` (u8, 1 = hidden) hides keys from queries
    /// on top of the causal mask.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        cache: Option<(&mut TensorKvCache, usize)>,
        blocked: Option<&Tensor>,
    ) -> Result<Tensor> {
        match self.placement {
            NormPlacement::Pre | NormPlacement::Subln => {
                let h = (x + self.attn.forward(
                    &self.norm1.forward(x)?,
                    rope,
                    offset,
                    cache,
                    blocked,
                )?)?;
                Ok((&h + self.mlp.forward(&self.norm2.forward(&h)?)?)?)
            }
            NormPlacement::SwinNorm => {
                let h = (x + self
                    .norm1
                    .forward(&self.attn.forward(x, rope, offset, cache, blocked)?)?)?;
                Ok((&h + self.norm2.forward(&self.mlp.forward(&h)?)?)?)
            }
        }
    }
}
