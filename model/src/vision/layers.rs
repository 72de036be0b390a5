//! The SigLIP encoder's building blocks as transformers' `SiglipEncoderLayer` states them:
//! `nn.Linear` (`x·Wᵀ + b`), `nn.LayerNorm` (biased variance, `eps` inside the root), eager
//! attention (`softmax(q·kᵀ · d^-½) · v`, no mask), the fc1 → GELU → fc2 MLP, pre-LN residuals.
//!
//! Each block runs on one of two paths that compute the same function: [`VisionPath::Differentiable`]
//! builds layer norm and softmax from basic candle ops so gradients flow (candle's fused
//! `layer_norm` / `softmax_last_dim` have no backward); [`VisionPath::Fused`] uses those fused
//! kernels for inference. Tests hold the two within float rounding of each other. On the CPU in
//! f32 the fused path skips candle's ops altogether: the `forward_cpu` methods run the layer on
//! plain row-major buffers with the kernels of `cpu.rs`.

use crate::error::Result;
use crate::vision::config::{VisionAct, VisionConfig};
use crate::vision::cpu::{self, CpuF32, Mat};
use candle_core::{Tensor, D};
use candle_nn::{Init, VarBuilder};

/// Which layer-norm and softmax implementation a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionPath {
    /// Basic candle ops only: gradients reach every parameter (training).
    Differentiable,
    /// candle-nn's fused `layer_norm` and `softmax_last_dim`, or on the CPU in f32 Tritter's own
    /// kernels (`cpu.rs`): faster, no backward (inference).
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

    /// On the CPU in f32: `dst = x·Wᵀ (+ b when with_bias)`, or `dst += …` when `accumulate`
    /// (a residual already in `dst`); `x` is `[rows, in]`, `dst` rows have stride `dst_rs`.
    fn forward_cpu(
        &self,
        x: &[f32],
        rows: usize,
        dst: &mut [f32],
        dst_rs: usize,
        accumulate: bool,
        with_bias: bool,
    ) -> Result<()> {
        let (out, inp) = self.weight.dims2()?;
        let w = CpuF32::new(&self.weight)?;
        let mut read_dst = accumulate;
        if let (true, Some(b)) = (with_bias, &self.bias) {
            let b = CpuF32::new(b)?;
            let b = b.slice()?;
            for row in dst.chunks_mut(dst_rs).take(rows) {
                let len = out.min(row.len());
                let row = &mut row[..len];
                if accumulate {
                    row.iter_mut().zip(b).for_each(|(d, b)| *d += b);
                } else {
                    row.copy_from_slice(&b[..row.len()]);
                }
            }
            read_dst = true;
        }
        let x = Mat::rows(x, rows, inp, inp);
        let wt = Mat::rows(w.slice()?, out, inp, inp).t();
        cpu::matmul(dst, dst_rs, x, wt, read_dst, 1.0, cpu::parallelism())
    }
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

    /// On the CPU in f32: every row of `x` (rows as long as the weight) into `out`.
    pub(crate) fn forward_cpu(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let (w, b) = (CpuF32::new(&self.weight)?, CpuF32::new(&self.bias)?);
        cpu::layer_norm(x, w.slice()?, b.slice()?, self.eps as f32, out);
        Ok(())
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

    fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = match self.act {
            VisionAct::GeluTanh => h.gelu()?,
            VisionAct::Gelu => h.gelu_erf()?,
        };
        self.fc2.forward(&h)
    }

    /// `[B, N, D]` → `[B, N, D]`.
    pub fn forward(&self, x: &Tensor, path: VisionPath) -> Result<Tensor> {
        let h = (x + self.attention(&self.layer_norm1.forward(x, path)?, path)?)?;
        Ok((&h + self.mlp(&self.layer_norm2.forward(&h, path)?)?)?)
    }

    /// The fused path on the CPU in f32 without candle ops: `x` is `[images · n, d]` row-major
    /// (each image's `n` tokens together); returns the layer's output in the same layout.
    pub(crate) fn forward_cpu(&self, x: &[f32], images: usize, n: usize) -> Result<Vec<f32>> {
        let rows = images * n;
        let (inter, d) = self.fc1.weight.dims2()?;
        let mut a = vec![0f32; rows * d];
        self.layer_norm1.forward_cpu(x, &mut a)?;
        let mut qkv = vec![0f32; rows * 3 * d];
        for (p, proj) in [&self.q_proj, &self.k_proj, &self.v_proj]
            .iter()
            .enumerate()
        {
            proj.forward_cpu(&a, rows, &mut qkv[p * d..], 3 * d, false, true)?;
        }
        cpu::attention(&qkv, images, n, d, self.heads, &mut a)?;
        let mut h = x.to_vec();
        self.out_proj.forward_cpu(&a, rows, &mut h, d, true, true)?;
        self.layer_norm2.forward_cpu(&h, &mut a)?;
        let mut hidden = vec![0f32; rows * inter];
        match self.act {
            VisionAct::GeluTanh => {
                self.fc1
                    .forward_cpu(&a, rows, &mut hidden, inter, false, false)?;
                let zero;
                let b = match &self.fc1.bias {
                    Some(b) => Some(CpuF32::new(b)?),
                    None => None,
                };
                let b = match &b {
                    Some(b) => b.slice()?,
                    None => {
                        zero = vec![0f32; inter];
                        &zero
                    }
                };
                cpu::bias_gelu_tanh(&mut hidden, b);
            }
            VisionAct::Gelu => {
                self.fc1
                    .forward_cpu(&a, rows, &mut hidden, inter, false, true)?;
                let t = Tensor::from_vec(hidden, (rows, inter), &candle_core::Device::Cpu)?;
                hidden = t.gelu_erf()?.flatten_all()?.to_vec1::<f32>()?;
            }
        }
        self.fc2.forward_cpu(&hidden, rows, &mut h, d, true, true)?;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    /// One layer (width 64, MLP 128, 4 heads) with every tensor random, norms near 1.
    fn random_layer(act: VisionAct) -> EncoderLayer {
        use rand::{Rng, SeedableRng};
        let cfg = VisionConfig {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 1,
            num_attention_heads: 4,
            num_channels: 3,
            image_size: 8,
            patch_size: 4,
            hidden_act: act,
            layer_norm_eps: 1e-6,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut map = HashMap::new();
        for (name, shape) in crate::vision::siglip::tensor_shapes(&cfg) {
            if let Some(name) = name.strip_prefix("encoder.layers.0.") {
                let n: usize = shape.iter().product();
                let shift = if name.contains("norm") && name.ends_with("weight") {
                    1.0
                } else {
                    0.0
                };
                let v: Vec<f32> = (0..n)
                    .map(|_| shift + rng.random_range(-0.3..0.3))
                    .collect();
                map.insert(
                    name.to_string(),
                    Tensor::from_vec(v, shape, &Device::Cpu).unwrap(),
                );
            }
        }
        let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
        EncoderLayer::new(&cfg, &vb).unwrap()
    }

    #[test]
    fn cpu_kernels_equal_candle_ops() {
        // Two images of 30 tokens; tolerance: 1e-5 of the output's largest magnitude.
        for act in [VisionAct::GeluTanh, VisionAct::Gelu] {
            let layer = random_layer(act);
            let x = Tensor::randn(0f32, 1.0, (2, 30, 64), &Device::Cpu).unwrap();
            let want = layer.forward(&x, VisionPath::Fused).unwrap();
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got = layer.forward_cpu(&xs, 2, 30).unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-5 * scale,
                "{act:?}: max |diff| {err:e}, scale {scale}"
            );
        }
    }
}
