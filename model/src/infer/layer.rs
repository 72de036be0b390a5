//! One transformer layer on f32 slices for the CPU inference path: the same computation as the
//! candle layer (`crate::layer`), with BitLinears on the packed ternary kernels, norms through
//! [`rms_rows`] (Chameleon's per-head q/k LayerNorm through [`layer_norm_head_rows`]), RoPE
//! through [`Rope::rotate_rows`] at absolute positions, and attention on the fused kernels of
//! [`crate::attn`] over the layer's KV cache; dense linears through the candle form.

use super::cache::attn_err;
use crate::attn::{self, AttnShape, MaskSpec};
use crate::bitlinear::{BitLinear, BitWeights};
use crate::config::{Activation, NormPlacement};
use crate::error::{Error, Result};
use crate::layer::LayerView;
use crate::norm::{layer_norm_head_rows, rms_rows, QkNorm, RmsNorm};
use crate::rope::Rope;
use candle_core::Tensor;

/// An RMSNorm's weight on the host.
pub(super) struct HostNorm {
    w: Vec<f32>,
    eps: f64,
}

impl HostNorm {
    pub(super) fn new(n: &RmsNorm) -> Result<Self> {
        Ok(Self {
            w: n.weight_f32()?,
            eps: n.eps(),
        })
    }

    /// Normalises rows of `dim` in place.
    pub(super) fn apply(&self, x: &mut [f32], dim: usize) {
        rms_rows(x, dim, &self.w, self.eps);
    }

    /// Normalised copy of rows of `dim`.
    fn applied(&self, x: &[f32], dim: usize) -> Vec<f32> {
        let mut y = x.to_vec();
        self.apply(&mut y, dim);
        y
    }
}

fn host_norm(n: Option<&RmsNorm>) -> Result<Option<HostNorm>> {
    n.map(HostNorm::new).transpose()
}

/// A QK-Norm on the host: the shared RMSNorm, or the per-head LayerNorm's weight and bias
/// `[heads, head_dim]`.
enum HostQkNorm {
    Rms(HostNorm),
    Layer {
        w: Vec<f32>,
        b: Vec<f32>,
        heads: usize,
        eps: f64,
    },
}

impl HostQkNorm {
    fn new(n: &QkNorm) -> Result<Self> {
        let f32s = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        Ok(match n {
            QkNorm::Rms(r) => HostQkNorm::Rms(HostNorm::new(r)?),
            QkNorm::Layer(l) => HostQkNorm::Layer {
                w: f32s(l.weight())?,
                b: f32s(l.bias())?,
                heads: l.weight().dim(0)?,
                eps: l.eps(),
            },
        })
    }

    /// Normalises rows `[T, heads, dim]` in place.
    fn apply(&self, x: &mut [f32], dim: usize) {
        match self {
            HostQkNorm::Rms(n) => n.apply(x, dim),
            HostQkNorm::Layer { w, b, heads, eps } => {
                layer_norm_head_rows(x, *heads, dim, w, b, *eps)
            }
        }
    }
}

fn host_qk_norm(n: Option<&QkNorm>) -> Result<Option<HostQkNorm>> {
    n.map(HostQkNorm::new).transpose()
}

/// A BitLinear as the CPU path runs it: packed weights straight on the kernels, latent or dense
/// ones through the candle form; the input norm (HF `use_rms_norm`) on the host.
struct Linear {
    plain: BitLinear,
    norm: Option<HostNorm>,
}

impl Linear {
    fn new(l: &BitLinear) -> Result<Self> {
        Ok(Self {
            plain: BitLinear::new(l.weights().clone(), None),
            norm: host_norm(l.norm())?,
        })
    }

