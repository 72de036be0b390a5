//! The value side of the INT4 decode kernels of `fused`: `Σ_j p_j v̂_j` over a tile of INT4 values
//! (per-token groups of `vg` channels, `v̂ = step · code + min`) as exact integer sums. Per row
//! and tile the weights `w_jg = p_j · step_jg` are rounded to i16 with one step `S = max w /
//! 32767`, so `Σ_j w_jg code_j = S · Σ_j q16_jg code_j` up to that rounding, and the integer sums
//! run on `vpdpwssd` (AVX-512 VNNI) or `vpmaddwd` (AVX2) over token pairs: a 32-bit lane holds one
//! channel's codes of tokens `2p` and `2p + 1`, the weight operand the two tokens' `q16` of that
//! channel's group. The minima `Σ_j p_j m_jg` stay in f32 (summed in 16 lanes) and go straight into
//! the natural-order accumulator.
//!
//! What every build must match: the integer sums are exact in any order and the f32 steps are the
//! same operations per element, so every build equals the generic one bit for bit (tests). Against
//! the product over the dequantised values the code terms of channel `c` differ by at most
//! `S/2 · Σ_j code_jc` (the i16 rounding; tests check the bound) plus f32 rounding.
//!
//! The integer sums and the code-term accumulator (`accp`) are kept in the *value lane order*
//! ([`vpos`]): the order in which the SIMD builds' registers come out of the byte interleave, so
//! they store their sums without a shuffle; [`merge_values`] puts them back in channel order.

use super::fused_int4::{to_f32, Int4Scratch, Q16, ROUND};
use super::kv::Int4Tile;
use super::lanes::{L, V16};

/// Most tokens of one integer pass: `|Σ q16 · code| ≤ 32767 · 15 · 2048 < 2^31`. Longer tiles
/// are taken this many tokens at a time, each with its own weight step.
pub(crate) const MAX_TOKENS: usize = 2048;

/// i16 weights past the last ones that the SIMD builds may read (one 64-byte load).
pub(crate) const WEIGHT_PAD: usize = 32;

/// `isum[r][vpos(c)] = Σ_j wq(r, j, group(c)) · code_j[c]` for `rows` rows: `wq` `[rows][n.div_ceil(2)]
/// [groups][2]` (tokens `2p` and `2p + 1` side by side per group, the missing token of an odd `n`
/// weighted 0) followed by [`WEIGHT_PAD`] zeros, `codes` `[n][d / 2]`, `isum` `[rows][d]`.
pub(crate) type ValueCodes = fn(wq: &[i16], codes: &[u8], d: usize, vg: usize, isum: &mut [i32]);

/// Position of channel `c` (of `d`) in the value lane order: byte `b = c / 2` of a token's codes
/// lies in 64-byte chunk `b / 64` (the last one 32 bytes when `d % 128 == 64`); within it, its
/// 16-byte block `k`, 4-byte group `m` and byte `i` give register `2m + (c odd)` of the chunk and
/// lane `4k + i` in it.
#[inline(always)]
pub(crate) fn vpos(d: usize, c: usize) -> usize {
    let (h, b, nib) = (d / 2, c / 2, c % 2);
    let (chunk, within) = (b / 64, b % 64);
    let lanes = (h - 64 * chunk).min(64) / 4;
    let (k, m, i) = (within / 16, within % 16 / 4, within % 4);
    128 * chunk + (2 * m + nib) * lanes + 4 * k + i
}

/// The portable [`ValueCodes`].
pub(crate) fn value_codes_generic(wq: &[i16], codes: &[u8], d: usize, vg: usize, isum: &mut [i32]) {
    let (h, groups) = (d / 2, d / vg);
    let n = codes.len() / h;
    let per_row = n.div_ceil(2) * groups * 2;
    for (r, out) in isum.chunks_exact_mut(d).enumerate() {
        let w = &wq[r * per_row..][..per_row];
        for c in 0..d {
            let g = c / vg;
            let mut acc = 0i32;
            for (j, cj) in codes.chunks_exact(h).enumerate() {
                let code = (cj[c / 2] >> (4 * (c % 2))) & 15;
                acc += i32::from(w[((j / 2) * groups + g) * 2 + j % 2]) * i32::from(code);
            }
            out[vpos(d, c)] = acc;
        }
    }
}

/// `w[i] = p[i / G] · x[i]` (0 where that `p` is 0) over `[n][G]` entries.
#[inline(always)]
fn weigh<const G: usize>(p: &[f32], x: &[f32], w: &mut [f32]) {
    for ((wj, xj), &pj) in w.chunks_exact_mut(G).zip(x.chunks_exact(G)).zip(p) {
        for (o, &v) in wj.iter_mut().zip(xj) {
            *o = if pj == 0.0 { 0.0 } else { pj * v };
        }
    }
}

