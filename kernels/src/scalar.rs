//! Scalar reference kernel: the specification every SIMD tile must match bit for bit.
//! `y[row] = Σ_k w[row, k] · x[k]` with `w = code − 1` read straight from the T2 blocks
//! (`crate::format`), i32 accumulation (exact for `k ≤ format::MAX_K`).

use crate::format::{BlockT2, BLOCK_K, PANEL_ROWS};

/// Dot products of one panel's 16 rows with one activation row `x` (`nb · 16` values, padded
/// with anything: padding weights are 0).
pub(crate) fn tile(blocks: &[BlockT2], x: &[i8]) -> [i32; PANEL_ROWS] {
    let mut out = [0i32; PANEL_ROWS];
    for (r, acc) in out.iter_mut().enumerate() {
        for (blk, xs) in blocks.iter().zip(x.chunks_exact(BLOCK_K)) {
            for (c, &xv) in xs.iter().enumerate() {
                let code = (blk.qs[r * 4 + c % 4] >> (2 * (c / 4))) & 3;
                *acc += (i32::from(code) - 1) * i32::from(xv);
            }
        }
    }
    out
}
