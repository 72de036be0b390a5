//! BitLinear, the BitNet b1.58 linear layer (HF transformers `integrations/bitnet.py`).
//!
//! Two forms:
//! - **Latent** (training and QAT): full-precision master weights `[out, in]`; the forward uses
//!   absmean ternary weights and per-token absmax int8 activations, fake-quantised, with
//!   straight-through gradients (HF `AutoBitLinear`, `online`). For f32 CPU tensors the whole
//!   product is one op (`fused::bitlinear`: integer forward by the packed kernels, STE backward).
//! - **Packed** (inference): 2-bit weights held by `tritter_kernels::TernaryMatrix` and never
//!   expanded to floats; `y = (x_q · W_q) / (s_x · weight_scale)` (HF `BitLinear`, `offline`).
//!   For HF `autobitlinear` / `offline` checkpoints (`y = x_q·W_q / s_x · weight_scale`) the loader
//!   stores the reciprocal of the checkpoint's scale, so one kernel call serves both.
//!
//! An optional RMSNorm before quantisation mirrors HF's `use_rms_norm`.
//!
//! The output has the input's dtype: weights are cast to it for the matmul (bf16 models and bf16
//! mixed-precision training over f32 master weights; the casts are no-ops for f32).

use crate::error::{Error, Result};
use crate::norm::RmsNorm;
use crate::quant;
use candle_core::{DType, Tensor};
use std::sync::Arc;
use tritter_kernels::TernaryMatrix;

/// Packed inference weights. Clones share the packed matrix (the CPU inference model built from
/// a [`crate::Transformer`] holds the loader's bytes, not a copy).
#[derive(Debug, Clone)]
pub struct PackedLinear {
    w: Arc<TernaryMatrix>,
    /// Divisor applied with the activation scale: `y = acc / (s_x · weight_scale)`.
    weight_scale: f32,
}

impl PackedLinear {
    pub fn new(w: TernaryMatrix, weight_scale: f32) -> Result<Self> {
        if !(weight_scale.is_finite() && weight_scale != 0.0) {
            return Err(Error::Invalid(format!(
                "weight_scale {weight_scale} is not a finite non-zero number"
            )));
        }
        Ok(Self {
            w: Arc::new(w),
            weight_scale,
        })
    }

    /// Quantises latent weights `[out, in]` with absmean (HF `WeightQuant`).
    pub fn from_latent(w: &Tensor) -> Result<Self> {
        let (n, k) = w.dims2()?;
        let (q, s) = quant::ternarize(w)?;
        let vals: Vec<i8> = q
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| v as i8)
            .collect();
        let m =
            TernaryMatrix::from_ternary(&vals, n, k).map_err(|e| Error::Kernel(e.to_string()))?;
        Self::new(m, s)
    }

    pub fn matrix(&self) -> &TernaryMatrix {
        &self.w
    }
    pub fn weight_scale(&self) -> f32 {
        self.weight_scale
    }

    /// `x` `[.., in]` → `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        if k != self.w.k() {
            return Err(Error::Invalid(format!(
                "BitLinear input has {k} features, weights expect {}",
                self.w.k()
            )));
        }
        let m = x.elem_count() / k.max(1);
        let xv = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; m * self.w.n()];
        tritter_kernels::ternary_matmul(&self.w, self.weight_scale, &xv, m, &mut out)
            .map_err(|e| Error::Kernel(e.to_string()))?;
        let mut od = dims;
        if let Some(last) = od.last_mut() {
            *last = self.w.n();
        }
        Ok(Tensor::from_vec(out, od, x.device())?.to_dtype(x.dtype())?)
    }
}

/// The weights of a BitLinear in one of its two forms.
#[derive(Debug, Clone)]
pub enum BitWeights {
    Latent(Tensor),
    Packed(PackedLinear),
    /// Full-precision weights used as they are (no quantisation of weights or activations): the
    /// trainer's non-quantised baseline and full-precision warm-up.
    Dense(Tensor),
}

/// A BitLinear layer (no bias).
#[derive(Debug, Clone)]
pub struct BitLinear {
    weights: BitWeights,
    norm: Option<RmsNorm>,
}

impl BitLinear {
    pub fn new(weights: BitWeights, norm: Option<RmsNorm>) -> Self {
        Self { weights, norm }
    }

    pub fn weights(&self) -> &BitWeights {
        &self.weights
    }

    pub fn norm(&self) -> Option<&RmsNorm> {
        self.norm.as_ref()
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let normed;
        let x = match &self.norm {
            Some(n) => {
                normed = n.forward(x)?;
                &normed
            }
            None => x,
        };
        match &self.weights {
            BitWeights::Packed(p) => p.forward(x),
            BitWeights::Latent(w) if crate::fused::applies(x) && crate::fused::applies(w) => {
                // f32 on the CPU: one op, the product in integers (`fused::bitlinear`).
                crate::fused::bitlinear(x, w)
            }
            BitWeights::Latent(w) => {
                // Quantised in f32 from the master weights, multiplied in the activations' dtype.
                let xq = quant::act_quant_ste(x)?;
                let wq = quant::weight_quant_ste(w)?.to_dtype(x.dtype())?;
                Ok(xq.broadcast_matmul(&wq.t()?)?)
            }
            BitWeights::Dense(w) => Ok(x.broadcast_matmul(&w.to_dtype(x.dtype())?.t()?)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn packed_and_latent_forms_agree() {
        let (n, k, m) = (12, 20, 3);
        let w = Tensor::from_vec(lcg(n * k, 1), (n, k), &Device::Cpu).unwrap();
        let x = Tensor::from_vec(lcg(m * k, 2), (m, k), &Device::Cpu).unwrap();
        let latent = BitLinear::new(BitWeights::Latent(w.clone()), None);
        let packed = BitLinear::new(
            BitWeights::Packed(PackedLinear::from_latent(&w).unwrap()),
            None,
        );
        let a = latent
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = packed
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-5 * (1.0 + u.abs()), "{u} vs {v}");
        }
    }

    #[test]
    fn packed_matches_naive_integer_statement() {
        let (n, k) = (8, 16);
        let wv = lcg(n * k, 3);
        let w = Tensor::from_vec(wv.clone(), (n, k), &Device::Cpu).unwrap();
        let x: Vec<f32> = lcg(k, 4);
        let p = PackedLinear::from_latent(&w).unwrap();
        let y = p
            .forward(&Tensor::from_vec(x.clone(), (1, k), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mean = wv.iter().map(|v| v.abs() as f64).sum::<f64>() / wv.len() as f64;
        let ws = 1f32 / (mean as f32);
        let xm = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let xs = 127f32 / xm;
        for r in 0..n {
            let acc: i32 = (0..k)
                .map(|c| {
                    let wq = (wv[r * k + c] * ws).round_ties_even().clamp(-1.0, 1.0) as i32;
                    let xq = (x[c] * xs).round_ties_even().clamp(-128.0, 127.0) as i32;
                    wq * xq
                })
                .sum();
            assert_eq!(y[r], acc as f32 / (xs * ws));
        }
    }
}
