//! The key side of the INT4 decode kernels of `fused`: scores against INT4 keys as exact integer
//! dot products (the value side is `fused_int4_values`). Written once, generic over [`V16`] (f32
//! lanes) and [`DotCodes`] (the integer dot); `fused_x86` builds them for AVX-512 (`vpdpwssd`)
//! and AVX2 (`vpmaddwd`). Every build equals the generic one bit for bit: the f32 steps are the
//! same operations per element in every build, and the integer sums are exact in any order.
//!
//! Keys (per-channel min `m` and step `s` over a group of tokens, KIVI): `q · k̂ = Σ (q_c s_c)
//! code_c + Σ q_c m_c`. The scaled query `q'` is rounded to i8 per row and block of [`QBLOCK`]
//! channels, with the step `S_b = max_b |q'| / 127` (as llama.cpp's `q8_0` rounds activations),
//! so a key's code terms are exact i32 dot products, one per block: `score = (Σ_b S_b · Σ_{c∈b}
//! q8_c · code_c + Σ q · m) · scale`. Against the exact product over the dequantised keys the
//! error is at most `scale · Σ_b S_b / 2 · Σ_{c∈b} code_c` (tests check the bound; in a model of
//! Gaussian keys and queries with and without outlier channels its RMS is 0.13–0.31 of the INT4
//! rounding error's own, where one step per row of 128 channels gave up to 0.61). The keys come
//! in the token-lane chunks of `attn::int4`, so the SIMD builds' dots are one token per lane:
//! `vpdpbusd` (AVX-512 VNNI, unsigned codes × signed query bytes) or `vpmaddubsw` (AVX2).

use half::f16;

use super::int4::{key_chunk_bytes, KEY_CHUNK};
use super::kv::Int4Tile;
use super::lanes::{L, V16};
use super::tile::max16;

/// Largest magnitude of an i16-rounded value weight (`fused_int4_values`).
pub(crate) const Q16: f32 = 32767.0;
/// Largest magnitude of an i8-rounded query element.
pub(crate) const Q8: f32 = 127.0;
/// Channels per step of the i8 query.
pub(crate) const QBLOCK: usize = 32;
/// 1.5 · 2^23: adding then subtracting it rounds an f32 below 2^22 to an integer, half to even.
pub(crate) const ROUND: f32 = 12_582_912.0;

/// `x · inv` rounded half to even, clamped to ±`lim` (an integer; NaN → 0): equal to
/// `((x · inv + ROUND) − ROUND).clamp(−lim, lim) as i32`, but the integer comes from the bits of
/// `v + ROUND` (its exponent is 2^23 for |v| ≤ 2^22, so the low bits are `round(v)`) rather than
/// a saturating float-to-int cast, which LLVM leaves scalar; so loops over it vectorise.
/// Clamping before rounding is the same as after: the bounds are integers.
#[inline(always)]
fn round_to(x: f32, inv: f32, lim: f32) -> i32 {
    let v = (x * inv).clamp(-lim, lim);
    let i = (v + ROUND).to_bits() as i32 - ROUND.to_bits() as i32;
    if v.is_nan() {
        0
    } else {
        i
    }
}

/// [`round_to`] ±[`Q16`], as i16.
#[inline(always)]
pub(crate) fn round_q16(x: f32, inv: f32) -> i16 {
    round_to(x, inv, Q16) as i16
}

/// [`round_to`] ±[`Q8`], as i8.
#[inline(always)]
pub(crate) fn round_q8(x: f32, inv: f32) -> i8 {
    round_to(x, inv, Q8) as i8
}

