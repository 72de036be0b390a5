//! f32 CPU kernels for the SigLIP tower's fused inference path ([`VisionPath::Fused`] on the
//! CPU): matmuls straight into `gemm` (the crate candle's CPU matmul calls) with the bias or the
//! residual already in the destination, attention per image and head in parallel on strided
//! views of the q/k/v rows (no transposed copies), and one-pass SIMD layer norm, softmax and
//! bias + GELU (tanh form). Each kernel is tested against the candle ops it replaces.
//!
//! [`VisionPath::Fused`]: crate::vision::VisionPath::Fused

use crate::error::{Error, Result};
use crate::hostgemm::gemm_f32_avx2;
use candle_core::{CpuStorage, Storage, StorageRef, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// Rows per rayon task in the row-wise kernels.
const ROWS_PER_TASK: usize = 8;

/// A contiguous f32 tensor's values on the CPU, read-locked while this lives.
pub(crate) struct CpuF32<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuF32<'a> {
    pub fn new(t: &'a Tensor) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| Error::Kernel("vision CPU path: a non-contiguous weight".into()))?;
        Ok(Self { guard, start, end })
    }

    pub fn slice(&self) -> Result<&[f32]> {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => v.get(self.start..self.end),
            _ => None,
        }
        .ok_or_else(|| Error::Kernel("vision CPU path: a weight that is not f32 on the CPU".into()))
    }
}

/// A matrix inside a slice: element `(r, c)` at `data[r · rs + c · cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// `rows × cols`, row-major with row stride `rs`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose, a view.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn fits(&self) -> bool {
        extent(self.rows, self.cols, self.rs, self.cs) <= self.data.len()
    }
}

