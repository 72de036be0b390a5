//! The portable tile ([`Isa::Portable`](crate::Isa::Portable)): plain Rust written so the compiler
//! vectorises it for whatever the target has (SSE2 on baseline x86-64, NEON / SVE on ARM) — no
//! intrinsics. It must equal the scalar specification (`crate::scalar`) bit for bit (tests).
//!
//! Layout (the T2 format, `crate::format`): read as 32 little-endian u16 lanes, lane `l` of a
//! block holds bytes `2l, 2l + 1`, both of row `l / 2`: eight 2-bit codes `f_0 .. f_7`, field
//! `j` at bits `2j`, the code of column `c_j = 4 (j % 4) + 2 (l % 2) + j / 4` of the block.
//!
//! Instead of isolating each field (shift + mask + multiply per field), the tile multiplies
//! the *shifted lane* `v_j = lane >> 2j` by a telescoped activation: with `y_j = x[c_j]`,
//! `z_0 = y_0` and `z_j = y_j − 4·y_{j−1}`,
//!
//! ```text
//! Σ_j v_j · z_j = Σ_j y_j · (v_j − 4·v_{j+1}) = Σ_j y_j · f_j        (v_8 = 0)
//! ```
//!
//! because `v_j − 4·v_{j+1}` is field `j`. Every term is taken modulo 2^16 (wrapping i16
//! multiply-add: one shift, one multiply, one add per field and 8 lanes), which is exact
//! once the true sum of a lane fits in i16: a lane gains at most 8 products `|c · x| ≤ 256`
//! per block (codes are 0..=2, `x ≥ −128`), so [`FLUSH`] = 16 blocks stay within
//! [−32768, 32512] before the lanes are widened to i32. The `z` patterns depend only on the
//! activations: [`Steps::expand`] makes them once per call (eight 8-lane vectors per block,
//! repeating every two lanes) and every panel reuses them. Row `r` is lanes `2r` and `2r + 1`
//! summed, minus `Σ x` (codes are weights + 1).
//!
//! Each run of [`FLUSH`] blocks is one out-of-line call ([`window`]) whose block loop keeps
//! the 32 lanes in registers; see there for why it is shaped so. On x86-64's baseline (SSE2)
//! a block is 92 vector ALU operations (32 `pmullw`, 28 `psrlw`, 32 `paddw`) against about 30
//! for the AVX2 tile on 256-bit registers, which caps this formulation near 0.35 of the AVX2
//! path; measured 0.27–0.33 at 1 thread on an Intel Xeon (family 6 model 207). Figures, and
//! the SSSE3 `pmaddubsw` formulation that was tried and not kept, in `kernels/README.md`.

use crate::format::{BlockT2, BLOCK_K, PANEL_ROWS};

/// Blocks accumulated in i16 lanes before widening: 16 · 8 · 256 = 32768 (module docs).
const FLUSH: usize = 16;
/// u16 lanes per block.
const LANES: usize = 32;
/// Lanes per fixed-width chunk (one 128-bit vector of u16).
const W: usize = 8;
/// Fields (2-bit codes) per u16 lane.
const FIELDS: usize = 8;

/// The telescoped activations of one block: entry `j` holds `z_j` of every lane of a chunk
/// (lane `l` and `l + 2` share them).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BlockSteps([[i16; W]; FIELDS]);

/// The telescoped activations of one activation row, one [`BlockSteps`] per column block.
#[derive(Clone, Debug, Default)]
pub(crate) struct Steps(Vec<BlockSteps>);

impl Steps {
    /// Fills `self` for the activation row `x` (`nb · 16` values).
    pub(crate) fn expand(&mut self, x: &[i8]) {
        self.0.clear();
        for xb in x.chunks_exact(BLOCK_K) {
            let mut s = BlockSteps::default();
            for l in 0..W {
                let y = |j: usize| i16::from(xb[4 * (j % 4) + 2 * (l % 2) + j / 4]);
                s.0[0][l] = y(0);
                for j in 1..FIELDS {
                    s.0[j][l] = y(j).wrapping_sub(y(j - 1).wrapping_mul(4));
                }
            }
            self.0.push(s);
        }
    }
}

