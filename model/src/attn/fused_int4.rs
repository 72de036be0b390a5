//! The INT4 decode kernels of `fused`: scores against INT4 keys as exact integer dot
//! products, and the accumulation of INT4 values with each group's step folded into the
//! probability. Written once, generic over [`V16`] (f32 lanes) and [`DotCodes`] (the integer
//! dot); `fused_x86` builds them for AVX-512 (`vpdpwssd`) and AVX2 (`vpmaddwd`). Every build equals
//! the generic one bit for bit: the f32 steps are the same operations per element in every build,
//! and the integer sums are exact in any order.
//!
//! - Keys (per-channel min `m` and step `s` over a group of tokens, KIVI): `q · k̂ = Σ (q_c s_c)
//!   code_c + Σ q_c m_c`. The scaled query `q'` is laid out even channels first, then odd ones —
//!   the order in which a byte's low and high nibbles come out — and rounded to i16 per row with
//!   the step `S = max|q'| / 32767`, so a key's code terms are an exact i32 dot product:
//!   `score = (S · Σ q16 · code + Σ q · m) · scale`. Against the exact product over the
//!   dequantised keys the error is at most `scale · S / 2 · Σ code` (tests check the bound).
//! - Values (per-token groups of `vg` channels): `Σ_j p_j v̂_j = Σ_j (p_j s_jg) code_j + Σ_j p_j
//!   m_jg`. The first sum goes into an accumulator in the same even/odd channel order (`accp`),
//!   the second, summed in 16 lanes, straight into the natural-order accumulator.

use half::f16;

use super::kv::Int4Tile;
use super::lanes::{row, L, ROWS, V16};
use super::tile::dot_generic;

/// Largest magnitude of a quantised query element.
const Q16: f32 = 32767.0;
/// 1.5 · 2^23: adding then subtracting it rounds an f32 below 2^22 to an integer, half to even.
const ROUND: f32 = 12_582_912.0;

/// `out[r · n + j] = Σ_c qi[r][c] · code_j[c]` for i16 queries `qi` `[rows][d]` in even/odd
/// order and the INT4 codes `[n][d / 2]` of `n` keys (exact in i32: |Σ| ≤ 32767 · 15 · d).
pub(crate) type DotCodes = fn(qi: &[i16], codes: &[u8], d: usize, out: &mut [i32]);

/// Scratch of the INT4 kernels, kept across tiles.
#[derive(Default)]
pub(crate) struct Int4Scratch {
    f: Vec<f32>,
    q16: Vec<i16>,
    dots: Vec<i32>,
}

/// The portable [`DotCodes`].
pub(crate) fn dot_codes_generic(qi: &[i16], codes: &[u8], d: usize, out: &mut [i32]) {
    let h = d / 2;
    let n = codes.len() / h;
    for (r, qr) in qi.chunks_exact(d).enumerate() {
        let (lo, hi) = qr.split_at(h);
        for (j, cj) in codes.chunks_exact(h).enumerate() {
            let mut acc = 0i32;
            for ((&b, &a), &c) in cj.iter().zip(lo).zip(hi) {
                acc += i32::from(a) * i32::from(b & 15) + i32::from(c) * i32::from(b >> 4);
            }
            out[r * n + j] = acc;
        }
    }
}

/// `dst = src` converted from f16 (exact), 16 at a time in the build's registers.
#[inline(always)]
fn to_f32<V: V16>(src: &[f16], dst: &mut [f32]) {
    let split = src.len() / L * L;
    let (sh, st) = src.split_at(split);
    let (dh, dt) = dst[..src.len()].split_at_mut(split);
    for (s, d) in sh.chunks_exact(L).zip(dh.chunks_exact_mut(L)) {
        V::load_f16(s).store(d);
    }
    for (s, d) in st.iter().zip(dt) {
        *d = s.to_f32();
    }
}

