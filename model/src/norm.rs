//! The norms: RMSNorm as HF `BitNetRMSNorm` / `LlamaRMSNorm`: `w · x / sqrt(mean(x²) + eps)` over
//! the last dim; the statistics and the normalisation are computed in f32, then (as HF does) the
//! result is cast back to the input's dtype and multiplied by the weight in that dtype (bf16
//! models and bf16 mixed-precision training; for f32 inputs the casts are no-ops). And
//! [`HeadLayerNorm`], Chameleon's QK-Norm (HF `ChameleonLayerNorm`): LayerNorm statistics over
//! `head_dim` (mean-subtracted, biased variance, eps 1e-5), then a weight and a bias per head
//! `[heads, head_dim]`. Both built from differentiable candle ops: candle-nn's fused `rms_norm` /
//! `layer_norm` have no backward, so gradients would silently vanish behind them in training.
//!
//! [`rms_rows`] and [`layer_norm_head_rows`] are the same norms on f32 slices, the host
//! statements the CPU inference path uses (and the GPU kernels are tested against).

use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};

/// RMSNorm with a learned per-channel weight.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The weight as f32 values (for the slice form [`rms_rows`] and the GPU upload).
    pub fn weight_f32(&self) -> Result<Vec<f32>> {
        Ok(self
            .weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// `[.., C]` → `[.., C]` in `x`'s dtype: the fused op (`crate::fused::rms_norm`, one pass,
    /// with its own backward) for contiguous f32 CPU tensors, [`Self::forward_composed`]
    /// otherwise.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match crate::fused::applies(x) && crate::fused::applies(&self.weight) {
            true => crate::fused::rms_norm(x, &self.weight, self.eps),
            false => self.forward_composed(x),
        }
    }

    /// [`Self::forward`] as composed candle ops (the specification; CUDA and bf16).
    pub fn forward_composed(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (var + self.eps)?.sqrt()?.recip()?;
        Ok(x32
            .broadcast_mul(&inv)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight.to_dtype(dtype)?)?)
    }
}

/// `w · x / sqrt(mean(x²) + eps)` in place over rows of `dim` values of `x` (as
/// [`RmsNorm::forward`] on f32, on slices).
pub fn rms_rows(x: &mut [f32], dim: usize, w: &[f32], eps: f64) {
    for row in x.chunks_exact_mut(dim) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let inv = 1.0 / (ms + eps as f32).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v = *v * inv * g;
        }
    }
}

/// The eps of Chameleon's q/k LayerNorm: HF's `ChameleonLayerNorm.forward` passes 1e-5 to
/// `F.layer_norm` whatever the config says.
pub const CHAMELEON_QK_EPS: f64 = 1e-5;

/// LayerNorm over the last dim (`head_dim`) with a weight and a bias per head: for `x`
/// `[.., heads, head_dim]`, `y = (x - mean) / sqrt(var + eps) · w[h] + b[h]` (HF
/// `ChameleonLayerNorm`).
#[derive(Debug, Clone)]
pub struct HeadLayerNorm {
    /// `[heads, head_dim]`.
    weight: Tensor,
    /// `[heads, head_dim]`.
    bias: Tensor,
    eps: f64,
}

impl HeadLayerNorm {
    /// `weight` and `bias` of the same shape `[heads, head_dim]`.
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        if weight.rank() != 2 || weight.dims() != bias.dims() {
            return Err(Error::Invalid(format!(
                "per-head LayerNorm: weight {:?} and bias {:?} must both be [heads, head_dim]",
                weight.dims(),
                bias.dims()
            )));
        }
        Ok(Self { weight, bias, eps })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// `[.., heads, head_dim]` → the same shape in `x`'s dtype; statistics in f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let centred = x32.broadcast_sub(&x32.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (var + self.eps)?.sqrt()?.recip()?;
        Ok(centred
            .broadcast_mul(&inv)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight.to_dtype(dtype)?)?
            .broadcast_add(&self.bias.to_dtype(dtype)?)?)
    }
}

/// [`HeadLayerNorm`] in place over rows of `dim` values of `x`, row `r` belonging to head
/// `r % heads` (rows `[T, heads, dim]`); `w` and `b` are `[heads, dim]` (as
/// [`HeadLayerNorm::forward`] on f32, on slices).
pub fn layer_norm_head_rows(
    x: &mut [f32],
    heads: usize,
    dim: usize,
    w: &[f32],
    b: &[f32],
    eps: f64,
) {
    for (r, row) in x.chunks_exact_mut(dim).enumerate() {
        let h = r % heads.max(1);
        let mean = row.iter().sum::<f32>() / dim as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        let inv = 1.0 / (var + eps as f32).sqrt();
        let (w, b) = (&w[h * dim..][..dim], &b[h * dim..][..dim]);
        for ((v, g), c) in row.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * inv * g + c;
        }
    }
}

/// The norm a QK-Norm applies to queries or keys over `head_dim` (`config::QkNormKind`).
#[derive(Debug, Clone)]
pub enum QkNorm {
    /// One RMSNorm weight `[head_dim]` shared by all heads.
    Rms(RmsNorm),
    /// Chameleon's per-head LayerNorm.
    Layer(HeadLayerNorm),
}