/// Adds the fields of a run of (at most [`FLUSH`]) blocks to the lanes of `acc` (module docs).
///
/// Out of line, with an optimisation barrier after each block, on purpose: LLVM's loop
/// vectoriser would otherwise take the block loop (one block per vector lane, the lanes
/// gathered with `pinsrw`, 3–5× slower on x86-64) instead of leaving the straight-line block
/// body to the SLP vectoriser, which vectorises it across the 8 lanes of each chunk. The
/// barrier (`black_box(())`, an empty asm statement: no instruction) only stops the loop
/// vectoriser; the lanes stay in registers across the run, and the 8 `z` vectors of a block
/// are loaded once and serve its 4 chunks.
#[inline(never)]
fn window(acc: &mut [[i16; W]; 4], blocks: &[BlockT2], steps: &[BlockSteps]) {
    let mut a = *acc;
    for (blk, s) in blocks.iter().zip(steps) {
        let v = lanes(blk);
        let [a0, a1, a2, a3] = &mut a;
        chunk(a0, &v[..8], s);
        chunk(a1, &v[8..16], s);
        chunk(a2, &v[16..24], s);
        chunk(a3, &v[24..], s);
        std::hint::black_box(());
    }
    *acc = a;
}

/// The block's 64 bytes as 32 little-endian u16 lanes, by a whole-block copy: built byte pair
/// by byte pair (`u16::from_le_bytes`), LLVM's aarch64 back end de-interleaved the bytes
/// (`ld2`) and rebuilt each lane (`uxtl`, `shll`, `orr`: 16 operations per block, 11 net);
/// this is four plain vector loads there and on x86-64.
#[inline(always)]
fn lanes(blk: &BlockT2) -> [u16; LANES] {
    // SAFETY: `[u8; 64]` and `[u16; 32]` have the same size and every bit pattern is a valid
    // u16; a transmute by value has no alignment requirement.
    let mut raw: [u16; LANES] = unsafe { std::mem::transmute::<[u8; 64], [u16; LANES]>(blk.qs) };
    for x in &mut raw {
        *x = u16::from_le(*x);
    }
    raw
}

/// One chunk of 8 lanes (16 bytes, 4 rows) of a block: eight shift · multiply · add steps.
#[inline(always)]
fn chunk(a: &mut [i16; W], lanes: &[u16], s: &BlockSteps) {
    let mut v = [0u16; W];
    v.copy_from_slice(lanes);
    for z in &s.0 {
        for l in 0..W {
            // Wrapping: exact modulo 2^16, and the flushed sum fits (module docs).
            a[l] = a[l].wrapping_add((v[l] as i16).wrapping_mul(z[l]));
            v[l] >>= 2;
        }
    }
}

/// Dot products of one panel's 16 rows with one activation row, given as its expanded
/// [`Steps`]; `x_sum = Σ x`.
pub(crate) fn tile(blocks: &[BlockT2], steps: &Steps, x_sum: i32) -> [i32; PANEL_ROWS] {
    let mut wide = [0i32; LANES];
    for (bs, ss) in blocks.chunks(FLUSH).zip(steps.0.chunks(FLUSH)) {
        let mut acc = [[0i16; W]; 4];
        window(&mut acc, bs, ss);
        for (wc, ac) in wide.chunks_exact_mut(W).zip(&acc) {
            for (w, a) in wc.iter_mut().zip(ac) {
                *w += i32::from(*a);
            }
        }
    }
    let mut out = [0i32; PANEL_ROWS];
    for (o, w) in out.iter_mut().zip(wide.chunks_exact(2)) {
        *o = w[0] + w[1] - x_sum;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every valid byte (four codes 0..=2) in every position of a panel, against the scalar
    /// specification, with the activations at both ends of the i8 range and in between.
    #[test]
    fn every_code_byte_matches_the_scalar_spec() {
        let valid: Vec<u8> = (0u8..=255)
            .filter(|b| (0..4).all(|i| (b >> (2 * i)) & 3 != 3))
            .collect();
        let nb = 40;
        let blocks: Vec<BlockT2> = (0..nb)
            .map(|b| BlockT2 {
                qs: std::array::from_fn(|j| valid[(b * 64 + j * 7) % valid.len()]),
            })
            .collect();
        for x in [
            vec![-128i8; nb * BLOCK_K],
            vec![127i8; nb * BLOCK_K],
            (0..nb * BLOCK_K)
                .map(|i| (i * 37 % 256) as u8 as i8)
                .collect(),
        ] {
            let mut steps = Steps::default();
            steps.expand(&x);
            let x_sum: i32 = x.iter().map(|&v| i32::from(v)).sum();
            assert_eq!(
                tile(&blocks, &steps, x_sum),
                crate::scalar::tile(&blocks, &x)
            );
        }
    }
}
