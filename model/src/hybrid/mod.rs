//! Hybrid layers (issue #23): linear-recurrent token mixers that stand beside attention in a
//! Tritter model (`Config::hybrid`'s `layer_types`; the decoder layer in `layer.rs` holds one
//! of them where attention would be).
//!
//! - [`mamba2`]: the Mamba-2 block (Dao & Gu 2024, "Transformers are SSMs"), as transformers'
//!   `Mamba2Block` / `Mamba2Mixer` (same tensor names and shapes), over [`ssd`]: the SSD chunked
//!   scan (training, prefill) and its O(1)-state recurrent step (decode).
//!   Must match: transformers' `Mamba2Model` with dense projections
//!   (`model/tests/golden_hybrid.rs`, fixture by `scripts/golden_hybrid.py`).
//! - [`gated_deltanet`]: the Gated DeltaNet layer (Yang, Kautz & Hatamizadeh 2024, "Gated Delta
//!   Networks: Improving Mamba2 with Delta Rule"), as fla-org's `fla.layers.GatedDeltaNet`, over
//!   [`delta`]: the gated delta rule in chunked (WY / UT transform) and recurrent form.
//!   Must match: a naive per-token loop of the recurrence, and transformers' torch statement of
//!   the rule (`torch_recurrent_gated_delta_rule`, the same fixture script).
//!
//! Every linear is a [`BitLinear`]: ternary (latent weights with the straight-through quantiser,
//! as every other linear of the model) or dense ([`Projection`]), the dense form being the one
//! the reference checks use. Scans, convolutions and norms run in f32 on candle ops with a
//! backward pass, so the layers train through autograd.
//!
//! This file holds what the children share: the projection mode, the depthwise causal
//! convolution with its carried state, softplus, L2 normalisation and the within-chunk decay
//! matrix.

pub mod delta;
pub mod gated_deltanet;
pub mod mamba2;
pub mod ssd;

#[cfg(test)]
mod depth_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use crate::bitlinear::{BitLinear, BitWeights};
use crate::error::{Error, Result};
use crate::source::WeightSource;
use candle_core::{DType, Device, Tensor, D};

pub use gated_deltanet::{GatedDeltaNet, GdnConfig, GdnState};
pub use mamba2::{Mamba2Block, Mamba2Config, Mamba2Mixer, Mamba2State};

/// How a hybrid layer's linears are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    /// BitNet b1.58: the source's BitLinear weights (latent and fake-quantised when training,
    /// packed when loaded for inference).
    Ternary,
    /// Full-precision weights used as they are (reference checks, full-precision baselines).
    Dense,
}

/// The linear `name` (`{name}.weight`, `[out, inp]`, no bias) in the given mode.
pub(crate) fn linear(
    src: &mut dyn WeightSource,
    mode: Projection,
    name: &str,
    out: usize,
    inp: usize,
) -> Result<BitLinear> {
    let w = match mode {
        Projection::Ternary => src.bitlinear(name, out, inp)?,
        Projection::Dense => BitWeights::Dense(src.dense(&format!("{name}.weight"), &[out, inp])?),
    };
    Ok(BitLinear::new(w, None))
}

/// A depthwise conv weight stored as PyTorch's `Conv1d(groups = channels)` does, `[c, 1, k]`,
/// returned as `[c, k]`.
pub(crate) fn conv_weight(
    src: &mut dyn WeightSource,
    name: &str,
    channels: usize,
    kernel: usize,
) -> Result<Tensor> {
    Ok(src
        .dense(name, &[channels, 1, kernel])?
        .reshape((channels, kernel))?)
}