/// A [`DotCodes`]'s inputs and output: the key scores of `m = 16 · chunks` tokens, `out[r · m +
/// t] = (Σ_b st[r · blocks + b] · dot[r][b][t] + bias[r]) · scale` with `dot[r][b][t] =
/// Σ_{c ∈ block b} q8[r][c] · code_t[c]` (exact in i32) for i8 queries `q8` `[rows][d]`
/// (natural order), blocks of [`QBLOCK`] channels, and the key codes `codes` in the token-lane
/// chunks of `attn::int4` (`d % 64 == 0`). The f32 steps are, per token, `x = dot_0 · st_0`,
/// then `x = x + dot_b · st_b` for the other blocks in order, then `(x + bias) · scale`, each
/// rounded (never fused), in every build. `ahead`: bytes to ask the CPU to fetch while it works
/// (a hint; the first half of the next tile's codes, its keys).
pub(crate) struct KeyDots<'a> {
    pub(crate) q8: &'a [i8],
    pub(crate) codes: &'a [u8],
    pub(crate) d: usize,
    pub(crate) st: &'a [f32],
    pub(crate) bias: &'a [f32],
    pub(crate) scale: f32,
    pub(crate) ahead: &'a [u8],
    pub(crate) out: &'a mut [f32],
}

impl KeyDots<'_> {
    /// (query rows, tokens `m`), after checking the shapes the SIMD kernels rely on.
    pub(crate) fn shape(&self) -> (usize, usize) {
        let (d, cb) = (self.d, key_chunk_bytes(self.d));
        let (rows, m) = (self.q8.len() / d, self.codes.len() / cb * KEY_CHUNK);
        assert!(d.is_multiple_of(64) && self.q8.len() == rows * d);
        assert!(self.codes.len().is_multiple_of(cb) && self.out.len() >= rows * m);
        assert!(self.st.len() >= rows * (d / QBLOCK) && self.bias.len() >= rows);
        (rows, m)
    }
}

