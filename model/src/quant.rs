//! BitNet b1.58 quantisers on candle tensors, matching HF transformers' `integrations/bitnet.py`
//! (`WeightQuant`, `ActQuant`) bit for bit in the forward value:
//! - weights: `s = 1 / max(mean|W|, 1e-5)` per tensor, `W_q = round(W·s).clamp(-1, 1)`;
//! - activations: `s = 127 / max(max|x|, 1e-5)` per token (last dim), `q = round(x·s).clamp(-128, 127)`;
//!
//! with PyTorch's round-half-to-even. The straight-through estimator (STE) passes gradients as the
//! identity: `x + (Q(x) − x).detach()`.

use crate::error::Result;
use candle_core::{DType, Tensor, D};

/// 1.5 · 2^23: adding then subtracting it rounds an f32 of magnitude < 2^22 to an integer with
/// the FPU's round-half-to-even.
const ROUND_MAGIC: f64 = 12_582_912.0;

/// Round half to even, elementwise, for f32 tensors with |x| < 2^22 (larger values keep their
/// sign and are only used clamped here).
pub fn round_ties_even(x: &Tensor) -> Result<Tensor> {
    Ok(((x + ROUND_MAGIC)? - ROUND_MAGIC)?)
}

/// The per-tensor absmean scale `1 / max(mean|W|, 1e-5)` (mean accumulated in f64).
pub fn absmean_scale(w: &Tensor) -> Result<f32> {
    let v = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let sum: f64 = v.iter().map(|x| x.abs() as f64).sum();
    let mean = (sum / v.len().max(1) as f64) as f32;
    Ok(1f32 / mean.max(1e-5))
}

/// Ternary values `round(W·s).clamp(-1, 1)` (as f32) and the scale `s`.
pub fn ternarize(w: &Tensor) -> Result<(Tensor, f32)> {
    let s = absmean_scale(w)?;
    let q = round_ties_even(&(w.detach().to_dtype(DType::F32)? * s as f64)?)?.clamp(-1f32, 1f32)?;
    Ok((q, s))
}

/// Forward value `W_q / s`, gradient identity (STE).
pub fn weight_quant_ste(w: &Tensor) -> Result<Tensor> {
    let (q, s) = ternarize(w)?;
    let deq = (q / s as f64)?;
    Ok((w + (deq - w)?.detach())?)
}

/// Per-token int8 quantised values (as f32) and scales `[.., 1]` of `x` along its last dim.
pub fn act_quant(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let x = x.detach();
    let absmax = x.abs()?.max_keepdim(D::Minus1)?.clamp(1e-5f32, f32::MAX)?;
    let scale = Tensor::full(127f32, absmax.shape(), x.device())?.div(&absmax)?;
    let q = round_ties_even(&x.broadcast_mul(&scale)?)?.clamp(-128f32, 127f32)?;
    Ok((q, scale))
}

/// Forward value `q / s` (fake-quantised activations), gradient identity (STE).
pub fn act_quant_ste(x: &Tensor) -> Result<Tensor> {
    let (q, s) = act_quant(x)?;
    let deq = q.broadcast_div(&s)?;
    Ok((x + (deq - x)?.detach())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn rounding_is_half_to_even() {
        let x = Tensor::new(
            &[0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 126.5, 127.5],
            &Device::Cpu,
        )
        .unwrap();
        let r = round_ties_even(&x).unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<f32> = [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 126.5, 127.5]
            .iter()
            .map(|v| v.round_ties_even())
            .collect();
        assert_eq!(r, want);
    }

    #[test]
    fn act_quant_matches_the_scalar_statement() {
        let vals = [0.3f32, -1.7, 2.0, 0.0, -0.01, 1.23456];
        let x = Tensor::new(&vals, &Device::Cpu)
            .unwrap()
            .reshape((1, 6))
            .unwrap();
        let (q, s) = act_quant(&x).unwrap();
        let s = s.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        let m = 2.0f32;
        assert_eq!(s, 127f32 / m);
        let want: Vec<f32> = vals
            .iter()
            .map(|v| (v * (127f32 / m)).round_ties_even())
            .collect();
        assert_eq!(q.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        // all-zero row: scale from the 1e-5 clamp, values 0
        let z = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let (q, s) = act_quant(&z).unwrap();
        assert_eq!(q.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        assert_eq!(
            s.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0],
            127f32 / 1e-5
        );
    }

    #[test]
    fn ternarize_matches_the_scalar_statement() {
        let vals = [0.1f32, -0.2, 0.05, 0.0, 0.3, -0.04];
        let w = Tensor::new(&vals, &Device::Cpu).unwrap();
        let (q, s) = ternarize(&w).unwrap();
        let mean = vals.iter().map(|v| v.abs()).sum::<f32>() / 6.0;
        assert!((s - 1.0 / mean).abs() < 1e-5);
        let want: Vec<f32> = vals
            .iter()
            .map(|v| (v * s).round_ties_even().clamp(-1.0, 1.0))
            .collect();
        assert_eq!(q.to_vec1::<f32>().unwrap(), want);
    }

    #[test]
    fn ste_passes_gradients_straight_through() {
        let w = Var::new(&[0.1f32, -0.2, 0.05, 0.3], &Device::Cpu).unwrap();
        let coef = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu).unwrap();
        let y = (weight_quant_ste(w.as_tensor()).unwrap() * &coef)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = y.backward().unwrap();
        let gw = g.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(gw, vec![1., 2., 3., 4.]);
        let x = Var::new(&[[0.1f32, -0.2, 0.05, 0.3]], &Device::Cpu).unwrap();
        let y = (act_quant_ste(x.as_tensor()).unwrap().broadcast_mul(&coef))
            .unwrap()
            .sum_all()
            .unwrap();
        let g = y.backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(gx, vec![vec![1., 2., 3., 4.]]);
    }
}
