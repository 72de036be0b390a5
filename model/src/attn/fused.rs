//! Decode tile kernels that read the cache as stored: f16 keys/values converted in registers, and
//! INT4 keys/values decoded in registers with each group's step folded into the query (keys) or
//! the probability (values) once per group, so no dequantised tile is ever written to memory.
//!
//! The kernel bodies are written once over [`V16`] (`lanes`), sixteen f32 lanes; [`Lanes`]
//! (plain arrays) is the specification, and `fused_x86` runs the same bodies on AVX-512 or AVX2 + FMA + F16C
//! registers whose every operation computes each lane exactly as [`Lanes`] with fused
//! multiply-adds does, so every build equals the generic one bit for bit (tests). Against the dequantise-then-multiply
//! path (`attn::int4` + `attn::tile`) the results differ only by rounding:
//!
//! - f16: `scores_f16` / `accumulate_f16` equal `tile::scores_generic` / `accumulate_generic`
//!   on the keys/values converted to f32, bit for bit (f16 → f32 is exact, the order is the same).
//! - INT4 keys: `fused_int4`, exact integer dot products of the scaled query, rounded to i8 per
//!   block of 32 channels, with the codes (token-lane key chunks; error bounded and tested).
//! - INT4 values: `fused_int4_values`, exact integer sums of the codes centred on 8 weighted by
//!   u8-rounded `p · step` over token quads (error bounded and tested); the online-softmax step
//!   (`tile::online_softmax_rows`) is built per instruction set too.
//!
//! Shapes the fused kernels take (others use the f32 path): `head_dim % 64 == 0`, and for INT4
//! a value group `vg % 32 == 0` (16 bytes of a token's codes stay in one group); the decode path
//! uses them for at most [`MAX_ROWS`] query rows per kv head.

use std::sync::OnceLock;

use half::f16;

use super::fused_int4::dot_codes_generic;
pub(crate) use super::fused_int4::{scores_int4, Int4Scratch};
use super::fused_int4_values::value_codes_generic;
pub(crate) use super::fused_int4_values::{accumulate_int4, merge_values};
use super::kv::{lines_per_part, prefetch_lines, Int4Tile};
pub(crate) use super::lanes::{row, Lanes, L, ROWS, V16};

/// Most query rows the decode path gives these kernels: they decode each key once per four rows,
/// so past this a tile converted to f32 once is cheaper.
pub(crate) const MAX_ROWS: usize = 8;

/// `s[r * n + j] = scale · q[r] · k[j]`, f16 keys `[n][d]`; `ahead` (the next tile's keys) is
/// fetched a few lines per key (a hint, see [`prefetch_lines`]).
pub(crate) type ScoresF16 =
    fn(q: &[f32], keys: &[f16], d: usize, scale: f32, s: &mut [f32], ahead: &[f16]);
/// `acc[r] += Σ_j p[r * n + j] · v[j]`, f16 values `[n][d]`; `ahead` (the next tile's values)
/// is fetched a few lines per value.
pub(crate) type AccumulateF16 =
    fn(p: &[f32], vals: &[f16], d: usize, acc: &mut [f32], ahead: &[f16]);
/// Scores of INT4 keys (`fused_int4::scores_int4`).
pub(crate) type ScoresInt4 =
    fn(q: &[f32], t: &Int4Tile<'_>, d: usize, scale: f32, s: &mut [f32], scratch: &mut Int4Scratch);
/// Accumulation of INT4 values into `accp` (the value lane order of `fused_int4_values`) and
/// `acc` (natural order, the minima) (`fused_int4_values::accumulate_int4`).
pub(crate) type AccumulateInt4 = fn(
    p: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    accp: &mut [f32],
    acc: &mut [f32],
    scratch: &mut Int4Scratch,
);

/// The rows' online-softmax step over a tile's scores (`tile::online_softmax_rows`), built for
/// the same instruction set as the kernels around it.
pub(crate) type SoftmaxRows =
    fn(m: &mut [f32], l: &mut [f32], acc: &mut [f32], s: &mut [f32], corr: &mut [f32]);

/// The fused kernels chosen for this CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FusedKernels {
    pub scores_f16: ScoresF16,
    pub accumulate_f16: AccumulateF16,
    pub scores_int4: ScoresInt4,
    pub accumulate_int4: AccumulateInt4,
    pub softmax_rows: SoftmaxRows,
    pub name: &'static str,
}

