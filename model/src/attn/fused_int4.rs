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
use super::lanes::{L, Q8, V16};

/// Channels per step of the i8 query.
pub(crate) const QBLOCK: usize = 32;

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
    /// Only the x86 builds ask for the bytes; the generic build has no portable prefetch.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
    pub(crate) wq: Vec<u8>,
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

/// The portable [`DotCodes`], written for the compiler's vectoriser (what CPUs without the x86
/// builds run): per chunk, row and block, the four octets' 64-byte runs (16 tokens × 4 bytes)
/// taken byte by byte in i16 lanes, each byte's two nibbles times the query bytes of their
/// channels (a pattern of period 4), summed over the block's octets (exact: `|q8 · code| ≤ 127 ·
/// 15`, eight of them per lane 15240), then each token's four lanes widened and added.
pub(crate) fn dot_codes_generic(k: KeyDots<'_>) {
    let (_, m) = k.shape();
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
    let (cb, blocks) = (key_chunk_bytes(d), d / QBLOCK);
    for (r, qr) in q8.chunks_exact(d).enumerate() {
        for (ch, cc) in codes.chunks_exact(cb).enumerate() {
            let mut x = [0f32; KEY_CHUNK];
            for b in 0..blocks {
                let mut acc = [0i16; 4 * KEY_CHUNK];
                for o in 4 * b..4 * b + 4 {
                    let q = &qr[8 * o..][..8];
                    let ql: [i16; 8] = std::array::from_fn(|l| i16::from(q[l % 4]));
                    let qh: [i16; 8] = std::array::from_fn(|l| i16::from(q[4 + l % 4]));
                    let run = &cc[o * 4 * KEY_CHUNK..][..4 * KEY_CHUNK];
                    for (a8, y8) in acc.chunks_exact_mut(8).zip(run.chunks_exact(8)) {
                        for (((a, &y), &l), &h) in a8.iter_mut().zip(y8).zip(&ql).zip(&qh) {
                            *a += i16::from(y & 15) * l + i16::from(y >> 4) * h;
                        }
                    }
                }
                let sb = st[r * blocks + b];
                for (xl, a4) in x.iter_mut().zip(acc.chunks_exact(4)) {
                    let a: i32 = a4.iter().map(|&v| i32::from(v)).sum();
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

/// Scores against INT4 keys (module docs); `dot` is the build's integer dot product. Per row and
/// block of [`QBLOCK`] channels the scaled query stays in registers from the product to the
/// rounding (its largest magnitude by [`V16::hmax`], its i8 values by [`V16::store_q8`]).
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
    let n = t.vm.len() / (d / t.vg);
    let m = t.kc.len() / key_chunk_bytes(d) * KEY_CHUNK;
    let rbk = rows * blocks;
    let f = scratch_slice(&mut scratch.f, 2 * d + rbk + rows);
    let (mins, rest) = f.split_at_mut(d);
    let (steps, rest) = rest.split_at_mut(d);
    let (amax, bias) = rest.split_at_mut(rbk);
    to_f32::<V>(t.km, mins);
    to_f32::<V>(t.ks, steps);
    // Per row and block: the scaled query in registers, its largest magnitude, the rounding.
    let q8 = scratch_slice(&mut scratch.q8, rows * d);
    for ((qr, q8r), ar) in q
        .chunks_exact(d)
        .zip(q8.chunks_exact_mut(d))
        .zip(amax.chunks_exact_mut(blocks))
    {
        for (b, a) in ar.iter_mut().enumerate() {
            let c = b * QBLOCK;
            let x: [V; QBLOCK / L] = std::array::from_fn(|i| {
                V::load(&qr[c + i * L..]).mul(V::load(&steps[c + i * L..]))
            });
            let m = x.iter().fold(V::zero(), |m, &xi| m.max_abs(xi)).hmax();
            let inv = if m > 0.0 { Q8 / m } else { 0.0 };
            *a = m / Q8;
            for (i, xi) in x.iter().enumerate() {
                xi.store_q8(inv, &mut q8r[c + i * L..]);
            }
        }
    }
    for (b, qr) in bias.iter_mut().zip(q.chunks_exact(d)) {
        *b = dot16::<V>(qr, mins);
    }
    // Whole chunks from the first: the scores go straight to `s`; else through the scratch.
    let direct = t.k0 == 0 && m == n;
    let out = if direct {
        &mut *s
    } else {
        scratch_slice(&mut scratch.scores, rows * m)
    };
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
    if !direct {
        for (sr, or) in s.chunks_exact_mut(n).zip(scratch.scores.chunks_exact(m)) {
            sr.copy_from_slice(&or[t.k0..][..n]);
        }
    }
}
