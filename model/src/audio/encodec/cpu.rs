//! Host buffers and element-wise kernels for EnCodec's inference path on the CPU
//! ([`EncodecPath::Fast`] in f32): activations are channels-last frames `[T, C]` (row `t` holds
//! every channel at time `t`, so a conv's window is a run of memory; see `conv_cpu`), `gemm`
//! called directly on strided views, a one-ulp `exp` for the ELU and the LSTM's gates, and a
//! conv's padded input ([`Padded`]: HF's `_pad1d`, reflect padding of short inputs included,
//! with the preceding ELU fused) produced a block of rows at a time.
//!
//! Must match the candle ops they replace (`pad1d`, `Tensor::elu`, `matmul`): tested against
//! them in `cpu_tests.rs`.
//!
//! [`EncodecPath::Fast`]: super::EncodecPath::Fast

use super::config::PadMode;
use crate::error::{Error, Result};
use candle_core::Tensor;
use gemm::Parallelism;
use rayon::prelude::*;
use std::sync::Mutex;

/// Rows per rayon task in the row-wise loops.
const ROWS_PER_TASK: usize = 256;

/// One item's activations, channels-last: `data[t · ch + c]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frames {
    pub data: Vec<f32>,
    pub len: usize,
    pub ch: usize,
}

impl Frames {
    /// Item `b` of a `[B, C, T]` tensor.
    pub fn from_tensor(x: &Tensor, b: usize) -> Result<Frames> {
        let (_, ch, len) = x.dims3()?;
        let data = x
            .get(b)?
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Frames { data, len, ch })
    }

    /// Items stacked back into `[B, C, T]` (every item of the same shape).
    pub fn to_tensor(items: Vec<Frames>, device: &candle_core::Device) -> Result<Tensor> {
        let mut out = Vec::with_capacity(items.len());
        for f in items {
            let t = Tensor::from_vec(f.data, (f.len, f.ch), &candle_core::Device::Cpu)?;
            out.push(t.t()?);
        }
        Ok(Tensor::stack(&out, 0)?.contiguous()?.to_device(device)?)
    }
}

/// Bytes of free buffers a [`BufferPool`] keeps.
const POOL_BYTES: usize = 128 << 20;

/// Large f32 buffers kept from one call to the next: a fresh allocation of tens of MB costs a
/// page fault per 4 KiB on first touch (and the faults of parallel threads contend), so the
/// encoder's activations come from here and go back, at most [`POOL_BYTES`] of them kept.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<f32>>>,
}

impl std::fmt::Debug for BufferPool {
    /// The buffers' count and size, not their values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let free = self.free();
        let bytes: usize = free.iter().map(|b| b.capacity() * 4).sum();
        write!(f, "BufferPool({} buffers, {bytes} bytes)", free.len())
    }
}

impl BufferPool {
    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<f32>>> {
        // A panic elsewhere cannot leave the list inconsistent: take it as it is.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of `len` values, contents unspecified (the caller writes every one): the
    /// smallest kept buffer that holds `len`, else a new one.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.free();
        let best = (0..free.len())
            .filter(|&i| free[i].capacity() >= len)
            .min_by_key(|&i| free[i].capacity());
        match best {
            Some(i) => {
                let mut v = free.swap_remove(i);
                drop(free);
                v.resize(len, 0.0);
                v
            }
            None => vec![0f32; len],
        }
    }

    /// Keeps `v` for a later [`BufferPool::take`] (drops it past the pool's size).
    pub fn give(&self, v: Vec<f32>) {
        let mut free = self.free();
        let kept: usize = free.iter().map(|b| b.capacity()).sum();
        if v.capacity() > 0 && (kept + v.capacity()) * 4 <= POOL_BYTES {
            free.push(v);
        }
    }
}

// The strided-matrix view, `gemm` wrapper, thread choice and `exp` are the vision tower's host
// path's (`crate::vision::cpu`), shared rather than copied.
pub(crate) use crate::vision::cpu::{exp, parallelism, Mat};

/// `dst ← dst + scale · lhs · rhs` (`dst` as it is: fill it first); `dst` is
/// `lhs.rows × rhs.cols`, row-major with row stride `dst_rs`, at the start of the slice.
pub(crate) fn matmul_acc(
    dst: &mut [f32],
    dst_rs: usize,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
) -> Result<()> {
    matmul_acc_with(dst, dst_rs, lhs, rhs, scale, parallelism())
}

/// [`matmul_acc`] with the threading given.
pub(crate) fn matmul_acc_with(
    dst: &mut [f32],
    dst_rs: usize,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    par: Parallelism,
) -> Result<()> {
    crate::vision::cpu::matmul(dst, dst_rs, lhs, rhs, true, scale, par)
}

