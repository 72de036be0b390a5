//! Fused softmax attention for CPU f32 training, with its own backward: a candle [`CustomOp3`]
//! over q `[B, H, T, D]` and k/v `[B, H_kv, T, D]` (grouped-query: query head `h` reads key/value
//! head `h / (H / H_kv)`, never copied) whose mask is a description, [`TrainMask`], not a `T×T`
//! tensor. It must equal [`composed_attention`] — the candle ops the layer runs elsewhere (CUDA,
//! bf16, decode with a cache) — in value and in the gradients of q, k and v
//! (`train_op_tests.rs`), and [`TrainMask`] must allow exactly what [`MaskSpec::mask`] allows per
//! document (`attn::packed`'s semantics: positions counted from the document's start, prefix-LM
//! prefixes from the flags, never across documents).
//!
//! The forward keeps each row's logsumexp; the backward recomputes the probabilities from it and
//! forms `dS = P ⊙ (dP − rowsum(dO ⊙ O))` (`train_op_kernel.rs`).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Tensor, D};

use super::mode::{AttentionMode, MaskSpec};
use super::packed::PackedSpec;
use super::train_op_kernel::{self as kernel, Dims, KeyRanges, Rows};
use crate::data::chat::FLAG_PREFIX;
use crate::error::{Error, Result};

/// Which keys each query may see, per batch row: for every query position at most two key
/// ranges (the sinks, then the band up to the query's reach), absolute positions.
#[derive(Clone, Debug)]
pub struct TrainMask {
    t: usize,
    /// `batches · t` entries; `batches` is 1 when every batch row shares the mask.
    rows: Arc<[KeyRanges]>,
    batches: usize,
}

/// The key ranges of the queries of one document `start..end` (`mode`, `window` with `sinks`,
/// a `prefix`-long bidirectional prefix under prefix-LM), appended to `out`: the intervals
/// [`MaskSpec::mask`] allows, positions counted from the document's start.
fn segment_rows(spec: &MaskSpec, start: usize, end: usize, out: &mut Vec<KeyRanges>) {
    let len = end - start;
    let abs = |x: usize| (start + x) as u32;
    for rq in 0..len {
        let reach = match spec.mode {
            AttentionMode::Causal => rq + 1,
            AttentionMode::Bidirectional | AttentionMode::Embedding => len,
            AttentionMode::PrefixLm => spec.prefix_len.max(rq + 1).min(len),
        };
        let ranges = if spec.window == 0 {
            [(abs(0), abs(0)), (abs(0), abs(reach))]
        } else {
            let r = spec.window - spec.sinks;
            let lo = (rq + 1).saturating_sub(r);
            let hi = (rq + r).min(reach);
            let sk = spec.sinks.min(reach);
            if sk >= lo {
                [(abs(0), abs(0)), (abs(0), abs(hi.max(sk)))]
            } else {
                [(abs(0), abs(sk)), (abs(lo), abs(hi))]
            }
        };
        out.push(ranges);
    }
}

fn spec_of(
    mode: AttentionMode,
    window: usize,
    sinks: usize,
    prefix_len: usize,
) -> Result<MaskSpec> {
    let spec = MaskSpec {
        mode,
        window,
        sinks,
        prefix_len,
        doc_ids: None,
    };
    // Validation only (sinks below the window): the same errors as the inference path.
    spec.mask().map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(spec)
}

impl TrainMask {
    /// One sequence of `t` positions masked by `mode`, `window` and `sinks` (what the layer's
    /// built-in mask applies to a forward without a cache), shared by every batch row.
    pub fn single(mode: AttentionMode, window: usize, sinks: usize, t: usize) -> Result<Self> {
        let spec = spec_of(mode, window, sinks, 0)?;
        let mut rows = Vec::with_capacity(t);
        segment_rows(&spec, 0, t, &mut rows);
        Ok(Self {
            t,
            rows: rows.into(),
            batches: 1,
        })
    }

    /// Packed rows of document ids `docs` and flags `flags` (one `Vec` per batch row, `T` long
    /// each; a row's flags may be empty: no prefix), each document masked alone as
    /// [`super::packed::blocked_row`] masks it.
    pub fn packed(spec: PackedSpec, docs: &[Vec<u32>], flags: &[Vec<u32>]) -> Result<Self> {
        let t = docs.first().map_or(0, Vec::len);
        let mut rows = Vec::with_capacity(docs.len() * t);
        for (b, d) in docs.iter().enumerate() {
            if d.len() != t {
                return Err(Error::Invalid(format!(
                    "packed row {b} has {} document ids, row 0 has {t}",
                    d.len()
                )));
            }
            let f = flags.get(b).map_or(&[][..], Vec::as_slice);
            let mut start = 0;
            while start < t {
                let end = start + d[start..].iter().take_while(|&&x| x == d[start]).count();
                let prefix = f
                    .get(start..end)
                    .map_or(0, |f| f.iter().filter(|&&x| x & FLAG_PREFIX != 0).count());
                let s = spec_of(spec.mode, spec.window, spec.sinks, prefix)?;
                segment_rows(&s, start, end, &mut rows);
                start = end;
            }
        }
        Ok(Self {
            t,
            rows: rows.into(),
            batches: docs.len(),
        })
    }