/// Σ_j of `[n][G]` entries per group `g`: entry `i` into lane `i % 16`, then lanes halved while
/// more than `G` remain (lane `l` holds group `l % G`).
#[inline(always)]
fn group_sums<const G: usize>(u: &[f32], out: &mut [f32]) {
    let mut lanes = [0f32; L];
    let chunks = u.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in lanes.iter_mut().zip(c) {
            *a += x;
        }
    }
    for (a, &x) in lanes.iter_mut().zip(tail) {
        *a += x;
    }
    let mut w = L / 2;
    while w >= G {
        for l in 0..w {
            lanes[l] += lanes[l + w];
        }
        w /= 2;
    }
    out[..G].copy_from_slice(&lanes[..G]);
}

/// [`weigh`] and [`group_sums`] for `groups` ∈ {1, 2, 4, 8} (what `d ≤ 256` with `vg % 32 == 0`
/// allows; larger counts run the same loops unrolled less).
#[inline(always)]
fn weigh_any(groups: usize, p: &[f32], x: &[f32], w: &mut [f32], sums: Option<&mut [f32]>) {
    match groups {
        1 => weigh::<1>(p, x, w),
        2 => weigh::<2>(p, x, w),
        4 => weigh::<4>(p, x, w),
        8 => weigh::<8>(p, x, w),
        _ => {
            for ((wj, xj), &pj) in w
                .chunks_exact_mut(groups)
                .zip(x.chunks_exact(groups))
                .zip(p)
            {
                for (o, &v) in wj.iter_mut().zip(xj) {
                    *o = if pj == 0.0 { 0.0 } else { pj * v };
                }
            }
        }
    }
    if let Some(out) = sums {
        match groups {
            1 => group_sums::<1>(w, out),
            2 => group_sums::<2>(w, out),
            4 => group_sums::<4>(w, out),
            8 => group_sums::<8>(w, out),
            _ => {
                for (g, o) in out.iter_mut().enumerate().take(groups) {
                    *o = w.iter().skip(g).step_by(groups).sum();
                }
            }
        }
    }
}

/// The largest of `w` (exact in any order; 16 lanes so it vectorises).
#[inline(always)]
fn lane_max(w: &[f32]) -> f32 {
    let mut mx = [0f32; L];
    let chunks = w.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in mx.iter_mut().zip(c) {
            *m = m.max(x.abs());
        }
    }
    for (m, &x) in mx.iter_mut().zip(tail) {
        *m = m.max(x.abs());
    }
    mx.iter().copied().fold(0.0, f32::max)
}

/// `sp[(p · G + g) · 2 + t] = s[(2p + t) · G + g]`: the per-token steps `[n][G]` in the weight
/// pair order `[n.div_ceil(2)][G][2]` (an odd `n`'s missing token 0).
#[inline(always)]
fn pair_steps<const G: usize>(s: &[f32], sp: &mut [f32]) {
    for (o, pair) in sp.chunks_exact_mut(2 * G).zip(s.chunks(2 * G)) {
        for g in 0..G {
            o[2 * g] = pair[g];
            o[2 * g + 1] = pair.get(G + g).copied().unwrap_or(0.0);
        }
    }
}

/// `w = p · sp` in the weight pair order (0 where that `p` is 0), `sp` from [`pair_steps`].
#[inline(always)]
fn weigh_pairs<const G: usize>(p: &[f32], sp: &[f32], w: &mut [f32]) {
    if G == 1 {
        // The pair order is the token order.
        let (head, tail) = w.split_at_mut(p.len());
        for ((o, &s), &pj) in head.iter_mut().zip(sp).zip(p) {
            *o = if pj == 0.0 { 0.0 } else { pj * s };
        }
        tail.fill(0.0);
        return;
    }
    let pairs = p.chunks_exact(2);
    let tail = pairs.remainder();
    let mut wo = w.chunks_exact_mut(2 * G).zip(sp.chunks_exact(2 * G));
    for (pj, (o, s)) in pairs.zip(&mut wo) {
        for g in 0..G {
            for t in 0..2 {
                o[2 * g + t] = if pj[t] == 0.0 {
                    0.0
                } else {
                    pj[t] * s[2 * g + t]
                };
            }
        }
    }
    if let (Some(&p0), Some((o, s))) = (tail.first(), wo.next()) {
        for g in 0..G {
            o[2 * g] = if p0 == 0.0 { 0.0 } else { p0 * s[2 * g] };
            o[2 * g + 1] = 0.0;
        }
    }
}

/// [`pair_steps`] (`p == None`) or [`weigh_pairs`] for `groups` ∈ {1, 2, 4, 8} (see
/// [`weigh_any`]); larger counts run the generic-size loops.
#[inline(always)]
fn pairs_any(groups: usize, p: Option<&[f32]>, x: &[f32], out: &mut [f32]) {
    macro_rules! go {
        ($g:literal) => {
            match p {
                None => pair_steps::<$g>(x, out),
                Some(p) => weigh_pairs::<$g>(p, x, out),
            }
        };
    }
    match groups {
        1 => go!(1),
        2 => go!(2),
        4 => go!(4),
        8 => go!(8),
        _ => {
            let n = x.len() / groups;
            for (i, o) in out.iter_mut().enumerate() {
                let (pp, g, t) = (i / (2 * groups), i / 2 % groups, i % 2);
                let j = 2 * pp + t;
                *o = match p {
                    None if j < n => x[j * groups + g],
                    Some(p) if j < p.len() && p[j] != 0.0 => p[j] * x[i],
                    _ => 0.0,
                };
            }
        }
    }
}

