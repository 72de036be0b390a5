//! RMSNorm as HF `BitNetRMSNorm` / `LlamaRMSNorm`: `w · x / sqrt(mean(x²) + eps)` over the last
//! dim, computed in f32. Built from differentiable candle ops: candle-nn's fused `rms_norm` has no
//! backward, so gradients would silently vanish behind it during training.

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

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x32 = x.to_dtype(DType::F32)?;
        let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (var + self.eps)?.sqrt()?.recip()?;
        Ok(x32.broadcast_mul(&inv)?.broadcast_mul(&self.weight)?)
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
}
