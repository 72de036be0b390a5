//! BitNet b1.58 quantisers on candle tensors, matching HF transformers' `integrations/bitnet.py`
//! (`WeightQuant`, `ActQuant`) bit for bit in the forward value:
//! - weights: `s = 1 / max(mean|W|, 1e-5)` per tensor, `W_q = round(W·s).clamp(-1, 1)`;
//! - activations: `s = 127 / max(max|x|, 1e-5)` per token (last dim), `q = round(x·s).clamp(-128, 127)`;
//!
//! with PyTorch's round-half-to-even. The straight-through estimator (STE) passes gradients as the
//! identity: `x + (Q(x) − x).detach()`.
//!
//! Inputs of any float dtype are accepted (bf16 mixed-precision training): scales, rounding and
//! the STE are computed in f32 and the result is cast back to the input's dtype, so an f32 input
//! goes through exactly the f32 ops (casts to the same dtype are no-ops).
//!
//! The composed candle forms ([`act_quant_ste_composed`], [`weight_quant_ste_composed`]) are the
//! specification; contiguous f32 CPU tensors take the fused single-pass ops of `crate::fused`,
//! which give the same values bit for bit.

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
    Ok(absmean_scale_of(&v))
}

/// [`absmean_scale`] of f32 values (summed in order, in f64).
pub fn absmean_scale_of(v: &[f32]) -> f32 {
    let sum: f64 = v.iter().map(|x| x.abs() as f64).sum();
    let mean = (sum / v.len().max(1) as f64) as f32;
    1f32 / mean.max(1e-5)
}

/// Ternary values `round(W·s).clamp(-1, 1)` (as f32) and the scale `s`.
pub fn ternarize(w: &Tensor) -> Result<(Tensor, f32)> {
    let s = absmean_scale(w)?;
    let q = round_ties_even(&(w.detach().to_dtype(DType::F32)? * s as f64)?)?.clamp(-1f32, 1f32)?;
    Ok((q, s))
}

/// Forward value `W_q / s`, gradient identity (STE), in `w`'s dtype (computed in f32): the fused
/// op for contiguous f32 CPU tensors, [`weight_quant_ste_composed`] otherwise.
pub fn weight_quant_ste(w: &Tensor) -> Result<Tensor> {
    match crate::fused::applies(w) {
        true => crate::fused::weight_quant_ste(w),
        false => weight_quant_ste_composed(w),
    }
}

/// [`weight_quant_ste`] as composed candle ops (the specification; CUDA and bf16).
pub fn weight_quant_ste_composed(w: &Tensor) -> Result<Tensor> {
    let (q, s) = ternarize(w)?;
    let deq = (q / s as f64)?;
    let w32 = w.to_dtype(DType::F32)?;
    Ok((&w32 + (deq - &w32)?.detach())?.to_dtype(w.dtype())?)
}

/// Per-token int8 quantised values (as f32) and f32 scales `[.., 1]` of `x` along its last dim
/// (any float dtype; computed in f32).
pub fn act_quant(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let x = x.detach().to_dtype(DType::F32)?;
    let absmax = x.abs()?.max_keepdim(D::Minus1)?.clamp(1e-5f32, f32::MAX)?;
    let scale = Tensor::full(127f32, absmax.shape(), x.device())?.div(&absmax)?;
    let q = round_ties_even(&x.broadcast_mul(&scale)?)?.clamp(-128f32, 127f32)?;
    Ok((q, scale))
}

/// Forward value `q / s` (fake-quantised activations), gradient identity (STE), in `x`'s dtype
/// (computed in f32): the fused op for contiguous f32 CPU tensors, [`act_quant_ste_composed`]
/// otherwise.
pub fn act_quant_ste(x: &Tensor) -> Result<Tensor> {
    match crate::fused::applies(x) {
        true => crate::fused::act_quant_ste(x),
        false => act_quant_ste_composed(x),
    }
}

/// [`act_quant_ste`] as composed candle ops (the specification; CUDA and bf16).
pub fn act_quant_ste_composed(x: &Tensor) -> Result<Tensor> {
    let (q, s) = act_quant(x)?;
    let deq = q.broadcast_div(&s)?;
    let x32 = x.to_dtype(DType::F32)?;
    Ok((&x32 + (deq - &x32)?.detach())?.to_dtype(x.dtype())?)
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

    #[test]
    fn bf16_inputs_quantise_in_f32_and_pass_gradients_through() {
        let vals = [0.1f32, -0.2, 0.05, 0.3, -1.7, 2.0, 0.0, 1.23456];
        let x32 = Tensor::new(&vals, &Device::Cpu)
            .unwrap()
            .reshape((2, 4))
            .unwrap();
        // bf16 inputs: the quantised values are those of the f32 input rounded to bf16.
        let xb = Var::from_tensor(&x32.to_dtype(DType::BF16).unwrap()).unwrap();
        let x_rt = xb.as_tensor().to_dtype(DType::F32).unwrap();
        let a = act_quant_ste(xb.as_tensor()).unwrap();
        assert_eq!(a.dtype(), DType::BF16);
        let want = act_quant_ste(&x_rt)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let got = a.to_dtype(DType::F32).unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let w = weight_quant_ste(xb.as_tensor()).unwrap();
        assert_eq!(w.dtype(), DType::BF16);
        let (q, s) = ternarize(&x_rt).unwrap();
        let want_w = (q / s as f64).unwrap().to_dtype(DType::BF16).unwrap();
        assert_eq!(
            w.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            want_w
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        // Gradients reach the bf16 input through the f32 computation unchanged.
        let y = (a + w)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = y.backward().unwrap();
        let gx = g.get(xb.as_tensor()).unwrap();
        assert_eq!(gx.dtype(), DType::BF16);
        let gx = gx
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(gx, vec![2f32; 8]);
    }
}
