//! The value side of the INT4 decode kernels of `fused`: `Σ_j p_j v̂_j` over a tile of INT4 values
//! (per-token groups of `vg` channels, `v̂ = step · code + min`) as exact integer sums. The codes
//! are taken as centred on 8, `v̂ = step · (code − 8) + (min + 8 · step)`, and per row and tile
//! the weights `w_jg = p_j · step_jg` (never negative) are rounded to u8 with one step `S = max w
//! / 255`, so `Σ_j w_jg (code_j − 8) ≈ S · Σ_j u8_jg (code_j − 8)`: byte dot products on
//! `vpdpbusd` (AVX-512 VNNI, AVX-VNNI) or `vpmaddubsw` (AVX2) over the token quads of the cache
//! (`attn::int4`: a 32-bit lane holds one code byte of four tokens, the weight operand the four
//! tokens' u8 of that byte's group). The minima `Σ_j p_j
//! (m_jg + 8 s_jg)` stay in f32 (summed in 16 lanes) and go straight into the natural-order
//! accumulator.
//!
//! What every build must match: the integer sums are exact in any order and the f32 steps are the
//! same operations per element, so every build equals the generic one bit for bit (tests). Against
//! the product over the dequantised values the code terms of channel `c` differ by at most
//! `S/2 · Σ_j |code_jc − 8|` (the u8 rounding, centred; tests check the bound) plus f32 rounding.
//! The u8 weights take four tokens per multiply-add where i16 ones took two. Their rounding adds
//! about 2% to the INT4 values' own error variance where one token holds a tile's whole weight
//! (64 tokens: `64 · E[(code − 8)²] / 255² ≈ 0.02` against `1`), less where the weight is spread.
//!
//! The integer sums and the code-term accumulator (`accp`) are kept in the *value lane order*
//! ([`vpos`]): the order in which the SIMD builds' registers hold a quad's code bytes, low
//! nibbles and high nibbles in registers of their own, so they store their sums without a
//! shuffle; [`merge_values`] puts them back in channel order.

use super::fused_int4::{scratch_slice, to_f32, Int4Scratch};
use super::int4::value_code_bytes;
use super::kv::Int4Tile;
use super::lanes::{round_u8, QU8};
use super::lanes::{L, V16};

/// Most tokens of one integer pass (`|Σ u8 · (code − 8)| ≤ 255 · 8 · 2048 < 2^23`: exact in i32
/// and in f32); longer tiles are taken this many tokens at a time, each with its own weight step.
pub(crate) const MAX_TOKENS: usize = 2048;

/// Zero u8 weights after the rows' (room for wider loads; the current builds read only inside
/// the rows).
pub(crate) const WEIGHT_PAD: usize = 32;

/// `isum[r][vpos(c)] = Σ_j wq[r][group(c)][j] · (code_j[c] − 8)` for `rows` rows: `codes` whole token quads (`attn::int4`'s value layout, `nq` tokens), `wq` `[rows][groups]
/// [nq]` (tokens the tile does not hold weighted 0) followed by [`WEIGHT_PAD`] zeros, `isum`
/// `[rows][d]` (`d % 64 == 0`); `ahead`: bytes to ask the CPU to fetch while it works (a hint: the
/// second half of the next tile's codes, its values).
pub(crate) type ValueCodes =
    fn(wq: &[u8], codes: &[u8], d: usize, vg: usize, ahead: &[u8], isum: &mut [i32]);

