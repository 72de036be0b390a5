//! The portable tile ([`Isa::Portable`](crate::Isa::Portable)): plain Rust written so the compiler
//! vectorises it for whatever the target has (SSE2 on baseline x86-64, NEON / SVE on ARM) — no
//! intrinsics. It must equal the scalar specification (`crate::scalar`) bit for bit (tests).
//!
//! Layout (the T2 format, `crate::format`): byte `j` of a block holds row `j / 4`, and in bits
//! `2i..2i+1` the code of column `4i + j % 4`. For plane `i` the 64 bytes shifted right by `2i`
//! and masked are the codes of 16 rows × 4 columns, and the four activations of those columns
//! repeat every four lanes — [`expand`] writes that 16-lane pattern once per call for every
//! block and plane. Each block is then four passes over 64 u16 lanes in fixed chunks of 16:
//! `acc[j] += code · x[j % 4]` in i16 (|code · x| ≤ 256, four planes per block: ≤ 1024, so
//! [`FLUSH`] blocks fit), widened to i32 every [`FLUSH`] blocks. Row `r` is the sum of lanes
//! `4r..4r + 4`, minus `Σ x` (codes are weights + 1).

use crate::format::{BlockT2, BLOCK_K, PANEL_ROWS};

/// Blocks accumulated in i16 lanes before widening: 16 · 1024 = 16384 < 32767.
const FLUSH: usize = 16;
/// Lanes: one per byte of a block.
const LANES: usize = 64;
/// Lanes per fixed-width chunk.
const W: usize = 16;

/// The activation pattern of every block and plane: entry `4b + i` holds `x[16b + 4i + l % 4]`
/// in lane `l` (`x` is `nb · 16` values).
pub(crate) fn expand(x: &[i8], out: &mut Vec<[i16; W]>) {
    out.clear();
    for xb in x.chunks_exact(BLOCK_K) {
        for i in 0..4 {
            let mut v = [0i16; W];
            for (l, e) in v.iter_mut().enumerate() {
                *e = i16::from(xb[4 * i + l % 4]);
            }
            out.push(v);
        }
    }
}

/// Dot products of one panel's 16 rows with one activation row, given as its [`expand`]ed
/// pattern; `x_sum = Σ x`.
pub(crate) fn tile(blocks: &[BlockT2], xexp: &[[i16; W]], x_sum: i32) -> [i32; PANEL_ROWS] {
    let mut wide = [0i32; LANES];
    for (bs, xs) in blocks.chunks(FLUSH).zip(xexp.chunks(4 * FLUSH)) {
        let mut acc = [0i16; LANES];
        for (blk, xb) in bs.iter().zip(xs.chunks_exact(4)) {
            let mut q = [0u16; LANES];
            for (d, &s) in q.iter_mut().zip(&blk.qs) {
                *d = u16::from(s);
            }
            for (i, xv) in xb.iter().enumerate() {
                for (a, qc) in acc.chunks_exact_mut(W).zip(q.chunks_exact(W)) {
                    for l in 0..W {
                        let code = ((qc[l] >> (2 * i)) & 3) as i16;
                        // No wrap: |Σ| ≤ FLUSH · 1024 (module docs).
                        a[l] = a[l].wrapping_add(code.wrapping_mul(xv[l]));
                    }
                }
            }
        }
        for (w, a) in wide.iter_mut().zip(&acc) {
            *w += i32::from(*a);
        }
    }
    let mut out = [0i32; PANEL_ROWS];
    for (o, w) in out.iter_mut().zip(wide.chunks_exact(4)) {
        *o = w[0] + w[1] + w[2] + w[3] - x_sum;
    }
    out
}