/// One past the last index of a `rows × cols` matrix with strides `rs`, `cs`.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// gemm's threading for the big products: candle's thread count.
pub(crate) fn parallelism() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst ← (dst if accumulate, else 0) + scale · lhs · rhs`; `dst` is `lhs.rows × rhs.cols`,
/// row-major with row stride `dst_rs`, at the start of the slice. On gemm's AVX2 kernels, which
/// are faster than its AVX-512 ones at the vision tower's and EnCodec's shapes
/// ([`crate::hostgemm`]).
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    scale: f32,
    par: Parallelism,
) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || !lhs.fits() || !rhs.fits() || extent(m, n, dst_rs, 1) > dst.len() {
        return Err(Error::Kernel(format!(
            "matmul: {m}×{k} · {}×{n} does not fit its slices",
            rhs.rows
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs.max(1)).take(m) {
                row[..n].fill(0.0);
            }
        }
        return Ok(());
    }
    // SAFETY: the checks above keep every element gemm touches (`(r, c)` at `r·rs + c·cs` with
    // r < rows, c < cols, strides non-negative) inside its slice; `dst` is borrowed mutably, so
    // it overlaps neither operand.
    unsafe {
        gemm_f32_avx2(
            m,
            n,
            k,
            (dst.as_mut_ptr(), 1, dst_rs as isize),
            accumulate,
            (lhs.data.as_ptr(), lhs.cs as isize, lhs.rs as isize),
            (rhs.data.as_ptr(), rhs.cs as isize, rhs.rs as isize),
            1.0,
            scale,
            par,
        );
    }
    Ok(())
}

/// `e^x` in f32 to about one ulp (Cephes `expf`: `x = n·ln 2 + r`, a degree-7 polynomial in `r`,
/// `2^n` built in the exponent bits); `x` is clamped to `[-87, 88]`, so tiny results stay
/// normal. Branch-free, so loops over it vectorise.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer.
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    let pow2 = ((t.to_bits() as i32 - 0x4B40_0000 + 127) << 23) as u32;
    p * f32::from_bits(pow2)
}

/// The largest element of `row` (−inf when empty), in 16 lanes so the loop vectorises.
#[inline(always)]
pub(crate) fn row_max(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in m.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&m)
        .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a })
}

/// Softmax of every `n`-long row of `s`, in place.
pub(crate) fn softmax_rows(s: &mut [f32], n: usize) {
    pulp::Arch::new().dispatch(|| {
        for row in s.chunks_exact_mut(n) {
            let max = row_max(row);
            let mut acc = [0f32; 16];
            let mut chunks = row.chunks_exact_mut(16);
            for c in &mut chunks {
                for (a, v) in acc.iter_mut().zip(c) {
                    *v = exp(*v - max);
                    *a += *v;
                }
            }
            let mut sum = 0f32;
            for v in chunks.into_remainder() {
                *v = exp(*v - max);
                sum += *v;
            }
            let inv = 1.0 / (sum + acc.iter().sum::<f32>());
            row.iter_mut().for_each(|v| *v *= inv);
        }
    })
}

/// `Σ v` with 16 partial sums (vectorises).
#[inline(always)]
fn sum16(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += f(*x);
        }
    }
    chunks.remainder().iter().map(|x| f(*x)).sum::<f32>() + acc.iter().sum::<f32>()
}

/// `out = (x - mean) / sqrt(var + eps) · w + b` over every `d`-long row (biased variance).
pub(crate) fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .for_each(|(out, x)| {
            pulp::Arch::new().dispatch(|| {
                for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                    let mean = sum16(x, |v| v) / d as f32;
                    let var = sum16(x, |v| (v - mean) * (v - mean)) / d as f32;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (((o, x), w), b) in o.iter_mut().zip(x).zip(w).zip(b) {
                        *o = (x - mean) * inv * w + b;
                    }
                }
            })
        });
}

/// `y ← gelu_tanh(y + b)` over every row (`b` as long as a row): `0.5·u·(1 + tanh(z))`,
/// `z = √(2/π)·(u + 0.044715·u³)`, with `tanh(z) = 1 − 2 / (e^{2z} + 1)`.
pub(crate) fn bias_gelu_tanh(y: &mut [f32], b: &[f32]) {
    let d = b.len();
    y.par_chunks_mut(d * ROWS_PER_TASK).for_each(|rows| {
        pulp::Arch::new().dispatch(|| {
            for row in rows.chunks_exact_mut(d) {
                for (e, b) in row.iter_mut().zip(b) {
                    let u = *e + b;
                    let z = 0.797_884_6 * u * (1.0 + 0.044_715 * u * u);
                    let t = 1.0 - 2.0 / (exp(2.0 * z) + 1.0);
                    *e = 0.5 * u * (1.0 + t);
                }
            }
        })
    });
}

/// Bidirectional attention for `images` images of `n` tokens: `qkv` holds each token's row
/// `[q | k | v]` (`3·d` wide, heads side by side in each part); `ctx` (`[images·n, d]`) gets
/// `softmax(q_h·k_hᵀ / √hd)·v_h` in head `h`'s columns. One rayon task per image and head.
pub(crate) fn attention(
    qkv: &[f32],
    images: usize,
    n: usize,
    d: usize,
    heads: usize,
    ctx: &mut [f32],
) -> Result<()> {
    let hd = d / heads.max(1);
    if hd * heads != d || qkv.len() != images * n * 3 * d || ctx.len() != images * n * d {
        return Err(Error::Kernel(format!(
            "attention: {images} images × {n} tokens × {d} ({heads} heads) do not fit qkv {} / ctx {}",
            qkv.len(),
            ctx.len()
        )));
    }
    let scale = (hd as f32).powf(-0.5);
    let outs = (0..images * heads)
        .into_par_iter()
        .map(|job| -> Result<Vec<f32>> {
            let (img, h) = (job / heads, job % heads);
            let part = |p: usize| {
                let at = img * n * 3 * d + p * d + h * hd;
                Mat::rows(&qkv[at..], n, hd, 3 * d)
            };
            let mut s = vec![0f32; n * n];
            matmul(
                &mut s,
                n,
                part(0),
                part(1).t(),
                false,
                scale,
                Parallelism::None,
            )?;
            softmax_rows(&mut s, n);
            let mut o = vec![0f32; n * hd];
            let p = Mat::rows(&s, n, n, n);
            matmul(&mut o, hd, p, part(2), false, 1.0, Parallelism::None)?;
            Ok(o)
        })
        .collect::<Result<Vec<_>>>()?;
    for (job, o) in outs.iter().enumerate() {
        let (img, h) = (job / heads, job % heads);
        for (r, src) in o.chunks_exact(hd).enumerate() {
            let at = (img * n + r) * d + h * hd;
            ctx[at..at + hd].copy_from_slice(src);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "cpu_tests.rs"]
mod tests;
