//! The LM head and the cross-entropy as one CPU op: the mean of `−log softmax(s · h Wᵀ)[target]`
//! over the rows of final hidden states `h` `[N, C]` (optionally only the rows whose 0/1 weight
//! is 1), for head weights `W` `[V, C]` and a logit scale `s`, without the `[N, V]` logits.
//!
//! The rows run in chunks of about 2M logits: gemm writes a chunk's logits into one reused
//! buffer, each row's log-sum-exp and loss term come from it, and when an input is tracked for
//! autograd the chunk's logits gradient `(softmax − onehot) · w / n` overwrites the buffer in
//! place and goes straight into `dh = s · dlogits · W` and `dW += s · dlogitsᵀ · h` (gemm
//! accumulating into one `[V, C]` sum, chunk after chunk in order, so the result does not depend
//! on the thread count). The forward thus returns the loss with the gradients for an upstream
//! gradient of 1 already made; the backward scales them by the real one. The composed path
//! (head matmul, then [`crate::train::xent`]) builds `[N, V]` logits, their gradient and candle's
//! zero-filled accumulation of each, ~10 traversals of a tensor that is 66 MB at batch 8 × 256
//! with an 8K vocabulary.
//!
//! Must match the composed path: head matmul ([`Transformer::logits_from_hidden`]) then
//! [`crate::train::xent::cross_entropy`] — the loss within 1e-5 relative, the gradients of `h`
//! and `W` within 1e-4 (f32 sums in another order; tests in `head_xent_tests.rs`).
//!
//! [`Transformer::logits_from_hidden`]: crate::transformer::Transformer::logits_from_hidden

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::xent::{log_sum_exp, row_weights, target};
use crate::fused::{cpu_slice, op_slice};
use crate::vision::cpu::{exp, matmul, parallelism, Mat};

/// Logits per chunk: 8 MB of f32, reused for every chunk.
const CHUNK_LOGITS: usize = 1 << 21;

/// Whether the fused op runs: f32 hidden states `[N, C]` and head `[V, C]` on the CPU, contiguous.
pub fn fits(h: &Tensor, w: &Tensor) -> bool {
    let ok = |t: &Tensor| {
        t.device().is_cpu() && t.dtype() == DType::F32 && t.rank() == 2 && t.is_contiguous()
    };
    ok(h) && ok(w) && h.elem_count() > 0 && w.elem_count() > 0 && h.dim(1).ok() == w.dim(1).ok()
}

/// Mean cross-entropy of the logits `scale · h Wᵀ` against targets `[N]` (u32) over the rows
/// whose weight (0 or 1, `[N]`) is 1, all rows without weights; `h` `[N, C]` and `W` `[V, C]`
/// as [`fits`] requires. Differentiable in `h` and `W`. Errors when no row has weight or a
/// target is out of range.
pub fn head_cross_entropy(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
    scale: f32,
) -> Result<Tensor> {
    head_cross_entropy_chunked(h, w, targets, weights, scale, None)
}

/// [`head_cross_entropy`] with `chunk_rows` rows per chunk in place of the default (tests).
pub(crate) fn head_cross_entropy_chunked(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
    scale: f32,
    chunk_rows: Option<usize>,
) -> Result<Tensor> {
    if !fits(h, w) {
        bail!(
            "fused head cross-entropy: needs contiguous f32 CPU hidden states [N, C] and head \
             [V, C], got {:?} and {:?}",
            h.shape(),
            w.shape()
        );
    }
    let n = h.dim(0)?;
    let (weights, count) = row_weights(
        "fused head cross-entropy",
        "hidden states",
        n,
        targets,
        weights,
    )?;
    let op = HeadCrossEntropy {
        weights,
        count,
        scale,
        chunk_rows,
        with_grads: h.track_op() || w.track_op(),
        grads: Mutex::new(None),
    };
    h.apply_op3(w, &targets.to_dtype(DType::U32)?.contiguous()?, op)
}

/// The op: weights and their sum, the logit scale, and the gradients the forward made.
struct HeadCrossEntropy {
    weights: Option<Vec<f32>>,
    /// `n`: the number of weighted rows.
    count: f32,
    scale: f32,
    chunk_rows: Option<usize>,
    /// Whether the forward makes the gradients (an input is tracked for autograd).
    with_grads: bool,
    /// `dh` `[N, C]` and `dW` `[V, C]` for an upstream gradient of 1.
    grads: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

/// What one pass over the chunks gives: the loss and, when asked for, `dh` and `dW`.
struct Pass {
    loss: f32,
    grads: Option<(Vec<f32>, Vec<f32>)>,
}

impl HeadCrossEntropy {
    fn weight(&self, row: usize) -> f32 {
        self.weights.as_ref().map_or(1.0, |w| w[row])
    }