/// The generic build (no FMA: the spec of CPUs without it).
pub(crate) const GENERIC: FusedKernels = FusedKernels {
    scores_f16: scores_f16::<Lanes<false>>,
    accumulate_f16: accumulate_f16::<Lanes<false>>,
    scores_int4: generic_scores_int4,
    accumulate_int4: generic_accumulate_int4,
    softmax_rows: super::tile::online_softmax_rows,
    name: "generic",
};

/// The generic INT4 value accumulation (portable integer sums, no FMA).
fn generic_accumulate_int4(
    p: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    accp: &mut [f32],
    acc: &mut [f32],
    scratch: &mut Int4Scratch,
) {
    accumulate_int4::<Lanes<false>>(value_codes_generic, p, t, d, accp, acc, scratch)
}

/// The generic INT4 scores (portable integer dot, no FMA).
fn generic_scores_int4(
    q: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    scale: f32,
    s: &mut [f32],
    scratch: &mut Int4Scratch,
) {
    scores_int4::<Lanes<false>>(dot_codes_generic, q, t, d, scale, s, scratch)
}

/// Detected once per process: the best build this CPU supports within [`super::kernel_cap`].
pub(crate) fn kernels() -> &'static FusedKernels {
    static K: OnceLock<FusedKernels> = OnceLock::new();
    K.get_or_init(|| {
        let cap = super::kernel_cap();
        let best = super::fused_arch::available()
            .into_iter()
            .find(|k| super::kernel_level(k.name) <= cap);
        best.unwrap_or(GENERIC)
    })
}

/// Whether the fused kernels take this shape (else the f32 path runs).
pub(crate) fn takes(d: usize, vg: usize) -> bool {
    d.is_multiple_of(64) && vg.is_multiple_of(32)
}

/// Scores against f16 keys: equals `tile::scores_generic::<FMA>` on the keys as f32.
#[inline(always)]
pub(crate) fn scores_f16<V: V16>(
    q: &[f32],
    keys: &[f16],
    d: usize,
    scale: f32,
    s: &mut [f32],
    ahead: &[f16],
) {
    let (rows, n) = (q.len() / d, keys.len() / d);
    let per = lines_per_part(ahead, n);
    for r0 in (0..rows).step_by(ROWS) {
        let rb = (rows - r0).min(ROWS);
        let qr: [&[f32]; ROWS] = [0, 1, 2, 3].map(|r| &q[row(r0, r, rb) * d..][..d]);
        let out = |r: usize, j: usize| (r0 + r) * n + j;
        // The fetches only in the first pass, in a loop of their own (one loop testing the pass
        // per key measured 1–3% slower on a Zen 5 EPYC with the tile in cache).
        if r0 == 0 {
            for (j, k) in keys.chunks_exact(d).enumerate() {
                prefetch_lines(ahead, j * per, per);
                let a = score4::<V>(&qr, k);
                for (r, x) in a.iter().enumerate().take(rb) {
                    s[out(r, j)] = x * scale;
                }
            }
        } else {
            for (j, k) in keys.chunks_exact(d).enumerate() {
                let a = score4::<V>(&qr, k);
                for (r, x) in a.iter().enumerate().take(rb) {
                    s[out(r, j)] = x * scale;
                }
            }
        }
    }
}

