//! The residual quantiser's nearest-entry search on host buffers (the fast path on the CPU): per
//! block of rows, the distances `(Σx² − 2·x·e) + Σe²` of HF's form as one `gemm` into a
//! destination holding `Σx²`, then a first-minimum argmin, and the chosen entries taken off the
//! residual.
//!
//! Must match `Rvq::nearest` (candle ops, HF's distance form) and `Rvq::encode`: tested in
//! `rvq_cpu_tests.rs`.

use super::cpu::{matmul_acc_with, Mat};
use crate::error::{Error, Result};
use candle_core::Tensor;
use rayon::prelude::*;

/// Most rows per task (their distances, `rows × size`, stay near the core; each task's `gemm`
/// packs the codebook anew).
const MAX_ROWS_PER_TASK: usize = 256;

/// One codebook on the host: the entries `[size, dim]` and their squared norms.
#[derive(Debug, Clone)]
pub(crate) struct HostCodebook {
    embed: Vec<f32>,
    norms: Vec<f32>,
    size: usize,
    dim: usize,
}

impl HostCodebook {
    pub fn new(embed: &Tensor) -> Result<HostCodebook> {
        let (size, dim) = embed.dims2()?;
        let embed = embed.flatten_all()?.to_vec1::<f32>()?;
        let norms = embed
            .chunks_exact(dim.max(1))
            .map(|e| e.iter().map(|v| v * v).sum())
            .collect();
        Ok(HostCodebook {
            embed,
            norms,
            size,
            dim,
        })
    }

    /// The nearest entry of each row of `x` (`[rows, dim]`) into `codes`, and `x −= ` that
    /// entry when `subtract`.
    pub fn quantize(&self, x: &mut [f32], codes: &mut [u32], subtract: bool) -> Result<()> {
        let (d, n) = (self.dim, self.size);
        if d == 0 || n == 0 || x.len() != codes.len() * d {
            return Err(Error::Kernel(format!(
                "EnCodec quantiser: {} values for {} rows of {d} ({n} entries)",
                x.len(),
                codes.len()
            )));
        }
        // Blocks of equal size, as many as a multiple of the threads.
        let (rows, threads) = (codes.len(), candle_core::utils::get_num_threads().max(1));
        let blocks = threads * rows.div_ceil(threads * MAX_ROWS_PER_TASK);
        let per = rows.div_ceil(blocks.max(1)).max(1);
        x.par_chunks_mut(per * d)
            .zip(codes.par_chunks_mut(per))
            .try_for_each(|(x, codes)| self.quantize_block(x, codes, subtract))
    }

    fn quantize_block(&self, x: &mut [f32], codes: &mut [u32], subtract: bool) -> Result<()> {
        let (d, n, rows) = (self.dim, self.size, codes.len());
        let mut dist = Vec::with_capacity(rows * n);
        for r in x.chunks_exact(d) {
            let x2: f32 = r.iter().map(|v| v * v).sum();
            dist.extend(std::iter::repeat_n(x2, n));
        }
        let lhs = Mat {
            data: x,
            rows,
            cols: d,
            rs: d,
            cs: 1,
        };
        let rhs = Mat {
            data: &self.embed,
            rows: d,
            cols: n,
            rs: 1,
            cs: d,
        };
        // In a rayon task already: gemm without threads of its own.
        matmul_acc_with(&mut dist, n, lhs, rhs, -2.0, gemm::Parallelism::None)?;
        for ((code, row), xr) in codes
            .iter_mut()
            .zip(dist.chunks_exact(n))
            .zip(x.chunks_exact_mut(d))
        {
            let mut best = (0usize, f32::INFINITY);
            for (k, (v, e2)) in row.iter().zip(&self.norms).enumerate() {
                let v = v + e2;
                if v < best.1 {
                    best = (k, v);
                }
            }
            *code = best.0 as u32;
            if subtract {
                let e = &self.embed[best.0 * d..(best.0 + 1) * d];
                for (a, b) in xr.iter_mut().zip(e) {
                    *a -= b;
                }
            }
        }
        Ok(())
    }
}

/// Residual quantisation of `x` (`[rows, dim]`, consumed as the residual) by `books` in order:
/// codes `[books.len(), rows]`.
pub(crate) fn encode(books: &[&HostCodebook], mut x: Vec<f32>, rows: usize) -> Result<Vec<u32>> {
    let mut codes = vec![0u32; books.len() * rows];
    for (q, (book, codes)) in books
        .iter()
        .zip(codes.chunks_exact_mut(rows.max(1)))
        .enumerate()
    {
        book.quantize(&mut x, codes, q + 1 < books.len())?;
    }
    Ok(codes)
}

#[cfg(test)]
#[path = "rvq_cpu_tests.rs"]
mod tests;
