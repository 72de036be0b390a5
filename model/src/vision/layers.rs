//! The SigLIP encoder's building blocks as transformers' `SiglipEncoderLayer` states them:
//! `nn.Linear` (`x·Wᵀ + b`), `nn.LayerNorm` (biased variance, `eps` inside the root), eager
//! attention (`softmax(q·kᵀ · d^-½) · v`, no mask), the fc1 → GELU → fc2 MLP, pre-LN residuals.
//!
//! Each block runs on one of two paths that compute the same function: [`VisionPath::Differentiable`]
//! builds layer norm and softmax from basic candle ops so gradients flow (candle's fused
//! `layer_norm` / `softmax_last_dim` have no backward); [`VisionPath::Fused`] uses those fused
//! kernels for inference. Tests hold the two within float rounding of each other.

use crate::error::Result;
use crate::vision::config::{VisionAct, VisionConfig};
use candle_core::{Tensor, D};
use candle_nn::{Init, VarBuilder};

/// Which layer-norm and softmax implementation a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionPath {
    /// Basic candle ops only: gradients reach every parameter (training).
    Differentiable,
    /// candle-nn's fused `layer_norm` and `softmax_last_dim`: faster, no backward (inference).
    Fused,
}

/// `nn.Linear`: weight `[out, in]`, optional bias `[out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `{vb}.weight` (and `{vb}.bias` when `bias`); a fresh VarMap initialises the weight
    /// Xavier-uniform and the bias to zero, as transformers initialises SigLIP's projections.
    pub fn new(vb: &VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let bound = (6.0 / (in_dim + out_dim) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `[.., in]` → `[.., out]`: one 2-D matmul over all rows.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims.last().copied().unwrap_or(1);
        let rows = x.elem_count() / in_dim.max(1);
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = self.weight.dim(0)?;
        }
        Ok(y.reshape(out_dims)?)
    }
}

/// GELU, tanh form (`gelu_pytorch_tanh`), for inference on the CPU: the formula of candle's
/// `gelu` with `tanh(z) = 1 − 2 / (e^{2z} + 1)` (one `exp`), spread over rayon's threads
/// (candle's unary ops run on one). Other devices and dtypes use candle's op.
fn gelu_tanh_par(x: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return Ok(x.gelu()?);
    }
    let dims = x.dims().to_vec();
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    v.par_chunks_mut(1 << 14).for_each(|chunk| {
        for e in chunk {
            let u = *e;
            let z = 0.797_884_6 * u * (1.0 + 0.044_715 * u * u);
            let t = 1.0 - 2.0 / ((2.0 * z).exp() + 1.0);
            *e = 0.5 * u * (1.0 + t);
        }
    });
    Ok(Tensor::from_vec(v, dims, x.device())?)
}

/// `nn.LayerNorm` over the last dim with weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// `{vb}.weight` (init 1) and `{vb}.bias` (init 0), both `[dim]`.
    pub fn new(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
            eps,
        })
    }

    /// `(x - mean) / sqrt(var + eps) · w + b`, var the biased variance, as torch computes it.
    pub fn forward(&self, x: &Tensor, path: VisionPath) -> Result<Tensor> {
        match path {
            VisionPath::Differentiable => {
                let mean = x.mean_keepdim(D::Minus1)?;
                let centred = x.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
                Ok(normed
                    .broadcast_mul(&self.weight)?
                    .broadcast_add(&self.bias)?)
            }
            VisionPath::Fused => Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?),
        }
    }
}

/// Softmax over the last dim on the chosen path.
fn softmax(x: &Tensor, path: VisionPath) -> Result<Tensor> {
    Ok(match path {
        VisionPath::Differentiable => candle_nn::ops::softmax(x, D::Minus1)?,
        VisionPath::Fused => candle_nn::ops::softmax_last_dim(&x.contiguous()?)?,
    })
}

/// One `SiglipEncoderLayer`: `h = x + attn(ln1(x))`, `out = h + fc2(gelu(fc1(ln2(h))))`.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    act: VisionAct,
}

impl EncoderLayer {
    /// The tensors under `{vb}` (`encoder.layers.{i}`), HF names.
    pub fn new(cfg: &VisionConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let attn = vb.pp("self_attn");
        let mlp = vb.pp("mlp");
        Ok(Self {
            layer_norm1: LayerNorm::new(&vb.pp("layer_norm1"), d, cfg.layer_norm_eps)?,
            q_proj: Linear::new(&attn.pp("q_proj"), d, d, true)?,
            k_proj: Linear::new(&attn.pp("k_proj"), d, d, true)?,
            v_proj: Linear::new(&attn.pp("v_proj"), d, d, true)?,
            out_proj: Linear::new(&attn.pp("out_proj"), d, d, true)?,
            layer_norm2: LayerNorm::new(&vb.pp("layer_norm2"), d, cfg.layer_norm_eps)?,
            fc1: Linear::new(&mlp.pp("fc1"), d, cfg.intermediate_size, true)?,
            fc2: Linear::new(&mlp.pp("fc2"), cfg.intermediate_size, d, true)?,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
        })
    }

    /// Bidirectional multi-head attention over `[B, N, D]` (no mask: every patch is real).
    fn attention(&self, x: &Tensor, path: VisionPath) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.q_proj.forward(x)?)?;
        let k = split(self.k_proj.forward(x)?)?;
        let v = split(self.v_proj.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        let probs = softmax(&scores, path)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
        self.out_proj.forward(&out)
    }

    fn mlp(&self, x: &Tensor, path: VisionPath) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = match (self.act, path) {
            (VisionAct::GeluTanh, VisionPath::Fused) => gelu_tanh_par(&h)?,
            (VisionAct::GeluTanh, VisionPath::Differentiable) => h.gelu()?,
            (VisionAct::Gelu, _) => h.gelu_erf()?,
        };
        self.fc2.forward(&h)
    }

    /// `[B, N, D]` → `[B, N, D]`.
    pub fn forward(&self, x: &Tensor, path: VisionPath) -> Result<Tensor> {
        let h = (x + self.attention(&self.layer_norm1.forward(x, path)?, path)?)?;
        Ok((&h + self.mlp(&self.layer_norm2.forward(&h, path)?, path)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_gelu_equals_candles_gelu() {
        let mut v: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.003).collect();
        v.extend([-1e4, -88.0, -20.0, 0.0, 20.0, 88.0, 1e4, f32::MIN_POSITIVE]);
        let n = v.len();
        let x = Tensor::from_vec(v, (2, n / 2), &candle_core::Device::Cpu).unwrap();
        let want = x
            .gelu()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = gelu_tanh_par(&x).unwrap();
        assert_eq!(got.dims(), x.dims());
        for (g, w) in got
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(&want)
        {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
    }
}