/// The four rows' dot products with one f16 key (`tile::dot_generic`'s order).
#[inline(always)]
fn score4<V: V16>(qr: &[&[f32]; ROWS], k: &[f16]) -> [f32; ROWS] {
    let mut acc = [V::zero(); ROWS];
    for (x, qc) in k.chunks_exact(L).zip(quad_chunks(qr)) {
        let x = V::load_f16(x);
        madd4(&mut acc, qc, x);
    }
    V::reduce4(acc)
}

/// The 16-lane chunks of four equally long rows, side by side.
#[inline(always)]
fn quad_chunks<'a>(r: &[&'a [f32]; ROWS]) -> impl Iterator<Item = [&'a [f32]; ROWS]> {
    r[0].chunks_exact(L)
        .zip(r[1].chunks_exact(L))
        .zip(r[2].chunks_exact(L))
        .zip(r[3].chunks_exact(L))
        .map(|(((a, b), c), d)| [a, b, c, d])
}

/// `acc[r] = q[r] · x + acc[r]` for the four rows.
#[inline(always)]
fn madd4<V: V16>(acc: &mut [V; ROWS], q: [&[f32]; ROWS], x: V) {
    acc[0] = V::load(q[0]).madd(x, acc[0]);
    acc[1] = V::load(q[1]).madd(x, acc[1]);
    acc[2] = V::load(q[2]).madd(x, acc[2]);
    acc[3] = V::load(q[3]).madd(x, acc[3]);
}

/// Accumulation of f16 values: equals `tile::accumulate_generic::<FMA>` on the values as f32
/// (64 columns of [`ROWS`] rows held across all values; a zero probability is skipped).
#[inline(always)]
pub(crate) fn accumulate_f16<V: V16>(
    p: &[f32],
    vals: &[f16],
    d: usize,
    acc: &mut [f32],
    ahead: &[f16],
) {
    let (rows, n) = (acc.len() / d, vals.len() / d);
    let per = lines_per_part(ahead, n);
    for r0 in (0..rows).step_by(ROWS) {
        let rb = (rows - r0).min(ROWS);
        for c in (0..d).step_by(4 * L) {
            let mut a = [[V::zero(); 4]; ROWS];
            for (r, ar) in a.iter_mut().enumerate().take(rb) {
                for (b, ab) in ar.iter_mut().enumerate() {
                    *ab = V::load(&acc[(r0 + r) * d + c + b * L..]);
                }
            }
            let pr = |r: usize, j: usize| p[(r0 + r) * n + j];
            // The fetches only in the first pass, in a loop of their own (as in `scores_f16`).
            if r0 == 0 && c == 0 {
                for (j, v) in vals.chunks_exact(d).enumerate() {
                    prefetch_lines(ahead, j * per, per);
                    add_value::<V>(&mut a, rb, &v[c..], |r| pr(r, j));
                }
            } else {
                for (j, v) in vals.chunks_exact(d).enumerate() {
                    add_value::<V>(&mut a, rb, &v[c..], |r| pr(r, j));
                }
            }
            for (r, ar) in a.iter().enumerate().take(rb) {
                for (b, ab) in ar.iter().enumerate() {
                    ab.store(&mut acc[(r0 + r) * d + c + b * L..]);
                }
            }
        }
    }
}

/// `a[r] += p(r) · v[..64]` for the first `rb` rows (a zero probability is skipped).
#[inline(always)]
fn add_value<V: V16>(a: &mut [[V; 4]; ROWS], rb: usize, v: &[f16], p: impl Fn(usize) -> f32) {
    let x = [
        V::load_f16(v),
        V::load_f16(&v[L..]),
        V::load_f16(&v[2 * L..]),
        V::load_f16(&v[3 * L..]),
    ];
    for (r, ar) in a.iter_mut().enumerate().take(rb) {
        let pj = p(r);
        if pj == 0.0 {
            continue;
        }
        let pv = V::splat(pj);
        for (ab, xb) in ar.iter_mut().zip(&x) {
            *ab = pv.madd(*xb, *ab);
        }
    }
}

#[cfg(test)]
#[path = "fused_tests.rs"]
mod tests;
