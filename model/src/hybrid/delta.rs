//! The gated delta rule (Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks", eq. 10), in a
//! chunked form for training and prefill and a recurrent form for decode, equal to each other.
//!
//! Per head, with `q`, `k` L2-normalised over the key dim (eps 1e-6 inside the root, fla's
//! `l2norm`), `q` then scaled by `1/√d_k`, `α_t = exp(g_t)` (`g ≤ 0`), `β_t ∈ (0, 1)`:
//!
//! ```text
//! S_t = S_{t−1} · α_t (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ        S: [d_v, d_k]
//! o_t = S_t q_t
//! ```
//!
//! The state tensors here hold `Sᵀ` (`[d_k, d_v]`, fla's and transformers' layout), so the
//! recurrent step reads `o = Sᵀᵀ q` as `qᵀ·state`. [`gated_delta_chunked`] is transformers'
//! `torch_chunk_gated_delta_rule` (`models/qwen3_next/modeling_qwen3_next.py`, itself fla's
//! `chunk_gated_delta_rule` in torch): per chunk the WY representation of the delta updates,
//! `(I + tril₋₁(β k kᵀ ∘ Γ))⁻¹` applied to `β v` and to the decayed `β k`, then a scan over chunks.
//! The unit lower-triangular inverse is the finite Neumann series `Σ_{m<L} Mᵐ` evaluated as
//! `Π (I + M^{2^i})` (log₂ L matmuls, differentiable), not a triangular solve.
//!
//! Shapes: `q`, `k` `[B, T, H, d_k]`, `v` `[B, T, H, d_v]`, `g`, `beta` `[B, T, H]`, state
//! `[B, H, d_k, d_v]`; the same number of heads for q, k and v.

use super::{check_chunk, decay_matrix, from_chunks, into_chunks, l2norm};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, D};

/// Eps of the q/k L2 norm (fla, transformers' `l2norm`).
pub const L2_EPS: f64 = 1e-6;

/// Inputs of the rule, borrowed; `q` and `k` before normalisation.
#[derive(Clone, Copy)]
pub struct DeltaInputs<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    /// Log of the decay `α`, ≤ 0.
    pub g: &'a Tensor,
    pub beta: &'a Tensor,
}

/// `(b, t, h, dk, dv)` after checking every shape.
fn dims(i: &DeltaInputs) -> Result<(usize, usize, usize, usize, usize)> {
    let (b, t, h, dk) = i.q.dims4()?;
    let (_, _, _, dv) = i.v.dims4()?;
    let ok = i.k.dims() == [b, t, h, dk]
        && i.v.dims() == [b, t, h, dv]
        && i.g.dims() == [b, t, h]
        && i.beta.dims() == [b, t, h];
    if !ok {
        return Err(Error::Invalid(format!(
            "gated delta rule: shapes q {:?}, k {:?}, v {:?}, g {:?}, beta {:?} do not agree \
             (q, k [B, T, H, dk], v [B, T, H, dv], g, beta [B, T, H])",
            i.q.dims(),
            i.k.dims(),
            i.v.dims(),
            i.g.dims(),
            i.beta.dims()
        )));
    }
    Ok((b, t, h, dk, dv))
}

fn initial(state: Option<&Tensor>, shape: [usize; 4], dev: &Device) -> Result<Tensor> {
    match state {
        Some(s) if s.dims() == shape => Ok(s.to_dtype(DType::F32)?),
        Some(s) => Err(Error::Invalid(format!(
            "gated delta rule: state has shape {:?}, expected {shape:?}",
            s.dims()
        ))),
        None => Ok(Tensor::zeros(shape.to_vec(), DType::F32, dev)?),
    }
}

/// `[B, T, H, ..]` → `[B, H, T, ..]` in f32, contiguous.
fn heads_first(x: &Tensor) -> Result<Tensor> {
    Ok(x.to_dtype(DType::F32)?.transpose(1, 2)?.contiguous()?)
}

/// Normalised, scaled q and normalised k, heads first.
fn qk(i: &DeltaInputs, dk: usize) -> Result<(Tensor, Tensor)> {
    let q = (l2norm(&heads_first(i.q)?, L2_EPS)? * (1.0 / (dk as f64).sqrt()))?;
    let k = l2norm(&heads_first(i.k)?, L2_EPS)?;
    Ok((q, k))
}

/// `(I + n)⁻¹` for `n` `[.., L, L]` strictly lower triangular: `Σ_{m<L} (−n)ᵐ` as
/// `(I − n)(I + n²)(I + n⁴)…`.
fn unit_lower_inverse(n: &Tensor) -> Result<Tensor> {
    let l = n.dim(D::Minus1)?;
    let m = n.neg()?;
    let mut r = m.broadcast_add(&Tensor::eye(l, DType::F32, n.device())?)?;
    let mut p = m;
    let mut covered = 2;
    while covered < l {
        p = p.matmul(&p)?;
        r = (&r + r.matmul(&p)?)?;
        covered *= 2;
    }
    Ok(r)
}

/// `[l, l]`: 1 strictly below the diagonal, 0 elsewhere.
fn strict_lower(l: usize, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..l * l)
        .map(|i| if i % l < i / l { 1.0 } else { 0.0 })
        .collect();
    Ok(Tensor::from_vec(v, (l, l), dev)?)
}

