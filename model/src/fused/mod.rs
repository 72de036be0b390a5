//! Fused CPU training ops: candle custom ops (`CustomOp1` / `CustomOp2`) that compute in one pass
//! over rows what a chain of small candle elementwise ops computes, each with a backward that is
//! itself one pass (not a chain of candle ops). Each must match the composed candle form it
//! replaces, which stays the specification and the path for CUDA, bf16 and strided tensors:
//! - [`act_quant_ste`] / [`weight_quant_ste`]: `quant::act_quant_ste` / `quant::weight_quant_ste`
//!   bit for bit in the forward value (same f32 operations in the same order), gradient identity;
//! - [`rms_norm`]: `norm::RmsNorm::forward` in f32 (within rounding of the row sums), with `dx`
//!   and `dg`;
//! - [`bitlinear`]: `act_quant_ste(x) · weight_quant_ste(w)ᵀ` with the forward in integers
//!   (the inference kernels) and the STE backward as two matmuls, within f32 rounding;
//! - [`relu2`] / [`gated_relu2`]: the MLP's squared ReLU `relu(x)²` and `relu(g)²·u`, bit for bit
//!   with the composed ops, forward and gradients.
//!
//! The public wrappers here take tensors that [`applies`] accepts (f32, contiguous, on the CPU);
//! the callers (`quant`, `norm`, `layer`) fall back to the composed ops otherwise.

mod act;
mod bitlinear;
mod quant;
mod rms;
#[cfg(test)]
mod tests;

pub use act::{gated_relu2, gated_relu2_or_composed, relu2, relu2_or_composed};
pub use bitlinear::bitlinear;
pub use quant::{act_quant_ste, weight_quant_ste};
pub use rms::rms_norm;

use crate::error::{Error, Result};
use candle_core::{CpuStorage, DType, Layout, Storage, Tensor};
use rayon::prelude::*;

/// Elements per rayon task: rows are grouped into blocks of about this many values.
const BLOCK_ELEMS: usize = 16 * 1024;

/// Whether the fused CPU form applies to `t`: f32, contiguous, on the CPU.
pub fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()
}

/// An error unless [`applies`] accepts `t` (the public wrappers' precondition).
pub(crate) fn check(t: &Tensor, what: &str) -> Result<()> {
    match applies(t) {
        true => Ok(()),
        false => Err(Error::Invalid(format!(
            "fused {what}: needs a contiguous f32 CPU tensor, got {:?} on {:?}",
            t.dtype(),
            t.device().location()
        ))),
    }
}

/// The f32 values of a CPU storage under a contiguous layout `l` (a custom op's operand).
pub(crate) fn op_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let v = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: operand is not contiguous"),
    }
}

/// The f32 values of a tensor's storage (from `Tensor::storage_and_layout`): CPU and
/// contiguous, or an error.
pub(crate) fn cpu_slice<'a>(
    s: &'a Storage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let Storage::Cpu(c) = s else {
        candle_core::bail!("{op}: the fused form runs on the CPU only")
    };
    op_slice(c, l, op)
}

/// The number of values per block for rows of `cols` values: whole rows, about
/// [`BLOCK_ELEMS`] values (one row at least).
pub(crate) fn block_len(cols: usize) -> usize {
    let cols = cols.max(1);
    (BLOCK_ELEMS / cols).max(1) * cols
}

/// `f(in_block, out_block)` over blocks of whole rows of `cols` values, in parallel when there
/// is more than one block.
pub(crate) fn par_rows<F>(x: &[f32], out: &mut [f32], cols: usize, f: F)
where
    F: Fn(&[f32], &mut [f32]) + Sync,
{
    let block = block_len(cols);
    if x.len() <= block {
        f(x, out);
    } else {
        out.par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .for_each(|(o, i)| f(i, o));
    }
}

/// The last dimension of `l`'s shape (1 for a scalar).
pub(crate) fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}