    /// The layer on `m` rows of `x`.
    fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let k = x.len() / m.max(1);
        let normed;
        let x = match &self.norm {
            Some(n) => {
                normed = n.applied(x, k);
                &normed[..]
            }
            None => x,
        };
        match self.plain.weights() {
            BitWeights::Packed(p) => {
                let w = p.matrix();
                if w.k() != k {
                    return Err(Error::Invalid(format!(
                        "BitLinear input has {k} features, weights expect {}",
                        w.k()
                    )));
                }
                let mut out = vec![0f32; m * w.n()];
                tritter_kernels::ternary_matmul(w, p.weight_scale(), x, m, &mut out)
                    .map_err(|e| Error::Kernel(e.to_string()))?;
                Ok(out)
            }
            BitWeights::Latent(_) | BitWeights::Dense(_) => {
                let t = Tensor::from_slice(x, (m, k), &candle_core::Device::Cpu)?;
                Ok(self.plain.forward(&t)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

/// `[T, H, D]` → `[H, T, D]`.
fn to_heads(x: &[f32], t: usize, h: usize, d: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for i in 0..t {
        for j in 0..h {
            y[(j * t + i) * d..][..d].copy_from_slice(&x[(i * h + j) * d..][..d]);
        }
    }
    y
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// One layer's weights in the CPU path's form (packed weights shared with the model).
pub(super) struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Option<Linear>,
    up: Linear,
    down: Linear,
    norm1: HostNorm,
    norm2: HostNorm,
    attn_sub: Option<HostNorm>,
    q_norm: Option<HostQkNorm>,
    k_norm: Option<HostQkNorm>,
    ffn_sub: Option<HostNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    placement: NormPlacement,
    act: Activation,
}

impl Layer {
    pub(super) fn new(v: &LayerView<'_>) -> Result<Self> {
        Ok(Self {
            q: Linear::new(v.q_proj)?,
            k: Linear::new(v.k_proj)?,
            v: Linear::new(v.v_proj)?,
            o: Linear::new(v.o_proj)?,
            gate: v.gate_proj.map(Linear::new).transpose()?,
            up: Linear::new(v.up_proj)?,
            down: Linear::new(v.down_proj)?,
            norm1: HostNorm::new(v.input_norm)?,
            norm2: HostNorm::new(v.post_attention_norm)?,
            attn_sub: host_norm(v.attn_sub_norm)?,
            q_norm: host_qk_norm(v.q_norm)?,
            k_norm: host_qk_norm(v.k_norm)?,
            ffn_sub: host_norm(v.ffn_sub_norm)?,
            heads: v.num_heads,
            kv_heads: v.num_kv_heads,
            head_dim: v.head_dim,
            placement: v.placement,
            act: v.activation,
        })
    }

    /// Attention of `x` `[T, C]` appended to `cache` (keys rotated at absolute positions).
    fn attention(
        &self,
        x: &[f32],
        t: usize,
        rope: &Rope,
        cache: &mut attn::KvCache,
        spec: &MaskSpec,
    ) -> Result<Vec<f32>> {
        let (h, hkv, d) = (self.heads, self.kv_heads, self.head_dim);
        let mut q = self.q.forward(x, t)?;
        let mut k = self.k.forward(x, t)?;
        let v = self.v.forward(x, t)?;
        if let Some(n) = &self.q_norm {
            n.apply(&mut q, d);
        }
        if let Some(n) = &self.k_norm {
            n.apply(&mut k, d);
        }
        let offset = cache.seen();
        let mut qv = to_heads(&q, t, h, d);
        let mut kv = to_heads(&k, t, hkv, d);
        let vv = to_heads(&v, t, hkv, d);
        rope.rotate_rows(&mut qv, t, offset);
        rope.rotate_rows(&mut kv, t, offset);
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; h * t * d];
        if cache.seen() == 0 {
            let mask = spec.mask().map_err(attn_err)?;
            let shape = AttnShape {
                heads: h,
                kv_heads: hkv,
                q_len: t,
                kv_len: t,
                head_dim: d,
            };
            attn::attention_prefill(&qv, &kv, &vv, shape, &mask, scale, 0, &mut out)
                .map_err(attn_err)?;
            cache.append(&kv, &vv, t).map_err(attn_err)?;
        } else {
            cache.append(&kv, &vv, t).map_err(attn_err)?;
            attn::attention_cached(&qv, h, t, cache, scale, &mut out).map_err(attn_err)?;
        }
        // [H, T, D] → [T, H·D]
        let mut y = vec![0f32; t * h * d];
        for j in 0..h {
            for i in 0..t {
                y[(i * h + j) * d..][..d].copy_from_slice(&out[(j * t + i) * d..][..d]);
            }
        }
        if let Some(n) = &self.attn_sub {
            n.apply(&mut y, h * d);
        }
        self.o.forward(&y, t)
    }

    fn mlp(&self, x: &[f32], t: usize) -> Result<Vec<f32>> {
        let act = |v: f32| match self.act {
            Activation::Relu2 => {
                let r = v.max(0.0);
                r * r
            }
            Activation::Silu => v / (1.0 + (-v).exp()),
        };
        let mut hdn = self.up.forward(x, t)?;
        match &self.gate {
            Some(g) => {
                let gv = g.forward(x, t)?;
                hdn.iter_mut().zip(&gv).for_each(|(u, g)| *u *= act(*g));
            }
            None => hdn.iter_mut().for_each(|u| *u = act(*u)),
        }
        if let Some(n) = &self.ffn_sub {
            let dim = hdn.len() / t.max(1);
            n.apply(&mut hdn, dim);
        }
        self.down.forward(&hdn, t)
    }

    /// The layer on the residual stream `x` `[T, C]`, in place.
    pub(super) fn forward(
        &self,
        x: &mut [f32],
        t: usize,
        rope: &Rope,
        cache: &mut attn::KvCache,
        spec: &MaskSpec,
    ) -> Result<()> {
        let c = x.len() / t.max(1);
        match self.placement {
            NormPlacement::Pre | NormPlacement::Subln => {
                let a = self.attention(&self.norm1.applied(x, c), t, rope, cache, spec)?;
                add(x, &a);
                let f = self.mlp(&self.norm2.applied(x, c), t)?;
                add(x, &f);
            }
            NormPlacement::SwinNorm => {
                let a = self.attention(x, t, rope, cache, spec)?;
                add(x, &self.norm1.applied(&a, c));
                let f = self.mlp(x, t)?;
                add(x, &self.norm2.applied(&f, c));
            }
        }
        Ok(())
    }
}
