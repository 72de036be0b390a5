//! One layer of `EncodecLSTM` on host buffers (the fast path on the CPU): every frame's input
//! projection `x · W_ihᵀ + b_ih + b_hh` in one `gemm`, then the recurrence with `W_hh · h` split
//! over scoped threads by chunks of hidden units — a thread takes the next chunk of the current
//! step (a ticket from one counter), computes its units' four gates (rows `g·H + j` of `W_hh`,
//! four rows at a time against one pass over `h`) and cell update, and publishes them; the chunk
//! that completes a step releases the next. No thread pool is entered per step, and a thread
//! that is descheduled (a busy machine) delays only the chunk it holds.
//!
//! Must match torch's `nn.LSTM` (gates `i, f, g, o`; `c' = σ(f)·c + σ(i)·tanh(g)`, `h' =
//! σ(o)·tanh(c')`, zero initial state) as the candle-op path in `lstm.rs` computes it (tested
//! there and in `lstm_cpu_tests.rs`, threaded and not).

use super::cpu::{exp, matmul_acc, Mat};
use crate::error::{Error, Result};
use candle_core::Tensor;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Hidden units per ticket (a chunk of one step's work: `4·CHUNK` rows of `W_hh`).
const CHUNK: usize = 64;
/// Spins before a waiting thread starts yielding its core.
const SPINS: u32 = 2000;

/// One layer's weights on the host (torch's layouts).
#[derive(Debug, Clone)]
pub(crate) struct HostLayer {
    /// `[4H, in]`.
    w_ih: Vec<f32>,
    /// `[4H, H]`.
    w_hh: Vec<f32>,
    /// `b_ih + b_hh`, `[4H]`.
    bias: Vec<f32>,
    input: usize,
    hidden: usize,
}

impl HostLayer {
    pub fn new(w_ih: &Tensor, w_hh: &Tensor, b_ih: &Tensor, b_hh: &Tensor) -> Result<HostLayer> {
        let (rows, input) = w_ih.dims2()?;
        let hidden = rows / 4;
        let host = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        Ok(HostLayer {
            w_ih: host(w_ih)?,
            w_hh: host(w_hh)?,
            bias: host(&(b_ih + b_hh)?)?,
            input,
            hidden,
        })
    }

    /// `x` `[T, in]` → the hidden states `[T, H]`, the recurrence on `threads` threads.
    pub fn forward(&self, x: &[f32], t: usize, threads: usize) -> Result<Vec<f32>> {
        let (inp, hd) = (self.input, self.hidden);
        if x.len() != t * inp {
            return Err(Error::Kernel(format!(
                "EnCodec LSTM: {} values for [{t}, {inp}]",
                x.len()
            )));
        }
        let mut xp = Vec::with_capacity(t * 4 * hd);
        for _ in 0..t {
            xp.extend_from_slice(&self.bias);
        }
        let lhs = Mat {
            data: x,
            rows: t,
            cols: inp,
            rs: inp,
            cs: 1,
        };
        let rhs = Mat {
            data: &self.w_ih,
            rows: inp,
            cols: 4 * hd,
            rs: 1,
            cs: inp,
        };
        matmul_acc(&mut xp, 4 * hd, lhs, rhs, 1.0)?;
        Ok(recur(&self.w_hh, &xp, t, hd, threads))
    }
}

/// What the threads of one recurrence share. The work is handed out as tickets in step order —
/// ticket `k` is chunk `k % chunks` (hidden units `chunk·(k % chunks)..`) of step `k / chunks` —
/// so a thread the OS takes off its core holds up at most the one chunk it has started, never a
/// fixed share of every step.
struct Shared<'a> {
    w_hh: &'a [f32],
    xp: &'a [f32],
    t: usize,
    hd: usize,
    chunk: usize,
    chunks: usize,
    /// `h` after every step (f32 bits): row `s + 1` for step `s`, row 0 the zero initial state.
    h: Vec<AtomicU32>,
    /// The cell state (f32 bits).
    c: Vec<AtomicU32>,
    /// The next ticket.
    next: AtomicUsize,
    /// Chunks finished, over all steps.
    done: AtomicUsize,
    /// Steps whose `h` is complete.
    ready: AtomicUsize,
}

