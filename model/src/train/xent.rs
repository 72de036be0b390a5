//! Fused cross-entropy on the CPU: the mean of `−log softmax(logits)[target]` over the rows of
//! f32 logits `[N, V]` (optionally only the rows whose 0/1 weight is 1), as one candle custom op
//! with its own backward. Per row, one pass finds the maximum and one sums `exp(x − max)`
//! (rayon over rows, 16-lane loops compiled for the CPU's SIMD); the backward writes
//! `(softmax − onehot) · w · g / n` in one pass per row from the row's cached log-sum-exp. The
//! composed candle ops (`max`, `sub`, `exp`, `sum`, `log`, `gather`, each a fresh `[N, V]`
//! tensor with its own backward) allocate and traverse the logits about a dozen times.
//!
//! Must match `transformer::cross_entropy_composed` / `cross_entropy_weighted_composed` (values
//! and logits gradients within 1e-5 relative: `exp` is `vision::cpu::exp`, within 2 ulp of
//! `f32::exp`, and sums run in 16 lanes rather than candle's order).

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::vision::cpu::{exp, row_max};

/// Whether the fused op runs: f32 logits `[N, V]` on the CPU, contiguous.
pub fn fits(logits: &Tensor) -> bool {
    logits.device().is_cpu()
        && logits.dtype() == DType::F32
        && logits.rank() == 2
        && logits.is_contiguous()
        && logits.elem_count() > 0
}

/// Mean cross-entropy of logits `[N, V]` (f32, CPU, contiguous: see [`fits`]) against targets
/// `[N]` (u32) over the rows whose weight (0 or 1, `[N]`) is 1; all rows without weights.
/// Differentiable in the logits. Errors when no row has weight, or a target is out of range.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let (n, _) = logits.dims2()?;
    let (weights, count) = row_weights("cross-entropy", "logits", n, targets, weights)?;
    let op = CrossEntropy {
        weights,
        count,
        lse: Mutex::new(None),
    };
    logits.apply_op2(&targets.to_dtype(DType::U32)?.contiguous()?, op)
}

/// The row weights of a loss over `n` rows (`None`: every row counts) and their sum, checked:
/// `targets` `[n]` and `weights` `[n]`, and at least one weighted row. Errors name the loss
/// (`what`) and what its rows are (`rows`).
pub(crate) fn row_weights(
    what: &str,
    rows: &str,
    n: usize,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<(Option<Vec<f32>>, f32)> {
    let weights = match weights {
        Some(w) => Some(w.to_dtype(DType::F32)?.to_vec1::<f32>()?),
        None => None,
    };
    if weights.as_ref().is_some_and(|w| w.len() != n) || targets.dims1()? != n {
        bail!("{what}: {n} rows of {rows} but other lengths of targets or weights");
    }
    let count = weights.as_ref().map_or(n as f32, |w| w.iter().sum::<f32>());
    if count <= 0.0 {
        bail!("{what}: a batch with no position to predict");
    }
    Ok((weights, count))
}

/// The op: weights and their sum, and each row's log-sum-exp from the forward for the backward.
struct CrossEntropy {
    weights: Option<Vec<f32>>,
    /// `n`: the number of weighted rows.
    count: f32,
    lse: Mutex<Option<Vec<f32>>>,
}

impl CrossEntropy {
    fn weight(&self, row: usize) -> f32 {
        self.weights.as_ref().map_or(1.0, |w| w[row])
    }
}

/// A contiguous f32 slice of CPU storage.
fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("cross-entropy: logits must be contiguous f32"),
    }
}

/// A contiguous u32 slice of CPU storage.
pub(crate) fn u32s<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::U32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("cross-entropy: targets must be contiguous u32"),
    }
}

/// `log Σ exp(row)`: the maximum in 16 lanes, then `Σ exp(x − max)` in 16 lanes.
#[inline(always)]
pub(crate) fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row_max(row);
    let mut acc = [0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += exp(v - max);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| exp(v - max)).sum();
    max + (acc.iter().sum::<f32>() + tail).ln()
}

/// The target of a row, checked against the vocabulary.
pub(crate) fn target(targets: &[u32], row: usize, v: usize) -> Result<usize> {
    let t = targets[row] as usize;
    if t >= v {
        bail!("cross-entropy: target {t} of row {row} is outside the vocabulary of {v}");
    }
    Ok(t)
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = l1.shape().dims2()?;
        let (logits, targets) = (f32s(s1, l1)?, u32s(s2, l2)?);
        // The SIMD dispatch runs inside each rayon task: the loops compile for the CPU's
        // vector width there, not in the function that hands the rows out.
        let arch = pulp::Arch::new();
        let rows: Vec<(f32, f64)> = logits
            .par_chunks_exact(v)
            .enumerate()
            .map(|(i, row)| {
                let w = self.weight(i);
                if w == 0.0 {
                    return Ok((0.0, 0.0));
                }
                let lse = arch.dispatch(|| log_sum_exp(row));
                let t = target(targets, i, v)?;
                Ok((lse, f64::from(w) * f64::from(lse - row[t])))
            })
            .collect::<Result<Vec<_>>>()?;
        debug_assert_eq!(rows.len(), n);
        let total: f64 = rows.iter().map(|r| r.1).sum();
        if let Ok(mut g) = self.lse.lock() {
            *g = Some(rows.iter().map(|r| r.0).collect());
        }
        let loss = (total / f64::from(self.count)) as f32;
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let (n, v) = logits.dims2()?;
        let (ls, ll) = logits.storage_and_layout();
        let (ts, tl) = targets.storage_and_layout();
        let (Storage::Cpu(ls), Storage::Cpu(ts)) = (&*ls, &*ts) else {
            bail!("cross-entropy: the fused op runs on the CPU only");
        };
        let (x, tg) = (f32s(ls, ll)?, u32s(ts, tl)?);
        let cached = self.lse.lock().ok().and_then(|c| c.clone());
        let scale = g / self.count;
        let mut grad = vec![0f32; n * v];
        let arch = pulp::Arch::new();
        grad.par_chunks_exact_mut(v)
            .zip(x.par_chunks_exact(v))
            .enumerate()
            .try_for_each(|(i, (out, row))| {
                let s = self.weight(i) * scale;
                if s == 0.0 {
                    return Ok(());
                }
                let lse = match &cached {
                    Some(c) => c[i],
                    None => arch.dispatch(|| log_sum_exp(row)),
                };
                arch.dispatch(|| {
                    for (o, &xv) in out.iter_mut().zip(row) {
                        *o = exp(xv - lse) * s;
                    }
                });
                out[target(tg, i, v)?] -= s;
                Ok::<(), candle_core::Error>(())
            })?;
        let grad = Tensor::from_vec(grad, (n, v), logits.device())?;
        Ok((Some(grad), None))
    }
}

#[cfg(test)]
#[path = "xent_tests.rs"]
pub(super) mod tests;