    /// Positions per row.
    pub fn len(&self) -> usize {
        self.t
    }

    /// Whether the rows have no position.
    pub fn is_empty(&self) -> bool {
        self.t == 0
    }

    fn ranges(&self, b: usize) -> &[KeyRanges] {
        let b = if self.batches == 1 { 0 } else { b };
        &self.rows[b * self.t..(b + 1) * self.t]
    }

    fn rows(&self, batch: usize) -> candle_core::Result<Rows<'_>> {
        if self.batches != 1 && self.batches != batch {
            candle_core::bail!(
                "fused attention: a mask of {} rows for a batch of {batch}",
                self.batches
            );
        }
        Ok(Rows {
            ranges: &self.rows,
            shared: self.batches == 1,
        })
    }

    /// Whether query `q` of batch row `b` may see key `k`.
    pub fn allowed(&self, b: usize, q: usize, k: usize) -> bool {
        let k = k as u32;
        self.ranges(b)[q].iter().any(|&(lo, hi)| lo <= k && k < hi)
    }

    /// The mask as the composed path takes it: `[B, T, T]` u8, 1 = hidden.
    pub fn blocked(&self, batch: usize, device: &Device) -> Result<Tensor> {
        let t = self.t;
        let mut out = Vec::with_capacity(batch * t * t);
        for b in 0..batch {
            for q in 0..t {
                out.extend((0..t).map(|k| u8::from(!self.allowed(b, q, k))));
            }
        }
        Ok(Tensor::from_vec(out, (batch, t, t), device)?)
    }
}

/// The mask a layer's forward without a cache is given in place of its built-in one.
#[derive(Clone, Copy, Debug)]
pub enum KeyMask<'a> {
    /// `[B, T, T]` u8, 1 = hidden (the composed path only).
    Blocked(&'a Tensor),
    /// A description the fused op reads (the composed path builds its tensor).
    Train(&'a TrainMask),
}

/// The op; the forward's logsumexp per query row waits here for the backward.
struct TrainAttention {
    scale: f32,
    mask: TrainMask,
    lse: Mutex<Vec<f32>>,
}

fn dims(q: &Shape, k: &Shape) -> candle_core::Result<Dims> {
    let (b, h, t, d) = q.dims4()?;
    let (bk, hkv, s, dk) = k.dims4()?;
    if bk != b || dk != d || s != t || hkv == 0 || h % hkv != 0 {
        candle_core::bail!("fused attention: q {q:?} and k/v {k:?} do not fit");
    }
    Ok(Dims { b, h, hkv, t, d })
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("fused attention: f32 only");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fused attention: a non-contiguous input"),
    }
}