/// The recurrence: `xp` `[T, 4H]` (input projections with biases), `w_hh` `[4H, H]` →
/// `[T, H]`, on up to `threads` threads (the caller's and scoped ones).
pub(crate) fn recur(w_hh: &[f32], xp: &[f32], t: usize, hd: usize, threads: usize) -> Vec<f32> {
    let chunk = CHUNK.min(hd).max(1);
    let chunks = hd.div_ceil(chunk);
    let zeros = |n: usize| (0..n).map(|_| AtomicU32::new(0)).collect::<Vec<_>>();
    let sh = Shared {
        w_hh,
        xp,
        t,
        hd,
        chunk,
        chunks,
        h: zeros((t + 1) * hd),
        c: zeros(hd),
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
    };
    std::thread::scope(|s| {
        for _ in 1..threads.min(chunks) {
            s.spawn(|| worker(&sh));
        }
        worker(&sh);
    });
    sh.h.into_iter()
        .skip(hd)
        .map(|v| f32::from_bits(v.into_inner()))
        .collect()
}

/// Waits (spinning, then yielding the core) until `ready` reaches `step`.
fn wait_for(ready: &AtomicUsize, step: usize) {
    let mut spins = 0u32;
    while ready.load(Ordering::Acquire) < step {
        if spins < SPINS {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// Takes tickets until the steps run out.
fn worker(sh: &Shared) {
    let (simd, arch) = (has_avx2_fma(), pulp::Arch::new());
    let (hd, chunk) = (sh.hd, sh.chunk);
    let mut h = vec![0f32; hd];
    let mut h_of = None;
    let mut gates = vec![0f32; 4 * chunk];
    let (mut c, mut h_new) = (vec![0f32; chunk], vec![0f32; chunk]);
    loop {
        let k = sh.next.fetch_add(1, Ordering::Relaxed);
        let (step, part) = (k / sh.chunks, k % sh.chunks);
        if step >= sh.t {
            return;
        }
        wait_for(&sh.ready, step);
        if h_of != Some(step) {
            let row = &sh.h[step * hd..(step + 1) * hd];
            for (v, slot) in h.iter_mut().zip(row) {
                *v = f32::from_bits(slot.load(Ordering::Relaxed));
            }
            h_of = Some(step);
        }
        let (u0, u1) = (part * chunk, ((part + 1) * chunk).min(hd));
        let m = u1 - u0;
        let xrow = &sh.xp[step * 4 * hd..(step + 1) * 4 * hd];
        for (g, dst) in gates[..4 * m].chunks_exact_mut(m).enumerate() {
            dst.copy_from_slice(&xrow[g * hd + u0..g * hd + u1]);
        }
        gate_matvec(sh.w_hh, &h, u0, u1, &mut gates[..4 * m], simd);
        for (v, slot) in c.iter_mut().zip(&sh.c[u0..u1]) {
            *v = f32::from_bits(slot.load(Ordering::Relaxed));
        }
        arch.dispatch(|| cell(&gates[..4 * m], &mut c[..m], &mut h_new[..m]));
        for (slot, v) in sh.c[u0..u1].iter().zip(&c) {
            slot.store(v.to_bits(), Ordering::Relaxed);
        }
        let out = &sh.h[(step + 1) * hd + u0..(step + 1) * hd + u1];
        for (slot, v) in out.iter().zip(&h_new) {
            slot.store(v.to_bits(), Ordering::Relaxed);
        }
        // The chunk that completes the step publishes it (the AcqRel chain on `done` carries
        // every chunk's writes to the publisher, its Release store to the readers of `ready`).
        if sh.done.fetch_add(1, Ordering::AcqRel) + 1 == (step + 1) * sh.chunks {
            sh.ready.store(step + 1, Ordering::Release);
        }
    }
}

/// `gates[g·m + (j − u0)] += W_hh[g·H + j] · h` for units `j` in `u0..u1` (`m = u1 − u0`), the
/// four gate rows of a unit against one pass over `h` (AVX2 + FMA where the CPU has them).
fn gate_matvec(w: &[f32], h: &[f32], u0: usize, u1: usize, gates: &mut [f32], simd: bool) {
    let (hd, m) = (h.len(), u1 - u0);
    for j in u0..u1 {
        let row = |g: usize| &w[(g * hd + j) * hd..(g * hd + j + 1) * hd];
        let rows = [row(0), row(1), row(2), row(3)];
        #[cfg(target_arch = "x86_64")]
        let dots = if simd {
            // SAFETY: `simd` is set only when the CPU reports AVX2 and FMA.
            unsafe { dot4_avx2(rows, h) }
        } else {
            dot4(rows, h)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let dots = {
            let _ = simd;
            dot4(rows, h)
        };
        for (g, d) in dots.iter().enumerate() {
            gates[g * m + j - u0] += d;
        }
    }
}

/// Whether [`dot4_avx2`] can run here.
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `rows[g] · x` for the four rows (each as long as `x`), eight partial sums each.
fn dot4(rows: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (o, r) in out.iter_mut().zip(rows) {
        let mut acc = [0f32; 8];
        let (cr, cx) = (r.chunks_exact(8), x.chunks_exact(8));
        let tail: f32 = cr
            .remainder()
            .iter()
            .zip(cx.remainder())
            .map(|(a, b)| a * b)
            .sum();
        for (a, b) in cr.zip(cx) {
            for l in 0..8 {
                acc[l] += a[l] * b[l];
            }
        }
        *o = acc.iter().sum::<f32>() + tail;
    }
    out
}

/// [`dot4`] with AVX2 + FMA: two 8-wide accumulators per row, `x` loaded once for all four.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(rows: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = rows.iter().fold(x.len(), |n, r| n.min(r.len()));
    let p = rows.map(|r| r.as_ptr());
    let px = x.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
    let mut i = 0;
    // SAFETY: every load reads 8 floats at an offset o with o + 8 ≤ n, inside `x` and each row.
    unsafe {
        while i + 16 <= n {
            let (x0, x1) = (_mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(px.add(i + 8)));
            for (a, &pr) in acc.iter_mut().zip(&p) {
                a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pr.add(i)), x0, a[0]);
                a[1] = _mm256_fmadd_ps(_mm256_loadu_ps(pr.add(i + 8)), x1, a[1]);
            }
            i += 16;
        }
        while i + 8 <= n {
            let x0 = _mm256_loadu_ps(px.add(i));
            for (a, &pr) in acc.iter_mut().zip(&p) {
                a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pr.add(i)), x0, a[0]);
            }
            i += 8;
        }
    }
    let mut out = [0f32; 4];
    for ((o, a), r) in out.iter_mut().zip(&acc).zip(rows) {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a[0], a[1])) };
        *o = lanes.iter().sum::<f32>()
            + r[i..n]
                .iter()
                .zip(&x[i..n])
                .map(|(a, b)| a * b)
                .sum::<f32>();
    }
    out
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// The cell update of `m` units from their gate pre-activations `[i | f | g | o]` (`4m`).
#[inline(always)]
fn cell(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    let m = c.len();
    let (gi, rest) = gates.split_at(m);
    let (gf, rest) = rest.split_at(m);
    let (gg, go) = rest.split_at(m);
    let iter = c
        .iter_mut()
        .zip(h.iter_mut())
        .zip(gi)
        .zip(gf)
        .zip(gg)
        .zip(go);
    for (((((c, h), i), f), g), o) in iter {
        *c = sigmoid(*f) * *c + sigmoid(*i) * tanh(*g);
        *h = sigmoid(*o) * tanh(*c);
    }
}

#[cfg(test)]
#[path = "lstm_cpu_tests.rs"]
mod tests;
