//! SSD, the state-space dual scan of Mamba-2 (Dao & Gu 2024, "Transformers are SSMs", §6), in
//! two forms that give the same outputs and the same final state:
//!
//! - [`ssd_chunked`]: the chunked form for training and prefill, as transformers'
//!   `mamba2_chunk_scan` (`models/mamba2/modeling_mamba2.py`, the torch path): within each chunk
//!   a masked, decayed `C·Bᵀ` "attention" over `dt·x`; between chunks the states at chunk
//!   boundaries by the chunk decays; the boundary state read by `C` for the off-diagonal blocks.
//! - [`ssd_step`]: one token of the recurrence (decode), as `mamba2_selective_state_update`:
//!   `h ← exp(dt·A)·h + dt·x·Bᵀ`, `y = h·C + D·x`, per head with state `h` `[P, N]`.
//!
//! Shapes: `x` `[B, T, H, P]`, `dt` `[B, T, H]` (after `softplus(dt + dt_bias)`), `a` `[H]`
//! (`−exp(A_log)`), `b`, `c` `[B, T, G, N]` (head `h` reads group `h / (H / G)`), `d` `[H]`, state
//! `[B, H, P, N]`. Everything runs in f32 on candle ops with a backward pass.

use super::{check_chunk, decay_matrix, from_chunks, into_chunks};
use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};

/// Inputs of the scan, borrowed.
#[derive(Clone, Copy)]
pub struct SsdInputs<'a> {
    pub x: &'a Tensor,
    pub dt: &'a Tensor,
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub c: &'a Tensor,
    pub d: &'a Tensor,
}

/// Sizes checked once: batch, tokens, heads, head dim, groups, state size.
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    p: usize,
    g: usize,
    n: usize,
}

fn dims(i: &SsdInputs) -> Result<Dims> {
    let (b, t, h, p) = i.x.dims4()?;
    let (_, _, g, n) = i.b.dims4()?;
    let bad = |what: &str, got: &[usize], want: &[usize]| {
        Error::Invalid(format!("SSD: {what} has shape {got:?}, expected {want:?}"))
    };
    if i.dt.dims() != [b, t, h] {
        return Err(bad("dt", i.dt.dims(), &[b, t, h]));
    }
    if g == 0 || h % g != 0 || i.b.dims() != [b, t, g, n] {
        return Err(bad(
            "B (heads a multiple of groups)",
            i.b.dims(),
            &[b, t, g, n],
        ));
    }
    if i.c.dims() != [b, t, g, n] {
        return Err(bad("C", i.c.dims(), &[b, t, g, n]));
    }
    if i.a.dims() != [h] || i.d.dims() != [h] {
        return Err(bad("A / D", i.a.dims(), &[h]));
    }
    Ok(Dims { b, t, h, p, g, n })
}

/// `[B, T, G, N]` → `[B, H, T, N]`, head `h` reading group `h / (H / G)`.
fn per_head(x: &Tensor, d: &Dims) -> Result<Tensor> {
    let rep = d.h / d.g;
    Ok(x.unsqueeze(3)?
        .broadcast_as((d.b, d.t, d.g, rep, d.n))?
        .reshape((d.b, d.t, d.h, d.n))?
        .transpose(1, 2)?
        .contiguous()?)
}

fn zero_or(state: Option<&Tensor>, d: &Dims, dev: &candle_core::Device) -> Result<Tensor> {
    match state {
        Some(s) if s.dims() == [d.b, d.h, d.p, d.n] => Ok(s.to_dtype(DType::F32)?),
        Some(s) => Err(Error::Invalid(format!(
            "SSD: state has shape {:?}, expected {:?}",
            s.dims(),
            [d.b, d.h, d.p, d.n]
        ))),
        None => Ok(Tensor::zeros((d.b, d.h, d.p, d.n), DType::F32, dev)?),
    }
}