    /// The forward over all chunks of `h` `[n, c]` with head `w` `[v, c]`; the gradients too
    /// when `grads`.
    fn run(&self, h: &[f32], w: &[f32], tg: &[u32], c: usize, grads: bool) -> Result<Pass> {
        let (n, v) = (h.len() / c, w.len() / c);
        let rows = self
            .chunk_rows
            .unwrap_or((CHUNK_LOGITS / v).max(16))
            .clamp(1, n);
        let par = parallelism();
        let wm = Mat::rows(w, v, c, c);
        let mut buf = vec![0f32; rows * v];
        let (mut dh, mut dw) = match grads {
            true => (vec![0f32; n * c], vec![0f32; v * c]),
            false => (Vec::new(), Vec::new()),
        };
        let mut total = 0f64;
        let arch = pulp::Arch::new();
        let err =
            |e: crate::error::Error| candle_core::Error::Msg(format!("head cross-entropy: {e}"));
        for r0 in (0..n).step_by(rows) {
            let m = rows.min(n - r0);
            let hc = Mat::rows(&h[r0 * c..(r0 + m) * c], m, c, c);
            let logits = &mut buf[..m * v];
            matmul(logits, v, hc, wm.t(), false, self.scale, par).map_err(err)?;
            let terms = logits
                .par_chunks_exact_mut(v)
                .enumerate()
                .map(|(i, row)| {
                    let wt = self.weight(r0 + i);
                    if wt == 0.0 {
                        row.fill(0.0);
                        return Ok(0.0);
                    }
                    let t = target(tg, r0 + i, v)?;
                    let lse = arch.dispatch(|| log_sum_exp(row));
                    let term = f64::from(wt) * f64::from(lse - row[t]);
                    if grads {
                        let s = wt / self.count;
                        arch.dispatch(|| {
                            for x in row.iter_mut() {
                                *x = exp(*x - lse) * s;
                            }
                        });
                        row[t] -= s;
                    }
                    Ok(term)
                })
                .collect::<Result<Vec<f64>>>()?;
            total += terms.iter().sum::<f64>();
            if grads {
                let g = Mat::rows(logits, m, v, v);
                matmul(&mut dh[r0 * c..], c, g, wm, false, self.scale, par).map_err(err)?;
                matmul(&mut dw, c, g.t(), hc, true, self.scale, par).map_err(err)?;
            }
        }
        Ok(Pass {
            loss: (total / f64::from(self.count)) as f32,
            grads: grads.then_some((dh, dw)),
        })
    }
}

impl CustomOp3 for HeadCrossEntropy {
    fn name(&self) -> &'static str {
        "fused-head-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (h, w) = (
            op_slice(s1, l1, self.name())?,
            op_slice(s2, l2, self.name())?,
        );
        let tg = super::xent::u32s(s3, l3)?;
        let c = l1.shape().dims2()?.1;
        let pass = self.run(h, w, tg, c, self.with_grads)?;
        if let Ok(mut g) = self.grads.lock() {
            *g = pass.grads;
        }
        Ok((CpuStorage::F32(vec![pass.loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let made = self.grads.lock().ok().and_then(|mut m| m.take());
        let (mut dh, mut dw) = match made {
            Some(grads) => grads,
            None => {
                // Not made in the forward (nothing was tracked then, or a second backward).
                let ((hs, hl), (ws, wl), (ts, tl)) = (
                    h.storage_and_layout(),
                    w.storage_and_layout(),
                    targets.storage_and_layout(),
                );
                let hv = cpu_slice(&hs, hl, self.name())?;
                let wv = cpu_slice(&ws, wl, self.name())?;
                let candle_core::Storage::Cpu(ts) = &*ts else {
                    bail!("{}: targets must be on the CPU", self.name());
                };
                let tv = super::xent::u32s(ts, tl)?;
                let pass = self.run(hv, wv, tv, h.dim(1)?, true)?;
                pass.grads
                    .ok_or_else(|| candle_core::Error::Msg("no gradients".into()))?
            }
        };
        if g != 1.0 {
            dh.par_iter_mut()
                .chain(dw.par_iter_mut())
                .for_each(|x| *x *= g);
        }
        let dh = Tensor::from_vec(dh, h.shape(), h.device())?;
        let dw = Tensor::from_vec(dw, w.shape(), w.device())?;
        Ok((Some(dh), Some(dw), None))
    }
}

#[cfg(test)]
#[path = "head_xent_tests.rs"]
mod tests;