/// Weights per row and group for `n` tokens: `n` rounded up to whole quads.
#[inline(always)]
pub(crate) fn quad_len(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Position of channel `c` (of `d`) in the value lane order. Byte `b = c / 2` of a token's codes
/// lies in 32-byte chunk `b / 32`, which takes 64 places: two blocks of 16 bytes (one register of
/// a quad's 64 code bytes each in the AVX-512 kernel), each the 16 low nibbles then the 16 high
/// ones in byte order.
#[inline(always)]
pub(crate) fn vpos(d: usize, c: usize) -> usize {
    debug_assert!(c < d);
    let (b, nib) = (c / 2, c % 2);
    64 * (b / 32) + 32 * (b % 32 / 16) + 16 * nib + b % 16
}

/// The portable [`ValueCodes`], written for the compiler's vectoriser (what CPUs without the
/// x86 builds run): per row and 32-byte chunk of the codes, quad by quad, the quad's bytes put
/// token by token (a transpose of 4-byte lanes; `ld4` on NEON), then each byte's two nibbles
/// centred, times the token's weight of the byte's block, summed in i16 over runs of [`I16_RUN`]
/// tokens (exact: `|u8 · (code − 8)| ≤ 2040`, sixteen of them 32640) and widened into i32. Equal to the
/// contract's per-channel sums (tests compare it with them).
pub(crate) fn value_codes_generic(
    wq: &[u8],
    codes: &[u8],
    d: usize,
    vg: usize,
    _ahead: &[u8],
    isum: &mut [i32],
) {
    let (qb, groups) = (2 * d, d / vg);
    let nq = codes.len() / qb * 4;
    for (r, out) in isum.chunks_exact_mut(d).enumerate() {
        let w = &wq[r * groups * nq..][..groups * nq];
        for ch in 0..d / 64 {
            // The weights of the chunk's two 16-byte blocks (one group each).
            let wb = [64 * ch / vg, (64 * ch + 32) / vg].map(|g| &w[g * nq..][..nq]);
            let mut acc = [[0i32; 32]; 2];
            for q0 in (0..nq / 4).step_by(I16_RUN / 4) {
                let q1 = (nq / 4).min(q0 + I16_RUN / 4);
                let mut run = [[0i16; 32]; 2];
                for q in q0..q1 {
                    let quad = &codes[q * qb + 128 * ch..][..128];
                    let mut tok = [[0u8; 32]; 4];
                    for (b, lane) in quad.chunks_exact(4).enumerate() {
                        for (t, &y) in lane.iter().enumerate() {
                            tok[t][b] = y;
                        }
                    }
                    for (t, bytes) in tok.iter().enumerate() {
                        for (k, (bk, wk)) in bytes.chunks_exact(16).zip(wb).enumerate() {
                            let wj = i16::from(wk[4 * q + t]);
                            let (lo, hi) = run.split_at_mut(1);
                            let (lo, hi) = (&mut lo[0][16 * k..][..16], &mut hi[0][16 * k..][..16]);
                            for ((l, h), &y) in lo.iter_mut().zip(hi.iter_mut()).zip(bk) {
                                *l += wj * (i16::from(y & 15) - 8);
                                *h += wj * (i16::from(y >> 4) - 8);
                            }
                        }
                    }
                }
                for (a, r) in acc.iter_mut().zip(&run) {
                    for (x, &y) in a.iter_mut().zip(r) {
                        *x += i32::from(y);
                    }
                }
            }
            for (b, (&l, &h)) in acc[0].iter().zip(&acc[1]).enumerate() {
                let c = 2 * (32 * ch + b);
                out[vpos(d, c)] = l;
                out[vpos(d, c + 1)] = h;
            }
        }
    }
}

/// Tokens the portable value sums add in i16 before widening.
const I16_RUN: usize = 16;

/// `dst[g][j] = src[j][g]` for `src` `[n][groups]` into `dst` `[groups][stride]`, zeros past `n`.
/// One and two groups (the default `head_dim / vg`) have loops of their own that vectorise (a copy,
/// a de-interleave); the strided loop of other counts stays scalar.
#[inline(always)]
fn transpose(src: &[f32], groups: usize, stride: usize, dst: &mut [f32]) {
    let n = src.len() / groups;
    match groups {
        1 => dst[..n].copy_from_slice(src),
        2 => {
            let (r0, r1) = dst[..2 * stride].split_at_mut(stride);
            for ((a, b), pair) in r0.iter_mut().zip(r1.iter_mut()).zip(src.chunks_exact(2)) {
                *a = pair[0];
                *b = pair[1];
            }
        }
        _ => {
            for (g, row) in dst.chunks_exact_mut(stride).enumerate().take(groups) {
                for (o, &x) in row.iter_mut().zip(src[g..].iter().step_by(groups)) {
                    *o = x;
                }
            }
        }
    }
    for row in dst.chunks_exact_mut(stride).take(groups) {
        row[n..].fill(0.0);
    }
}

/// Rounds the weights `w` to u8 in `wq` (same order), `amax` their largest magnitude; returns
/// their step `S` (`w ≈ S · u8`). Four vectors at a time ([`V16::store_u8x4`]), then single ones.
#[inline(always)]
fn quantise_weights<V: V16>(w: &[f32], amax: f32, wq: &mut [u8]) -> f32 {
    let inv = if amax > 0.0 { QU8 / amax } else { 0.0 };
    let (s4, s1) = (w.len() / (4 * L) * 4 * L, w.len() / L * L);
    for (o, x) in wq[..s4].chunks_exact_mut(4 * L).zip(w.chunks_exact(4 * L)) {
        // Element by element, not `array::map`: its closure may be compiled out of line, outside
        // the build's target features, and then every vector operation in it is a call.
        let v = [
            V::load(x),
            V::load(&x[L..]),
            V::load(&x[2 * L..]),
            V::load(&x[3 * L..]),
        ];
        V::store_u8x4(v, inv, o);
    }
    for (o, x) in wq[s4..s1].chunks_exact_mut(L).zip(w[s4..].chunks_exact(L)) {
        V::load(x).store_u8(inv, o);
    }
    for (o, &x) in wq[s1..].iter_mut().zip(&w[s1..]) {
        *o = round_u8(x, inv);
    }
    amax / QU8
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
    let groups = d / t.vg;
    let n = t.vm.len() / groups;
    if n == 0 {
        return;
    }
    // Places in the quads: the tile's tokens are `v0..v0 + n`; each part starts on a quad.
    let end = t.v0 + n;
    let mut a = 0;
    while a < end {
        let b = end.min(a + MAX_TOKENS);
        let first = a.max(t.v0);
        let (j0, j1) = (first - t.v0, b - t.v0);
        let part = Int4Tile {
            vc: &t.vc[value_code_bytes(a, d)..value_code_bytes(b, d)],
            v0: first - a,
            vm: &t.vm[j0 * groups..j1 * groups],
            vs: &t.vs[j0 * groups..j1 * groups],
            ..*t
        };
        accumulate_part::<V>(codes, p, n, j0, &part, d, accp, acc, scratch);
        a = b;
    }
}

/// [`accumulate_int4`] over tokens `j0..` (at most [`MAX_TOKENS`] places of whole quads) of a tile
/// of `n_all`: the weights of each row and group are laid out as the tile's quads, zero at the
/// places before `v0` and after its last token.
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
    let (rows, vg, v0) = (acc.len() / d, t.vg, t.v0);
    let groups = d / vg;
    let n = t.vm.len() / groups;
    let (ng, nq, n16) = (n * groups, quad_len(v0 + n), n.div_ceil(L) * L);
    let per_row = groups * nq;
    let Int4Scratch { f, wq, dots, .. } = scratch;
    let f = scratch_slice(f, 2 * ng + 2 * groups * n16 + rows * (per_row + 1));
    let (mins, rest) = f.split_at_mut(ng);
    let (steps, rest) = rest.split_at_mut(ng);
    let (st, rest) = rest.split_at_mut(groups * n16);
    let (mt, rest) = rest.split_at_mut(groups * n16);
    let (w, step8) = rest.split_at_mut(rows * per_row);
    to_f32::<V>(t.vm, mins);
    to_f32::<V>(t.vs, steps);
    // The centred codes' minima `m + 8 s` (8 s is exact; one rounding, never fused).
    let split = ng / L * L;
    let eight = V::splat(8.0);
    for (m, s) in mins[..split].chunks_exact_mut(L).zip(steps.chunks_exact(L)) {
        V::load(m).add(V::load(s).mul(eight)).store(m);
    }
    for (m, &s) in mins[split..].iter_mut().zip(&steps[split..]) {
        *m += s * 8.0;
    }
    // Group-major, so each row's weights and minima are plain element-wise products.
    transpose(steps, groups, n16, st);
    transpose(mins, groups, n16, mt);
    // Per row and group, in one pass over the probabilities: the weights `p · step` (at the
    // tokens' places in the quads) and the minima `Σ_j p_j (m_jg + 8 s_jg)`, added to the
    // group's channels. The largest weight of each row is taken on the way (the weights are
    // never negative, the padding is 0), so the rounding needs no pass of its own.
    let split = n / L * L;
    for (r, ((wr, ar), mr)) in w
        .chunks_exact_mut(per_row)
        .zip(acc.chunks_exact_mut(d))
        .zip(step8.iter_mut())
        .enumerate()
    {
        let pr = &p[r * n_all + j0..][..n];
        let (mut mx, mut mt_) = (V::zero(), 0f32);
        for ((wp, sg), (mg, ag)) in wr
            .chunks_exact_mut(nq)
            .zip(st.chunks_exact(n16))
            .zip(mt.chunks_exact(n16).zip(ar.chunks_exact_mut(vg)))
        {
            let (lead, wg) = wp.split_at_mut(v0);
            lead.fill(0.0);
            let mut sum = V::zero();
            for i in (0..split).step_by(L) {
                let pv = V::load(&pr[i..]);
                let wv = pv.mul_nz(V::load(&sg[i..]));
                wv.store(&mut wg[i..]);
                mx = mx.max_abs(wv);
                sum = pv.madd(V::load(&mg[i..]), sum);
            }
            let mut b = sum.reduce();
            for i in split..n {
                let pj = pr[i];
                wg[i] = if pj == 0.0 { 0.0 } else { pj * sg[i] };
                let a = wg[i].abs();
                mt_ = if a > mt_ { a } else { mt_ };
                b += pj * mg[i];
            }
            wg[n..].fill(0.0);
            let bv = V::splat(b);
            for a in ag.chunks_exact_mut(L) {
                V::load(a).add(bv).store(a);
            }
        }
        let m = mx.hmax();
        *mr = if mt_ > m { mt_ } else { m };
    }
    let wq = scratch_slice(wq, rows * per_row + WEIGHT_PAD);
    wq[rows * per_row..].fill(0);
    for ((wr, qr), sr) in w
        .chunks_exact(per_row)
        .zip(wq.chunks_exact_mut(per_row))
        .zip(step8.iter_mut())
    {
        *sr = quantise_weights::<V>(wr, *sr, qr);
    }
    let dots = scratch_slice(dots, rows * d);
    codes(wq, t.vc, d, vg, &t.next[t.next.len() / 2..], dots);
    for (ap, (ir, &s)) in accp
        .chunks_exact_mut(d)
        .zip(dots.chunks_exact(d).zip(step8.iter()))
    {
        let s = V::splat(s);
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