/// The build's key scores ([`KeyDots`]).
pub(crate) type DotCodes = fn(KeyDots<'_>);

/// Scratch of the INT4 kernels, kept across tiles.
#[derive(Default)]
pub(crate) struct Int4Scratch {
    pub(crate) f: Vec<f32>,
    pub(crate) q16: Vec<i16>,
    pub(crate) q8: Vec<i8>,
    pub(crate) dots: Vec<i32>,
    pub(crate) scores: Vec<f32>,
}

/// The first `len` elements of `v`, which grows to hold them but never shrinks: the key and value
/// sides share the scratch with different lengths, and shrinking then growing it again wrote the
/// difference over with zeros, one element at a time, on every tile. Callers write every element
/// they read.
pub(crate) fn scratch_slice<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// The portable [`DotCodes`]: per chunk, row and block, the block's four octets of each token
/// lane (low nibbles: channels `8o..8o + 4`, high: `8o + 4..8o + 8`).
pub(crate) fn dot_codes_generic(k: KeyDots<'_>) {
    let KeyDots {
        q8,
        codes,
        d,
        st,
        bias,
        scale,
        out,
        ..
    } = k;
    let cb = key_chunk_bytes(d);
    let (blocks, m) = (d / QBLOCK, codes.len() / cb * KEY_CHUNK);
    for (r, qr) in q8.chunks_exact(d).enumerate() {
        for (ch, cc) in codes.chunks_exact(cb).enumerate() {
            let mut x = [0f32; KEY_CHUNK];
            for b in 0..blocks {
                let mut acc = [0i32; KEY_CHUNK];
                for o in 4 * b..4 * b + 4 {
                    let (ql, qh) = qr[8 * o..][..8].split_at(4);
                    let run = &cc[o * 4 * KEY_CHUNK..][..4 * KEY_CHUNK];
                    for (a, lane) in acc.iter_mut().zip(run.chunks_exact(4)) {
                        for ((&y, &l), &h) in lane.iter().zip(ql).zip(qh) {
                            *a +=
                                i32::from(l) * i32::from(y & 15) + i32::from(h) * i32::from(y >> 4);
                        }
                    }
                }
                let sb = st[r * blocks + b];
                for (xl, &a) in x.iter_mut().zip(&acc) {
                    *xl = if b == 0 {
                        a as f32 * sb
                    } else {
                        *xl + a as f32 * sb
                    };
                }
            }
            let o = &mut out[r * m + ch * KEY_CHUNK..][..KEY_CHUNK];
            for (ol, &xl) in o.iter_mut().zip(&x) {
                *ol = (xl + bias[r]) * scale;
            }
        }
    }
}

/// `dst = src` converted from f16 (exact), 16 at a time in the build's registers.
#[inline(always)]
pub(crate) fn to_f32<V: V16>(src: &[f16], dst: &mut [f32]) {
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

/// `Σ a · b` over equally long slices whose length is a multiple of 16, in 16 lanes with the
/// build's multiply-add, then [`V16::reduce`].
#[inline(always)]
pub(crate) fn dot16<V: V16>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = V::zero();
    for (x, y) in a.chunks_exact(L).zip(b.chunks_exact(L)) {
        acc = V::load(x).madd(V::load(y), acc);
    }
    acc.reduce()
}

/// The largest `|w|` (exact in any order): 16 lanes of the build's registers over the whole
/// chunks ([`V16::max_abs`]: left to itself LLVM split this loop into 2-lane pieces), the tail
/// apart, then [`max16`].
#[inline(always)]
pub(crate) fn lane_max<V: V16>(w: &[f32]) -> f32 {
    let chunks = w.chunks_exact(L);
    let tail = chunks.remainder();
    let mut acc = V::zero();
    for c in chunks {
        acc = acc.max_abs(V::load(c));
    }
    let mut mx = [0f32; L];
    acc.store(&mut mx);
    let mut t = 0f32;
    for &x in tail {
        let a = x.abs();
        t = if a > t { a } else { t };
    }
    let m = max16(mx);
    if t > m {
        t
    } else {
        m
    }
}

/// Scores against INT4 keys (module docs); `dot` is the build's integer dot product. In phases
/// over all rows, so no row waits on another's division: the scaled queries, every block's
/// largest magnitude, their steps, the rounding, the biases.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn scores_int4<V: V16>(
    dot: DotCodes,
    q: &[f32],
    t: &Int4Tile<'_>,
    d: usize,
    scale: f32,
    s: &mut [f32],
    scratch: &mut Int4Scratch,
) {
    let (rows, blocks) = (q.len() / d, d / QBLOCK);
    let n = t.vc.len() / (d / 2);
    let m = t.kc.len() / key_chunk_bytes(d) * KEY_CHUNK;
    let rbk = rows * blocks;
    let f = scratch_slice(&mut scratch.f, 2 * d + rows * d + 2 * rbk + rows);
    let (mins, rest) = f.split_at_mut(d);
    let (steps, rest) = rest.split_at_mut(d);
    let (qs, rest) = rest.split_at_mut(rows * d);
    let (amax, rest) = rest.split_at_mut(rbk);
    let (inv, bias) = rest.split_at_mut(rbk);
    to_f32::<V>(t.km, mins);
    to_f32::<V>(t.ks, steps);
    for (qsr, qr) in qs.chunks_exact_mut(d).zip(q.chunks_exact(d)) {
        for ((o, &x), &st) in qsr.iter_mut().zip(qr).zip(steps.iter()) {
            *o = x * st;
        }
    }
    for (a, qb) in amax.iter_mut().zip(qs.chunks_exact(QBLOCK)) {
        *a = lane_max::<V>(qb);
    }
    for (i, a) in inv.iter_mut().zip(amax.iter_mut()) {
        *i = if *a > 0.0 { Q8 / *a } else { 0.0 };
        *a /= Q8;
    }
    let q8 = scratch_slice(&mut scratch.q8, rows * d);
    for ((ob, qb), &ib) in q8
        .chunks_exact_mut(QBLOCK)
        .zip(qs.chunks_exact(QBLOCK))
        .zip(inv.iter())
    {
        for (o, &x) in ob.iter_mut().zip(qb) {
            *o = round_q8(x, ib);
        }
    }
    for (b, qr) in bias.iter_mut().zip(q.chunks_exact(d)) {
        *b = dot16::<V>(qr, mins);
    }
    let out = scratch_slice(&mut scratch.scores, rows * m);
    dot(KeyDots {
        q8,
        codes: t.kc,
        d,
        st: amax,
        bias,
        scale,
        ahead: &t.next[..t.next.len() / 2],
        out,
    });
    for (sr, or) in s.chunks_exact_mut(n).zip(out.chunks_exact(m)) {
        sr.copy_from_slice(&or[t.k0..][..n]);
    }
}