/// Scores against INT4 keys (module docs); `dot` is the build's integer dot product.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn scores_int4<V: V16, const FMA: bool>(
    dot: DotCodes,
    q: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    scale: f32,
    s: &mut [f32],
    scratch: &mut Int4Scratch,
) {
    let (rows, h) = (q.len() / d, d / 2);
    let n = t.kc.len() / h;
    scratch.f.resize(4 * d + 2 * rows, 0.0);
    let (mins, rest) = scratch.f.split_at_mut(d);
    let (steps, rest) = rest.split_at_mut(d);
    let (qs, rest) = rest.split_at_mut(d);
    let (qp, rest) = rest.split_at_mut(d);
    let (bias, step16) = rest.split_at_mut(rows);
    to_f32::<V>(t.km, mins);
    to_f32::<V>(t.ks, steps);
    scratch.q16.resize(rows * d, 0);
    for (r, qr) in q.chunks_exact(d).enumerate() {
        for ((o, &x), &st) in qs.iter_mut().zip(qr).zip(steps.iter()) {
            *o = x * st;
        }
        for (i, pair) in qs.chunks_exact(2).enumerate() {
            qp[i] = pair[0];
            qp[h + i] = pair[1];
        }
        let mut mx = [0f32; L];
        for c in qp.chunks_exact(L) {
            for (m, &x) in mx.iter_mut().zip(c) {
                *m = m.max(x.abs());
            }
        }
        let mut w = L / 2;
        while w > 0 {
            for l in 0..w {
                mx[l] = mx[l].max(mx[l + w]);
            }
            w /= 2;
        }
        let amax = mx[0];
        let inv = if amax > 0.0 { Q16 / amax } else { 0.0 };
        for (o, &x) in scratch.q16[r * d..][..d].iter_mut().zip(qp.iter()) {
            *o = (((x * inv) + ROUND) - ROUND).clamp(-Q16, Q16) as i16;
        }
        step16[r] = amax / Q16;
        bias[r] = dot_generic::<FMA>(qr, mins);
    }
    scratch.dots.resize(rows * n, 0);
    dot(&scratch.q16, t.kc, d, &mut scratch.dots);
    for (r, (sr, dr)) in s
        .chunks_exact_mut(n)
        .zip(scratch.dots.chunks_exact(n))
        .enumerate()
    {
        let (st, b) = (step16[r], bias[r]);
        for (o, &i) in sr.iter_mut().zip(dr) {
            *o = (i as f32 * st + b) * scale;
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

/// Accumulation of INT4 values (module docs): `accp` `[rows][d]` in even/odd order gets the code
/// terms, `acc` `[rows][d]` the minima.
#[inline(always)]
pub(crate) fn accumulate_int4<V: V16>(
    p: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    accp: &mut [f32],
    acc: &mut [f32],
    scratch: &mut Int4Scratch,
) {
    let (rows, h, vg) = (acc.len() / d, d / 2, t.vg);
    let (n, groups) = (t.vc.len() / h, d / vg);
    let ng = n * groups;
    scratch.f.resize(rows * ng + 3 * ng + groups, 0.0);
    let (w, rest) = scratch.f.split_at_mut(rows * ng);
    let (mins, rest) = rest.split_at_mut(ng);
    let (steps, rest) = rest.split_at_mut(ng);
    let (u, sums) = rest.split_at_mut(ng);
    to_f32::<V>(t.vm, mins);
    to_f32::<V>(t.vs, steps);
    for r in 0..rows {
        let pr = &p[r * n..][..n];
        weigh_any(groups, pr, steps, &mut w[r * ng..][..ng], None);
        // The minima: Σ_j p_j m_jg, added to the group's channels.
        weigh_any(groups, pr, mins, u, Some(sums));
        for (g, &b) in sums.iter().enumerate().take(groups) {
            acc[r * d + g * vg..][..vg].iter_mut().for_each(|a| *a += b);
        }
    }
    let w = &*w;
    // Four 16-lane chunks of the even/odd order per pass: all low nibbles, all high nibbles, or
    // (d = 64) two of each.
    let mut c0 = 0;
    while c0 < d {
        if h % (4 * L) == 0 {
            if c0 < h {
                pass::<V, 0b0000>(w, t, d, groups, c0, accp);
            } else {
                pass::<V, 0b1111>(w, t, d, groups, c0, accp);
            }
        } else {
            pass::<V, 0b1100>(w, t, d, groups, c0, accp);
        }
        c0 += 4 * L;
    }
}

/// One pass of [`accumulate_int4`] over the four 16-lane chunks at `c0..c0 + 64` of the even/odd
/// order, for every row; bit `b` of `HI` says chunk `b` holds high nibbles.
#[inline(always)]
fn pass<V: V16, const HI: u8>(
    w: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    groups: usize,
    c0: usize,
    accp: &mut [f32],
) {
    let (rows, h, vg) = (accp.len() / d, d / 2, t.vg);
    let ng = (t.vc.len() / h) * groups;
    // Chunk b: its byte offset in a token's codes and its value group (chunk `c` holds natural
    // channels 2c.. (even half) or 2(c - h) + 1.. (odd half), all in one group).
    let mut at = [(0usize, 0usize); 4];
    for (b, a) in at.iter_mut().enumerate() {
        let c = c0 + b * L;
        *a = if HI & (1 << b) == 0 {
            (c, 2 * c / vg)
        } else {
            (c - h, (2 * (c - h) + 1) / vg)
        };
    }
    for r0 in (0..rows).step_by(ROWS) {
        let rb = (rows - r0).min(ROWS);
        let mut a = [[V::zero(); 4]; ROWS];
        for (r, ar) in a.iter_mut().enumerate().take(rb) {
            for (b, ab) in ar.iter_mut().enumerate() {
                *ab = V::load(&accp[(r0 + r) * d + c0 + b * L..]);
            }
        }
        let wr: [&[f32]; ROWS] = [0, 1, 2, 3].map(|r| &w[row(r0, r, rb) * ng..][..ng]);
        for (j, codes) in t.vc.chunks_exact(h).enumerate() {
            let x = [
                V::nibbles(&codes[at[0].0..][..L], HI & 1 != 0),
                V::nibbles(&codes[at[1].0..][..L], HI & 2 != 0),
                V::nibbles(&codes[at[2].0..][..L], HI & 4 != 0),
                V::nibbles(&codes[at[3].0..][..L], HI & 8 != 0),
            ];
            for (ar, wj) in a.iter_mut().zip(wr).take(rb) {
                let wj = &wj[j * groups..][..groups];
                ar[0] = V::splat(wj[at[0].1]).madd(x[0], ar[0]);
                ar[1] = V::splat(wj[at[1].1]).madd(x[1], ar[1]);
                ar[2] = V::splat(wj[at[2].1]).madd(x[2], ar[2]);
                ar[3] = V::splat(wj[at[3].1]).madd(x[3], ar[3]);
            }
        }
        for (r, ar) in a.iter().enumerate().take(rb) {
            for (b, ab) in ar.iter().enumerate() {
                ab.store(&mut accp[(r0 + r) * d + c0 + b * L..]);
            }
        }
    }
}