/// Depthwise causal convolution over time with a carried state, as PyTorch's
/// `Conv1d(groups = C, padding = k - 1)` cut to the first `T` outputs when `state` is zeros.
///
/// `x` `[B, T, C]`, `w` `[C, k]`, `bias` `[C]`, `state` `[B, k - 1, C]` (the last `k - 1` inputs
/// before `x`; zeros when `None`). Returns the outputs `[B, T, C]` (before any activation) and
/// the state after `x`.
pub(crate) fn causal_conv(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    state: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (b, t, c) = x.dims3()?;
    let (wc, k) = w.dims2()?;
    if wc != c || k == 0 {
        return Err(Error::Invalid(format!(
            "causal conv: input has {c} channels, weight is [{wc}, {k}]"
        )));
    }
    let past = match state {
        Some(s) => {
            if s.dims() != [b, k - 1, c] {
                return Err(Error::Invalid(format!(
                    "causal conv: state has shape {:?}, expected [{b}, {}, {c}]",
                    s.dims(),
                    k - 1
                )));
            }
            s.to_dtype(DType::F32)?
        }
        None => Tensor::zeros((b, k - 1, c), DType::F32, x.device())?,
    };
    let xp = Tensor::cat(&[&past, &x.to_dtype(DType::F32)?], 1)?;
    let mut y = xp
        .narrow(1, 0, t)?
        .broadcast_mul(&w.narrow(1, 0, 1)?.t()?)?;
    for j in 1..k {
        y = (y + xp
            .narrow(1, j, t)?
            .broadcast_mul(&w.narrow(1, j, 1)?.t()?)?)?;
    }
    if let Some(bias) = bias {
        y = y.broadcast_add(bias)?;
    }
    let new_state = xp.narrow(1, t, k - 1)?;
    Ok((y, new_state))
}

/// `log(1 + exp(x))`, stated as `max(x, 0) + log(1 + exp(-|x|))` so it neither overflows nor
/// loses the tail (PyTorch's `F.softplus` returns `x` above 20; the two differ by < 3e-9 there).
pub(crate) fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}

/// `x / sqrt(Σ x² + eps)` over the last dim (fla's `l2norm`, eps 1e-6).
pub(crate) fn l2norm(x: &Tensor, eps: f64) -> Result<Tensor> {
    let inv = (x.sqr()?.sum_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?)
}

/// RMS normalisation over the last dim in f32 (no weight): `x / sqrt(mean(x²) + eps)`.
pub(crate) fn rms(x: &Tensor, eps: f64) -> Result<Tensor> {
    let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?)
}

/// Within-chunk decays from cumulative log-decays `cs` `[.., L]`: `out[.., i, j] = exp(cs[i] −
/// cs[j])` for `j ≤ i`, 0 above the diagonal (masked to −∞ before the exponential, so nothing
/// overflows and no gradient reaches the masked entries).
pub(crate) fn decay_matrix(cs: &Tensor) -> Result<Tensor> {
    let l = cs.dim(D::Minus1)?;
    let diff = cs
        .unsqueeze(D::Minus1)?
        .broadcast_sub(&cs.unsqueeze(D::Minus2)?)?;
    Ok(diff.broadcast_add(&upper_neg_inf(l, cs.device())?)?.exp()?)
}

/// `[l, l]`: 0 on and below the diagonal, −∞ above it.
fn upper_neg_inf(l: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..l * l)
        .map(|i| {
            if i % l > i / l {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(v, (l, l), device)?)
}

/// Pads dim 1 of `x` with zeros to a multiple of `chunk` and splits it: `[BH, T, ..]` →
/// `[BH, T'/chunk, chunk, ..]`. (Batch and heads are merged into one dim: candle's CPU matmul
/// takes at most two batch dims.)
pub(crate) fn into_chunks(x: &Tensor, chunk: usize) -> Result<Tensor> {
    let t = x.dim(1)?;
    let pad = (chunk - t % chunk) % chunk;
    let x = if pad > 0 {
        x.pad_with_zeros(1, 0, pad)?
    } else {
        x.clone()
    };
    let mut dims = x.dims().to_vec();
    dims[1] = (t + pad) / chunk;
    dims.insert(2, chunk);
    Ok(x.reshape(dims)?)
}

/// The inverse of [`into_chunks`]: `[BH, c, L, ..]` → `[BH, t, ..]` (padding dropped).
pub(crate) fn from_chunks(x: &Tensor, t: usize) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let l = dims.remove(2);
    dims[1] *= l;
    Ok(x.reshape(dims)?.narrow(1, 0, t)?)
}

/// Checks a chunk size.
pub(crate) fn check_chunk(chunk: usize) -> Result<()> {
    if chunk == 0 {
        return Err(Error::Invalid("chunk size must be at least 1".into()));
    }
    Ok(())
}