/// Rounds the weights `w` to i16 in `wq` (same order); returns their step `S` (`w ≈ S · q16`).
#[inline(always)]
fn quantise_weights(w: &[f32], wq: &mut [i16]) -> f32 {
    let amax = lane_max(w);
    let inv = if amax > 0.0 { Q16 / amax } else { 0.0 };
    for (o, &x) in wq.iter_mut().zip(w) {
        *o = (((x * inv) + ROUND) - ROUND).clamp(-Q16, Q16) as i32 as i16;
    }
    amax / Q16
}

/// Accumulation of INT4 values (module docs): `accp` `[rows][d]` in the value lane order gets the
/// code terms, `acc` `[rows][d]` (channel order) the minima; `codes` is the build's integer sum.
#[inline(always)]
pub(crate) fn accumulate_int4<V: V16>(
    codes: ValueCodes,
    p: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    accp: &mut [f32],
    acc: &mut [f32],
    scratch: &mut Int4Scratch,
) {
    let (h, vg) = (d / 2, t.vg);
    let (n, groups) = (t.vc.len() / h, d / vg);
    let mut j0 = 0;
    while j0 < n {
        let j1 = n.min(j0 + MAX_TOKENS);
        let part = Int4Tile {
            vc: &t.vc[j0 * h..j1 * h],
            vm: &t.vm[j0 * groups..j1 * groups],
            vs: &t.vs[j0 * groups..j1 * groups],
            ..*t
        };
        accumulate_part::<V>(codes, p, n, j0, &part, d, accp, acc, scratch);
        j0 = j1;
    }
}

/// [`accumulate_int4`] over tokens `j0..` (at most [`MAX_TOKENS`]) of a tile of `n`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn accumulate_part<V: V16>(
    codes: ValueCodes,
    p: &[f32],
    n_all: usize,
    j0: usize,
    t: &Int4Tile<'_>,
    d: usize,
    accp: &mut [f32],
    acc: &mut [f32],
    scratch: &mut Int4Scratch,
) {
    let (rows, h, vg) = (acc.len() / d, d / 2, t.vg);
    let (n, groups) = (t.vc.len() / h, d / vg);
    let ng = n * groups;
    let per_row = n.div_ceil(2) * groups * 2;
    let Int4Scratch { f, q16, dots, .. } = scratch;
    f.resize(2 * per_row + 2 * ng + groups + rows, 0.0);
    let (w, rest) = f.split_at_mut(per_row);
    let (sp, rest) = rest.split_at_mut(per_row);
    let (mins, rest) = rest.split_at_mut(ng);
    let (steps, rest) = rest.split_at_mut(ng);
    let (sums, step16) = rest.split_at_mut(groups);
    q16.resize(rows * per_row + WEIGHT_PAD, 0);
    q16[rows * per_row..].fill(0);
    to_f32::<V>(t.vm, mins);
    to_f32::<V>(t.vs, steps);
    pairs_any(groups, None, steps, sp);
    // The steps are in `sp` now; their buffer holds the minima's weights.
    let u = steps;
    for r in 0..rows {
        let pr = &p[r * n_all + j0..][..n];
        pairs_any(groups, Some(pr), sp, w);
        step16[r] = quantise_weights(w, &mut q16[r * per_row..][..per_row]);
        // The minima: Σ_j p_j m_jg, added to the group's channels.
        weigh_any(groups, pr, mins, u, Some(sums));
        for (g, &b) in sums.iter().enumerate().take(groups) {
            acc[r * d + g * vg..][..vg].iter_mut().for_each(|a| *a += b);
        }
    }
    dots.resize(rows * d, 0);
    codes(q16, t.vc, d, vg, dots);
    for (r, (ap, ir)) in accp
        .chunks_exact_mut(d)
        .zip(dots.chunks_exact(d))
        .enumerate()
    {
        let s = V::splat(step16[r]);
        for (a, i) in ap.chunks_exact_mut(L).zip(ir.chunks_exact(L)) {
            s.madd(V::load_i32(i), V::load(a)).store(a);
        }
    }
}

/// Adds `accp` `[rows][d]` (value lane order) into the channel-order `acc`.
pub(crate) fn merge_values(accp: &[f32], acc: &mut [f32], d: usize) {
    for (ap, a) in accp.chunks_exact(d).zip(acc.chunks_exact_mut(d)) {
        for (c, x) in a.iter_mut().enumerate() {
            *x += ap[vpos(d, c)];
        }
    }
}