impl QkNorm {
    /// `[.., heads, head_dim]` → the same shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            QkNorm::Rms(n) => n.forward(x),
            QkNorm::Layer(n) => n.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_scalar_formula() {
        let x = [1.0f32, -2.0, 3.0, 0.5];
        let w = [0.5f32, 1.0, 2.0, -1.0];
        let n = RmsNorm::new(Tensor::new(&w, &Device::Cpu).unwrap(), 1e-5);
        let y = n
            .forward(&Tensor::new(&[x], &Device::Cpu).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let ms = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        for i in 0..4 {
            let want = w[i] * x[i] / (ms + 1e-5).sqrt();
            assert!((y[0][i] - want).abs() < 1e-6);
        }
    }

    #[test]
    fn slice_form_matches_the_tensor_form() {
        let x = [1.0f32, -2.0, 3.0, 0.5, 0.25, 4.0, -1.5, 2.0];
        let w = [0.5f32, 1.0, 2.0, -1.0];
        let n = RmsNorm::new(Tensor::new(&w, &Device::Cpu).unwrap(), 1e-5);
        let t = Tensor::from_slice(&x, (2, 4), &Device::Cpu).unwrap();
        let want = n.forward(&t).unwrap().flatten_all().unwrap();
        let want = want.to_vec1::<f32>().unwrap();
        let mut y = x.to_vec();
        rms_rows(&mut y, 4, &n.weight_f32().unwrap(), n.eps());
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn bf16_input_gives_bf16_output_close_to_f32() {
        let x = Tensor::new(&[[1.0f32, -2.0, 3.0, 0.5]], &Device::Cpu).unwrap();
        let n = RmsNorm::new(
            Tensor::new(&[0.5f32, 1.0, 2.0, -1.0], &Device::Cpu).unwrap(),
            1e-5,
        );
        let want = n.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let y = n.forward(&x.to_dtype(DType::BF16).unwrap()).unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        let y = y.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in y[0].iter().zip(&want[0]) {
            assert!((a - b).abs() <= 1e-2 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    /// The per-head LayerNorm against the textbook formula in f64, head by head, on tensors and
    /// on slices.
    #[test]
    fn head_layer_norm_matches_the_formula_per_head() {
        let (heads, d, t) = (3usize, 4usize, 2usize);
        let x: Vec<f32> = (0..t * heads * d)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.37 + (i / d) as f32)
            .collect();
        let w: Vec<f32> = (0..heads * d).map(|i| 0.5 + 0.1 * i as f32).collect();
        let b: Vec<f32> = (0..heads * d).map(|i| 0.05 * i as f32 - 0.3).collect();
        let dev = Device::Cpu;
        let n = HeadLayerNorm::new(
            Tensor::from_slice(&w, (heads, d), &dev).unwrap(),
            Tensor::from_slice(&b, (heads, d), &dev).unwrap(),
            1e-5,
        )
        .unwrap();
        let xt = Tensor::from_slice(&x, (1, t, heads, d), &dev).unwrap();
        let got = n.forward(&xt).unwrap().flatten_all().unwrap();
        let got = got.to_vec1::<f32>().unwrap();
        let mut rows = x.clone();
        layer_norm_head_rows(&mut rows, heads, d, &w, &b, 1e-5);
        for (r, row) in x.chunks_exact(d).enumerate() {
            let h = r % heads;
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            for i in 0..d {
                let want = (row[i] as f64 - mean) / (var + 1e-5).sqrt() * w[h * d + i] as f64
                    + b[h * d + i] as f64;
                let (a, s) = (got[r * d + i] as f64, rows[r * d + i] as f64);
                assert!((a - want).abs() < 1e-5, "tensor {a} vs {want}");
                assert!((s - want).abs() < 1e-5, "slice {s} vs {want}");
            }
        }
        assert!(HeadLayerNorm::new(
            Tensor::zeros((heads, d), DType::F32, &dev).unwrap(),
            Tensor::zeros(d, DType::F32, &dev).unwrap(),
            1e-5
        )
        .is_err());
    }

    /// Gradients reach the input, the weight and the bias (the training path's norms must be
    /// differentiable): d/db of sum(y) is the number of rows per head, d/dx of sum(y) with a unit
    /// weight is zero (the mean is subtracted).
    #[test]
    fn head_layer_norm_is_differentiable() {
        let dev = Device::Cpu;
        let (heads, d) = (2usize, 4usize);
        let x = candle_core::Var::from_tensor(
            &Tensor::from_vec(
                (0..3 * heads * d)
                    .map(|i| (i as f32).sin())
                    .collect::<Vec<_>>(),
                (3, heads, d),
                &dev,
            )
            .unwrap(),
        )
        .unwrap();
        let w = candle_core::Var::from_tensor(&Tensor::ones((heads, d), DType::F32, &dev).unwrap())
            .unwrap();
        let b =
            candle_core::Var::from_tensor(&Tensor::zeros((heads, d), DType::F32, &dev).unwrap())
                .unwrap();
        let n = HeadLayerNorm::new(w.as_tensor().clone(), b.as_tensor().clone(), 1e-5).unwrap();
        let y = n.forward(x.as_tensor()).unwrap().sum_all().unwrap();
        let g = y.backward().unwrap();
        let gb = g
            .get(b.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(gb.iter().all(|&v| (v - 3.0).abs() < 1e-6), "{gb:?}");
        let gx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(gx.iter().all(|v| v.abs() < 1e-4), "{gx:?}");
        assert!(g.get(w.as_tensor()).is_some());
    }
}