/// The chunked form: outputs `[B, T, H, d_v]` and the state after the last token. `T` need not
/// be a multiple of `chunk` (the tail is padded with `β = 0`, `g = 0`: no write, no decay).
pub fn gated_delta_chunked(
    i: DeltaInputs,
    state: Option<&Tensor>,
    chunk: usize,
) -> Result<(Tensor, Tensor)> {
    check_chunk(chunk)?;
    let (b, t, h, dk, dv) = dims(&i)?;
    let dev = i.q.device();
    // Batch and heads merged: [BH, T, ..] (candle's CPU matmul takes at most two batch dims).
    let bh = b * h;
    let mut s = initial(state, [b, h, dk, dv], dev)?.reshape((bh, dk, dv))?;
    let (q, k) = qk(&i, dk)?;
    let (v, g, beta) = (heads_first(i.v)?, heads_first(i.g)?, heads_first(i.beta)?);
    let (qc, kc, vc) = (
        into_chunks(&q.reshape((bh, t, dk))?, chunk)?, // [BH, c, L, dk]
        into_chunks(&k.reshape((bh, t, dk))?, chunk)?,
        into_chunks(&v.reshape((bh, t, dv))?, chunk)?, // [BH, c, L, dv]
    );
    let bc = into_chunks(&beta.reshape((bh, t))?, chunk)?.unsqueeze(D::Minus1)?; // [BH, c, L, 1]
    let cs = into_chunks(&g.reshape((bh, t))?, chunk)?.cumsum(D::Minus1)?; // [BH, c, L]
    let nc = qc.dim(1)?;
    let decays = decay_matrix(&cs)?; // [BH, c, L, L]
    let kb = kc.broadcast_mul(&bc)?;
    let kt = kc.transpose(2, 3)?.contiguous()?;
    // WY representation: T = (I + tril₋₁(βk·kᵀ ∘ Γ))⁻¹; u = T·βv, w = T·(βk ∘ exp(cs)).
    let n = kb
        .matmul(&kt)?
        .mul(&decays)?
        .broadcast_mul(&strict_lower(chunk, dev)?)?;
    let tinv = unit_lower_inverse(&n)?;
    let u = tinv.matmul(&vc.broadcast_mul(&bc)?)?;
    let ecs = cs.exp()?.unsqueeze(D::Minus1)?;
    let w = tinv.matmul(&kb.broadcast_mul(&ecs)?)?;
    let attn = qc.matmul(&kt)?.mul(&decays)?; // causal, diagonal included
    let qd = qc.broadcast_mul(&ecs)?;
    let last = cs.narrow(D::Minus1, chunk - 1, 1)?; // [BH, c, 1]
    let kd = kc
        .broadcast_mul(&last.broadcast_sub(&cs)?.exp()?.unsqueeze(D::Minus1)?)?
        .transpose(2, 3)?
        .contiguous()?; // [BH, c, dk, L]
    let chunk_decay = last.exp()?.unsqueeze(D::Minus1)?; // [BH, c, 1, 1]
    let mut outs = Vec::with_capacity(nc);
    for c in 0..nc {
        let at = |x: &Tensor| x.narrow(1, c, 1).and_then(|x| x.squeeze(1));
        let v_new = (at(&u)? - at(&w)?.matmul(&s)?)?; // [BH, L, dv]
        outs.push((at(&qd)?.matmul(&s)? + at(&attn)?.matmul(&v_new)?)?);
        s = (s.broadcast_mul(&at(&chunk_decay)?)? + at(&kd)?.matmul(&v_new)?)?;
    }
    let o = from_chunks(&Tensor::stack(&outs, 1)?, t)?.reshape((b, h, t, dv))?;
    Ok((o.transpose(1, 2)?.contiguous()?, s.reshape((b, h, dk, dv))?))
}

/// The recurrent form, token by token (decode; any `T`): outputs `[B, T, H, d_v]` and the state.
pub fn gated_delta_recurrent(i: DeltaInputs, state: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
    let (b, t, h, dk, dv) = dims(&i)?;
    let mut s = initial(state, [b, h, dk, dv], i.q.device())?;
    let (q, k) = qk(&i, dk)?; // [B, H, T, dk]
    let (v, g, beta) = (heads_first(i.v)?, heads_first(i.g)?, heads_first(i.beta)?);
    let mut outs = Vec::with_capacity(t);
    for j in 0..t {
        let row = |x: &Tensor| x.narrow(2, j, 1); // [B, H, 1, ..]
        let (qj, kj, vj) = (row(&q)?, row(&k)?, row(&v)?);
        let alpha = row(&g)?.exp()?.unsqueeze(D::Minus1)?; // [B, H, 1, 1]
        let bj = row(&beta)?.unsqueeze(D::Minus1)?;
        s = s.broadcast_mul(&alpha)?;
        // Delta: what the decayed state predicts for k, replaced by v at rate β.
        let delta = (vj - kj.matmul(&s)?)?.broadcast_mul(&bj)?; // [B, H, 1, dv]
        s = (s + kj.transpose(2, 3)?.contiguous()?.matmul(&delta)?)?;
        outs.push(qj.matmul(&s)?);
    }
    let o = Tensor::cat(&outs, 2)?; // [B, H, T, dv]
    Ok((o.transpose(1, 2)?.contiguous()?, s))
}
