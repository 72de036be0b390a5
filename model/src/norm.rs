//! RMSNorm as HF `BitNetRMSNorm` / `LlamaRMSNorm`: `w · x / sqrt(mean(x²) + eps)` over the last
//! dim; the statistics and the normalisation are computed in f32, then (as HF does) the result is
//! cast back to the input's dtype and multiplied by the weight in that dtype (bf16 models and bf16
//! mixed-precision training; for f32 inputs the casts are no-ops). Built from differentiable
//! candle ops: candle-nn's fused `rms_norm` has no backward, so gradients would silently vanish
//! behind it during training.
//!
//! [`rms_rows`] is the same norm on f32 slices, the one host statement the CPU inference path
//! uses (and the GPU kernels are tested against through it).

use crate::error::Result;
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

    /// `[.., C]` → `[.., C]` in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
}
