//! The key side of the INT4 decode kernels of `fused`: scores against INT4 keys as exact integer
//! dot products (the value side is `fused_int4_values`). Written once, generic over [`V16`] (f32
//! lanes) and [`DotCodes`] (the integer dot); `fused_x86` builds them for AVX-512 (`vpdpwssd`)
//! and AVX2 (`vpmaddwd`). Every build equals the generic one bit for bit: the f32 steps are the
//! same operations per element in every build, and the integer sums are exact in any order.
//!
//! Keys (per-channel min `m` and step `s` over a group of tokens, KIVI): `q · k̂ = Σ (q_c s_c)
//! code_c + Σ q_c m_c`. The scaled query `q'` is laid out even channels first, then odd ones —
//! the order in which a byte's low and high nibbles come out — and rounded to i16 per row with
//! the step `S = max|q'| / 32767`, so a key's code terms are an exact i32 dot product:
//! `score = (S · Σ q16 · code + Σ q · m) · scale`. Against the exact product over the
//! dequantised keys the error is at most `scale · S / 2 · Σ code` (tests check the bound).

use half::f16;

use super::kv::Int4Tile;
use super::lanes::{L, V16};
use super::tile::max16;

/// Largest magnitude of a quantised query element.
pub(crate) const Q16: f32 = 32767.0;
/// 1.5 · 2^23: adding then subtracting it rounds an f32 below 2^22 to an integer, half to even.
pub(crate) const ROUND: f32 = 12_582_912.0;

/// `x · inv` rounded half to even, clamped to ±[`Q16`] (NaN → 0), as i16: equal to
/// `((x · inv + ROUND) − ROUND).clamp(−Q16, Q16) as i16`, but the integer comes from the bits of
/// `v + ROUND` (its exponent is 2^23 for |v| ≤ 2^22, so the low bits are `round(v)`) rather than
/// a saturating float-to-int cast, which LLVM leaves scalar; so loops over it vectorise.
/// Clamping before rounding is the same as after: the bounds are integers.
#[inline(always)]
pub(crate) fn round_q16(x: f32, inv: f32) -> i16 {
    let v = (x * inv).clamp(-Q16, Q16);
    let i = (v + ROUND).to_bits() as i32 - ROUND.to_bits() as i32;
    if v.is_nan() {
        0
    } else {
        i as i16
    }
}

/// `out[r · n + j] = Σ_c qi[r][c] · code_j[c]` for i16 queries `qi` `[rows][d]` in even/odd
/// order and the INT4 codes `[n][d / 2]` of `n` keys (exact in i32: |Σ| ≤ 32767 · 15 · d).
pub(crate) type DotCodes = fn(qi: &[i16], codes: &[u8], d: usize, out: &mut [i32]);

/// Scratch of the INT4 kernels, kept across tiles.
#[derive(Default)]
pub(crate) struct Int4Scratch {
    pub(crate) f: Vec<f32>,
    pub(crate) q16: Vec<i16>,
    pub(crate) dots: Vec<i32>,
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

/// Scores against INT4 keys (module docs); `dot` is the build's integer dot product.
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
    let (rows, h) = (q.len() / d, d / 2);
    let n = t.kc.len() / h;
    let f = scratch_slice(&mut scratch.f, 4 * d + 2 * rows);
    let (mins, rest) = f.split_at_mut(d);
    let (steps, rest) = rest.split_at_mut(d);
    let (qs, rest) = rest.split_at_mut(d);
    let (qp, rest) = rest.split_at_mut(d);
    let (bias, step16) = rest.split_at_mut(rows);
    to_f32::<V>(t.km, mins);
    to_f32::<V>(t.ks, steps);
    let q16 = scratch_slice(&mut scratch.q16, rows * d);
    for (r, qr) in q.chunks_exact(d).enumerate() {
        for ((o, &x), &st) in qs.iter_mut().zip(qr).zip(steps.iter()) {
            *o = x * st;
        }
        // The largest |q'| (over the same values as after the even/odd split below).
        let amax = lane_max::<V>(qs);
        let (even, odd) = qp.split_at_mut(h);
        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(qs.chunks_exact(2)) {
            *e = pair[0];
            *o = pair[1];
        }
        let inv = if amax > 0.0 { Q16 / amax } else { 0.0 };
        for (o, &x) in q16[r * d..][..d].iter_mut().zip(qp.iter()) {
            *o = round_q16(x, inv);
        }
        step16[r] = amax / Q16;
        bias[r] = dot16::<V>(qr, mins);
    }
    let dots = scratch_slice(&mut scratch.dots, rows * n);
    dot(q16, t.kc, d, dots);
    for (r, (sr, dr)) in s.chunks_exact_mut(n).zip(dots.chunks_exact(n)).enumerate() {
        let (st, b) = (step16[r], bias[r]);
        for (o, &i) in sr.iter_mut().zip(dr) {
            *o = (i as f32 * st + b) * scale;
        }
    }
}