/// The chunked scan: outputs `[B, T, H, P]` and the state after the last token. `T` need not be
/// a multiple of `chunk` (the tail is padded with `dt = 0`, which neither writes nor decays).
pub fn ssd_chunked(i: SsdInputs, state: Option<&Tensor>, chunk: usize) -> Result<(Tensor, Tensor)> {
    check_chunk(chunk)?;
    let d = dims(&i)?;
    let dev = i.x.device();
    let bh = d.b * d.h;
    let h0 = zero_or(state, &d, dev)?.reshape((bh, d.p, d.n))?;
    let x = i.x.to_dtype(DType::F32)?;
    let dt = i.dt.to_dtype(DType::F32)?.transpose(1, 2)?.contiguous()?; // [B, H, T]
    let a = i.a.to_dtype(DType::F32)?;
    // Discretised: x·dt and A·dt, per head; batch and heads merged: [BH, T, ..].
    let xh = x.transpose(1, 2)?.contiguous()?; // [B, H, T, P]
    let xdt = xh
        .broadcast_mul(&dt.unsqueeze(D::Minus1)?)?
        .reshape((bh, d.t, d.p))?;
    let adt = dt
        .broadcast_mul(&a.reshape((1, d.h, 1))?)?
        .reshape((bh, d.t))?;
    let bm = per_head(&i.b.to_dtype(DType::F32)?, &d)?.reshape((bh, d.t, d.n))?;
    let cm = per_head(&i.c.to_dtype(DType::F32)?, &d)?.reshape((bh, d.t, d.n))?;
    let (xc, ac, bc, cc) = (
        into_chunks(&xdt, chunk)?, // [BH, c, L, P]
        into_chunks(&adt, chunk)?, // [BH, c, L]
        into_chunks(&bm, chunk)?,  // [BH, c, L, N]
        into_chunks(&cm, chunk)?,
    );
    let nc = xc.dim(1)?;
    let cs = ac.cumsum(D::Minus1)?; // [BH, c, L]
                                    // 1. Within chunks: (C·Bᵀ ∘ decays) · x·dt.
    let bt = bc.transpose(2, 3)?.contiguous()?; // [BH, c, N, L]
    let scores = cc.matmul(&bt)?.mul(&decay_matrix(&cs)?)?;
    let y_diag = scores.matmul(&xc)?;
    // 2. Each chunk's own end state from zero: Σ_l exp(cs_last − cs_l)·(x·dt)_l·B_lᵀ.
    let last = cs.narrow(D::Minus1, chunk - 1, 1)?; // [BH, c, 1]
    let to_end = last.broadcast_sub(&cs)?.exp()?.unsqueeze(D::Minus1)?;
    let local = xc
        .broadcast_mul(&to_end)?
        .transpose(2, 3)?
        .contiguous()?
        .matmul(&bc)?; // [BH, c, P, N]
                       // 3. States at chunk starts: the initial state and each chunk's own, carried across chunk
                       //    decays (a decay matrix over chunk totals, with the initial state as entry 0).
    let flat = Tensor::cat(&[&h0.unsqueeze(1)?, &local], 1)?.reshape((bh, nc + 1, d.p * d.n))?;
    let totals = last.squeeze(D::Minus1)?.pad_with_zeros(D::Minus1, 1, 0)?; // [BH, c + 1]
    let carried = decay_matrix(&totals.cumsum(D::Minus1)?)?.matmul(&flat)?;
    let carried = carried.reshape((bh, nc + 1, d.p, d.n))?;
    let starts = carried.narrow(1, 0, nc)?.transpose(2, 3)?.contiguous()?; // [BH, c, N, P]
    let final_state = carried.narrow(1, nc, 1)?.reshape((d.b, d.h, d.p, d.n))?;
    // 4. Off-diagonal blocks: the chunk's start state read by C, decayed to each position.
    let y_off = cc
        .matmul(&starts)?
        .broadcast_mul(&cs.exp()?.unsqueeze(D::Minus1)?)?;
    let y = from_chunks(&(y_diag + y_off)?, d.t)?.reshape((d.b, d.h, d.t, d.p))?;
    let skip = xh.broadcast_mul(&i.d.to_dtype(DType::F32)?.reshape((1, d.h, 1, 1))?)?;
    Ok(((y + skip)?.transpose(1, 2)?.contiguous()?, final_state))
}

/// One token: `x` `[B, 1, H, P]` etc. (the scan's shapes with `T = 1`); returns `y`
/// `[B, 1, H, P]` and the new state.
pub fn ssd_step(i: SsdInputs, state: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
    let d = dims(&i)?;
    if d.t != 1 {
        return Err(Error::Invalid(format!(
            "SSD step takes one token, got {}",
            d.t
        )));
    }
    let h = zero_or(state, &d, i.x.device())?;
    let x = i.x.to_dtype(DType::F32)?.squeeze(1)?; // [B, H, P]
    let dt = i.dt.to_dtype(DType::F32)?.squeeze(1)?; // [B, H]
    let decay = dt
        .broadcast_mul(&i.a.to_dtype(DType::F32)?.unsqueeze(0)?)?
        .exp()?
        .reshape((d.b, d.h, 1, 1))?;
    let bh = per_head(&i.b.to_dtype(DType::F32)?, &d)?; // [B, H, 1, N]
    let ch = per_head(&i.c.to_dtype(DType::F32)?, &d)?;
    let xdt = x
        .broadcast_mul(&dt.unsqueeze(D::Minus1)?)?
        .unsqueeze(D::Minus1)?; // [B, H, P, 1]
    let h = (h.broadcast_mul(&decay)? + xdt.broadcast_mul(&bh)?)?;
    let y = h
        .matmul(&ch.transpose(2, 3)?.contiguous()?)?
        .squeeze(D::Minus1)?; // [B, H, P]
    let skip = x.broadcast_mul(&i.d.to_dtype(DType::F32)?.reshape((1, d.h, 1))?)?;
    Ok(((y + skip)?.unsqueeze(1)?, h))
}