impl CustomOp3 for TrainAttention {
    fn name(&self) -> &'static str {
        "tritter-train-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dm = dims(l1.shape(), l2.shape())?;
        if l3.shape() != l2.shape() || self.mask.t != dm.t {
            candle_core::bail!("fused attention: v or the mask does not fit k");
        }
        let (q, k, v) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let mut out = vec![0f32; dm.b * dm.h * dm.t * dm.d];
        let mut lse = vec![0f32; dm.b * dm.h * dm.t];
        kernel::forward(
            kernel::Inputs { q, k, v, dims: dm },
            self.scale,
            self.mask.rows(dm.b)?,
            &mut out,
            &mut lse,
        )
        .map_err(candle_core::Error::msg)?;
        *self.lse.lock().map_err(candle_core::Error::msg)? = lse;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dm = dims(q.shape(), k.shape())?;
        let grad = grad.contiguous()?;
        let ts = [q, k, v, o, &grad].map(|t| t.storage_and_layout());
        let mut sl: Vec<&[f32]> = Vec::with_capacity(5);
        for (g, l) in &ts {
            let candle_core::Storage::Cpu(s) = &**g else {
                candle_core::bail!("fused attention: CPU only");
            };
            sl.push(slice(s, l)?);
        }
        let lse = self.lse.lock().map_err(candle_core::Error::msg)?;
        let mut dq = vec![0f32; sl[0].len()];
        let mut dk = vec![0f32; sl[1].len()];
        let mut dv = vec![0f32; sl[2].len()];
        kernel::backward(
            kernel::Inputs {
                q: sl[0],
                k: sl[1],
                v: sl[2],
                dims: dm,
            },
            kernel::Upstream {
                o: sl[3],
                grad: sl[4],
                lse: &lse,
            },
            self.scale,
            self.mask.rows(dm.b)?,
            (&mut dq, &mut dk, &mut dv),
        )
        .map_err(candle_core::Error::msg)?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// `softmax(q kᵀ · scale, masked by `mask`) v` `[B, H, T, D]` for q `[B, H, T, D]` and k, v
/// `[B, H_kv, T, D]`, f32 on the CPU, differentiable in q, k and v.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: &TrainMask,
) -> Result<Tensor> {
    if !q.device().is_cpu() || [q, k, v].iter().any(|t| t.dtype() != DType::F32) {
        return Err(Error::Invalid(
            "the fused training attention runs f32 on the CPU".into(),
        ));
    }
    let op = TrainAttention {
        scale: scale as f32,
        mask: mask.clone(),
        lse: Mutex::new(Vec::new()),
    };
    Ok(q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
}

/// The built-in mask `[T, S]` (1 = hidden) of `t` queries after `s - t` cached keys: causal
/// unless `causal` is false, and the sliding window with its sinks when it binds, as
/// [`MaskSpec`] states them for the inference path. `None`: nothing is hidden.
pub fn builtin_mask(
    causal: bool,
    window: usize,
    sinks: usize,
    t: usize,
    s: usize,
) -> Option<Result<Vec<u8>>> {
    let past = s - t;
    let band = window > 0 && s > window.saturating_sub(sinks);
    if !band {
        return (causal && t > 1).then(|| {
            Ok((0..t)
                .flat_map(|i| (0..s).map(move |j| u8::from(j > i + past)))
                .collect())
        });
    }
    let mode = match causal {
        true => AttentionMode::Causal,
        false => AttentionMode::Bidirectional,
    };
    Some(spec_of(mode, window, sinks, 0).and_then(|spec| {
        let m = spec.mask().map_err(|e| Error::Invalid(e.to_string()))?;
        Ok((0..t)
            .flat_map(|i| {
                (0..s)
                    .map(|j| u8::from(!m.allowed(i + past, j)))
                    .collect::<Vec<_>>()
            })
            .collect())
    }))
}

/// The composed candle attention `[B, H, T, D]` of q `[B, H, T, D]` and k, v `[B, H_kv, S, D]`:
/// scores, the mask (`builtin` `[T, S]` or, in its place, `blocked` `[B, T, S]`; 1 = hidden),
/// softmax in f32, the weighted sum in v's dtype. Any device and dtype; each op has candle's
/// backward.
pub fn composed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    builtin: Option<Vec<u8>>,
    blocked: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (hkv, s) = (k.dim(1)?, k.dim(2)?);
    let rep = h / hkv;
    // Queries grouped by their key/value head, `[B, H_kv, rep·T, D]` (head `g·rep + r` is
    // group `g`, rows `r·T..`): keys and values are read where they are, never copied per
    // query head or transposed, and a decode step reads the cache once.
    let qg = q.reshape((b, hkv, rep * t, d))?;
    let scores = k
        .matmul(&qg.t()?)?
        .transpose(2, 3)?
        .contiguous()?
        .reshape((b, h, t, s))?;
    // Scores, mask and softmax in f32; the weighted sum in the compute dtype.
    let mut att = (scores.to_dtype(DType::F32)? * scale)?;
    if let Some(mask) = builtin.filter(|_| blocked.is_none()) {
        let mask = Tensor::from_vec(mask, (t, s), q.device())?.broadcast_as(att.shape())?;
        let neg = Tensor::new(f32::NEG_INFINITY, q.device())?.broadcast_as(att.shape())?;
        att = mask.where_cond(&neg, &att)?;
    }
    if let Some(m) = blocked {
        // `[B, T, S]` → every head: 1 hides the key from the query; the whole mask (a packed
        // batch's, `attn::packed`), in place of the built-in one.
        let m = m.unsqueeze(1)?.broadcast_as(att.shape())?;
        let neg = Tensor::new(f32::NEG_INFINITY, q.device())?.broadcast_as(att.shape())?;
        att = m.where_cond(&neg, &att)?;
    }
    let att = candle_nn::ops::softmax(&att, D::Minus1)?.to_dtype(v.dtype())?;
    Ok(att
        .reshape((b, hkv, rep * t, s))?
        .matmul(v)?
        .reshape((b, h, t, d))?)
}

#[cfg(test)]
#[path = "train_op_tests.rs"]
mod tests;