/// `elu(x)`, α = 1: `x` if `x > 0`, else `e^x − 1`.
#[inline(always)]
pub(crate) fn elu1(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        exp(x) - 1.0
    }
}

/// ELU in place.
pub(crate) fn elu_inplace(x: &mut Frames) {
    let block = x.ch.max(1) * ROWS_PER_TASK;
    x.data.par_chunks_mut(block).for_each(|d| {
        pulp::Arch::new().dispatch(|| {
            for v in d.iter_mut() {
                *v = elu1(*v);
            }
        })
    });
}

/// `a += b` (same shape).
pub(crate) fn add_inplace(a: &mut Frames, b: &Frames) -> Result<()> {
    if a.len != b.len || a.ch != b.ch {
        return Err(Error::Kernel(format!(
            "EnCodec add: [{}, {}] + [{}, {}]",
            a.len, a.ch, b.len, b.ch
        )));
    }
    let block = a.ch.max(1) * ROWS_PER_TASK;
    a.data
        .par_chunks_mut(block)
        .zip(b.data.par_chunks(block))
        .for_each(|(a, b)| {
            pulp::Arch::new().dispatch(|| {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
            })
        });
    Ok(())
}

/// The source frame of padded frame `p` under HF's `_pad1d` (`None`: a zero): `x` of `len`
/// frames padded by `left`; reflect padding of an input no longer than the pad reflects `x`
/// followed by zeros (to `max(left, right) + 1` frames).
fn pad_source(p: usize, len: usize, left: usize, right: usize, mode: PadMode) -> Option<usize> {
    let q = p as isize - left as isize;
    if q >= 0 && (q as usize) < len {
        return Some(q as usize);
    }
    match mode {
        PadMode::Zeros => None,
        PadMode::Replicate => Some(q.clamp(0, len as isize - 1) as usize),
        PadMode::Reflect => {
            let n = len.max(left.max(right) + 1) as isize;
            let r = if q < 0 { -q } else { 2 * n - 2 - q };
            (r >= 0 && r < len as isize).then_some(r as usize)
        }
    }
}

/// A conv's input as the conv sees it, never materialised whole: `x` padded by `(left, right)`
/// frames as HF's `_pad1d` pads, with ELU applied first if `elu`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Padded<'a> {
    pub x: &'a Frames,
    pub left: usize,
    pub right: usize,
    pub mode: PadMode,
    pub elu: bool,
}

impl<'a> Padded<'a> {
    /// `x` as it is.
    pub fn plain(x: &'a Frames) -> Self {
        Padded {
            x,
            left: 0,
            right: 0,
            mode: PadMode::Zeros,
            elu: false,
        }
    }

    /// Frames of the padded input.
    pub fn len(&self) -> usize {
        self.x.len + self.left + self.right
    }

    /// Rows `p0..p1` of the padded input: borrowed from `x` when they need no padding and no
    /// ELU, else written into `buf`.
    pub fn rows<'b>(&self, p0: usize, p1: usize, buf: &'b mut Vec<f32>) -> Result<&'b [f32]>
    where
        'a: 'b,
    {
        let (x, ch, left) = (self.x, self.x.ch, self.left);
        if p0 > p1 || p1 > self.len() || x.len == 0 || x.data.len() != x.len * ch {
            return Err(Error::Kernel(format!(
                "EnCodec pad: rows {p0}..{p1} of {} ({} values for [{}, {ch}])",
                self.len(),
                x.data.len(),
                x.len
            )));
        }
        if !self.elu && p0 >= left && p1 <= left + x.len {
            return Ok(&x.data[(p0 - left) * ch..(p1 - left) * ch]);
        }
        buf.clear();
        buf.resize((p1 - p0) * ch, 0.0);
        // The rows inside `x`: one run.
        let i0 = left.clamp(p0, p1);
        let i1 = (left + x.len).clamp(i0, p1);
        if i0 < i1 {
            let src = &x.data[(i0 - left) * ch..(i1 - left) * ch];
            let dst = &mut buf[(i0 - p0) * ch..(i1 - p0) * ch];
            if self.elu {
                pulp::Arch::new().dispatch(|| {
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = elu1(*s);
                    }
                });
            } else {
                dst.copy_from_slice(src);
            }
        }
        for p in (p0..i0).chain(i1..p1) {
            if let Some(q) = pad_source(p, x.len, left, self.right, self.mode) {
                let row = &x.data[q * ch..(q + 1) * ch];
                for (d, s) in buf[(p - p0) * ch..(p - p0 + 1) * ch].iter_mut().zip(row) {
                    *d = if self.elu { elu1(*s) } else { *s };
                }
            }
        }
        Ok(buf)
    }
}

#[cfg(test)]
#[path = "cpu_tests.rs"]
mod tests;
