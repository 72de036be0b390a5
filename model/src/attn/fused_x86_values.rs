//! x86-64 integer kernels of the INT4 decode path's value side
//! ([`ValueCodes`](super::fused_int4_values::ValueCodes), `fused_int4_values`): the u8 weights
//! times the centred 4-bit codes (`code − 8`, signed bytes) over token quads, one channel's codes of four tokens per 32-bit lane,
//! with `vpdpbusd` on 512-bit registers (AVX-512 F/BW/VL/VNNI), on 256-bit registers (AVX-VNNI),
//! or `vpmaddubsw` + `vpmaddwd` + `vpaddd` (AVX2). Integer sums are exact in any order, so each
//! equals the portable version exactly (tests compare them on the whole u8 range).
//!
//! The byte interleave: four tokens' 32 code bytes of one chunk (two 16-byte blocks, 64 channels)
//! go through `vpunpck{l,h}bw` (token pairs) and `vpunpck{l,h}wd` (pairs of pairs), after which a
//! 32-bit lane holds one byte of each of the four tokens; the nibbles are split with a mask and a
//! shift, and centred with a byte subtraction. The registers come out in the value lane order of `fused_int4_values::vpos`.

use std::arch::x86_64::*;

use super::fused_int4_values::{quad_len, WEIGHT_PAD};
use super::kv::{lines_per_part, prefetch_lines};

/// The AVX-512 build's value sums: `vpdpbusd` on 512-bit registers where the CPU has AVX-512
/// VNNI (and BW, VL), else the AVX2 build's.
pub(super) fn values_512(
    wq: &[u8],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    check_values(wq, codes, d, vg, isum);
    if is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
    {
        // SAFETY: the features were just detected; shapes checked.
        unsafe { values_vnni(wq, codes, d, vg, ahead, isum) }
    } else {
        values_256(wq, codes, d, vg, ahead, isum)
    }
}

/// The AVX2 build's value sums: `vpdpbusd` on 256-bit registers where the CPU has AVX-VNNI, else
/// `vpmaddubsw`, widened by `vpmaddwd` and added.
pub(super) fn values_256(
    wq: &[u8],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    check_values(wq, codes, d, vg, isum);
    if is_x86_feature_detected!("avxvnni") && super::avx_vnni_allowed() {
        // SAFETY: AVX-VNNI was just detected, AVX2 before the build ran; shapes checked.
        unsafe { values_avx_vnni(wq, codes, d, vg, ahead, isum) }
    } else {
        // SAFETY: only handed to the builds, which run after AVX2 was detected; shapes checked.
        unsafe { values_avx2(wq, codes, d, vg, ahead, isum) }
    }
}

/// [`values_256`] without AVX-VNNI, whatever the CPU has (tests compare both).
#[cfg(test)]
pub(super) fn values_256_madd(
    wq: &[u8],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    check_values(wq, codes, d, vg, isum);
    // SAFETY: the tests call it only where AVX2 was detected; shapes checked.
    unsafe { values_avx2(wq, codes, d, vg, ahead, isum) }
}

/// The shapes the value kernels rely on (`ValueCodes`' contract).
fn check_values(wq: &[u8], codes: &[u8], d: usize, vg: usize, isum: &[i32]) {
    let (h, rows) = (d / 2, isum.len() / d);
    let n = codes.len() / h;
    assert!(h.is_multiple_of(32) && vg.is_multiple_of(32) && d.is_multiple_of(vg));
    assert!(codes.len() == n * h && isum.len() == rows * d);
    assert!(wq.len() >= rows * quad_len(n) * (d / vg) + WEIGHT_PAD);
}

/// A call's shapes: the codes (`n` tokens of `h` bytes), the weights (`per_row` a row, `nq` a
/// group), the value group `vg`, and the fetch hint (`per` lines per quad).
struct Shape<'a> {
    wq: &'a [u8],
    codes: &'a [u8],
    ahead: &'a [u8],
    h: usize,
    n: usize,
    nq: usize,
    vg: usize,
    per_row: usize,
    per: usize,
}

impl<'a> Shape<'a> {
    fn new(wq: &'a [u8], codes: &'a [u8], d: usize, vg: usize, ahead: &'a [u8]) -> Self {
        let h = d / 2;
        let n = codes.len() / h;
        let nq = quad_len(n);
        Shape {
            wq,
            codes,
            ahead,
            h,
            n,
            nq,
            vg,
            per_row: d / vg * nq,
            per: lines_per_part(ahead, nq / 4),
        }
    }

    /// The rows `r0..r0 + rb` of `rows` a pass takes (at most 4) and their weights, the last
    /// repeated to fill four.
    fn rows(&self, r0: usize, rows: usize) -> (usize, [*const u8; 4]) {
        let rb = (rows - r0).min(4);
        let wr = [0, 1, 2, 3].map(|r| self.wq[(r0 + r.min(rb - 1)) * self.per_row..].as_ptr());
        (rb, wr)
    }

    /// 32-byte chunk `ch` for the rows `wr`, fetching the next tile's codes when `fetch`.
    fn chunk(&self, ch: usize, wr: [*const u8; 4], fetch: bool) -> Chunk<'a> {
        Chunk {
            codes: self.codes,
            h: self.h,
            n: self.n,
            off: 32 * ch,
            wr,
            g: [
                64 * ch / self.vg * self.nq,
                (64 * ch + 32) / self.vg * self.nq,
            ],
            ahead: self.ahead,
            per: if fetch { self.per } else { 0 },
        }
    }
}

/// Where a kernel reads: the codes, their row length `h` and token count `n`, the first byte
/// of the 32-byte chunk, four rows' weights, the byte offsets of the chunk's two blocks' groups
/// in a row, and the fetch hint (`per` lines per quad; 0: none).
#[derive(Clone, Copy)]
struct Chunk<'a> {
    codes: &'a [u8],
    h: usize,
    n: usize,
    off: usize,
    wr: [*const u8; 4],
    g: [usize; 2],
    ahead: &'a [u8],
    per: usize,
}

impl Chunk<'_> {
    /// Token `j`'s 32 code bytes of the chunk, zeros past the last token.
    ///
    /// # Safety
    /// The CPU must support AVX; `off + 32 <= h` and `codes.len() == n · h`.
    #[inline(always)]
    unsafe fn load(&self, j: usize) -> __m256i {
        if j < self.n {
            // SAFETY: token j < n has h bytes of codes at j · h, of which the chunk's 32.
            unsafe { _mm256_loadu_si256(self.codes.as_ptr().add(j * self.h + self.off).cast()) }
        } else {
            // SAFETY: as above (no memory read).
            unsafe { _mm256_setzero_si256() }
        }
    }

    /// Row `r`'s u8 weights of tokens `j..j + 4` in the group of block `k`, as one i32.
    ///
    /// # Safety
    /// `j + 4` must not pass the row's quads (`j < quad_len(n)`, a multiple of 4).
    #[inline(always)]
    unsafe fn weights(&self, r: usize, k: usize, j: usize) -> i32 {
        // SAFETY: the group's quads lie inside the row (checked shapes, caller's `j`).
        unsafe { self.wr[r].add(self.g[k] + j).cast::<i32>().read_unaligned() }
    }
}

/// [`ValueCodes`](super::fused_int4_values::ValueCodes) with `vpdpbusd`: per 32-byte chunk of
/// the codes (64 channels) and token quad, the four tokens' bytes interleaved into two registers
/// of sixteen 32-bit lanes ([`quad_512`]), nibbles split, times each row's broadcast weight quad
/// (of the block's group: the two blocks' differ only when `vg == 32`); sixteen accumulators
/// for four rows, stored in the value lane order.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI; the shapes passed [`check_values`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn values_vnni(
    wq: &[u8],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    let (sh, rows) = (Shape::new(wq, codes, d, vg, ahead), isum.len() / d);
    for r0 in (0..rows).step_by(4) {
        let (rb, wr) = sh.rows(r0, rows);
        for ch in 0..sh.h / 32 {
            let c = sh.chunk(ch, wr, r0 == 0 && ch == 0);
            // SAFETY: the features are this function's; the chunk lies inside every token's
            // codes and its groups' weights inside the rows (checked shapes).
            let a = unsafe {
                if c.g[0] == c.g[1] {
                    chunk_vnni::<false>(&c)
                } else {
                    chunk_vnni::<true>(&c)
                }
            };
            for (r, ar) in a.iter().enumerate().take(rb) {
                for (i, an) in ar.iter().enumerate() {
                    let dst = &mut isum[(r0 + r) * d + 64 * ch + 16 * i..][..16];
                    // SAFETY: sixteen i32 inside the row (checked by the slice above).
                    unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), *an) };
                }
            }
        }
    }
}

/// One chunk of [`values_vnni`] over every token quad; `SPLIT`: the two blocks' groups differ.
///
/// # Safety
/// As [`values_vnni`]; `c` describes a chunk inside the checked shapes.
#[inline(always)]
unsafe fn chunk_vnni<const SPLIT: bool>(c: &Chunk<'_>) -> [[__m512i; 4]; 4] {
    // SAFETY: the caller guarantees the features and the chunk.
    unsafe {
        let (m15, m8) = (_mm512_set1_epi8(15), _mm512_set1_epi8(8));
        let mut a = [[_mm512_setzero_si512(); 4]; 4];
        for q in 0..quad_len(c.n) / 4 {
            prefetch_lines(c.ahead, q * c.per, c.per);
            let j = 4 * q;
            let y = [c.load(j), c.load(j + 1), c.load(j + 2), c.load(j + 3)];
            let x = quad_512(y, m15, m8);
            for (r, ar) in a.iter_mut().enumerate() {
                let w0 = _mm512_set1_epi32(c.weights(r, 0, j));
                let w = if SPLIT {
                    // Lanes 4–7 and 12–15 hold block 1's bytes.
                    _mm512_mask_blend_epi32(0xF0F0, w0, _mm512_set1_epi32(c.weights(r, 1, j)))
                } else {
                    w0
                };
                for (an, xn) in ar.iter_mut().zip(&x) {
                    *an = _mm512_dpbusd_epi32(*an, w, *xn);
                }
            }
        }
        a
    }
}

/// Four tokens' 32 code bytes (`y[t]`) as four registers of centred codes, one byte per token in
/// each 32-bit lane: runs `2R + nibble` of the value lane order (module docs of `fused_int4_values`).
///
/// # Safety
/// The CPU must support AVX-512 F/BW.
#[inline(always)]
unsafe fn quad_512(y: [__m256i; 4], m15: __m512i, m8: __m512i) -> [__m512i; 4] {
    // SAFETY: the caller guarantees the features.
    unsafe {
        // 128-bit lanes: token 0 (1) blocks 0, 1, then token 2 (3) blocks 0, 1.
        let a = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(y[0]), y[2]);
        let b = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(y[1]), y[3]);
        let (u, v) = (_mm512_unpacklo_epi8(a, b), _mm512_unpackhi_epi8(a, b));
        // Tokens 0, 1 (p) and 2, 3 (q) of block 0 bytes 0–7, block 1 bytes 0–7, then 8–15.
        let p = _mm512_shuffle_i64x2::<0x44>(u, v);
        let q = _mm512_shuffle_i64x2::<0xEE>(u, v);
        let (r0, r1) = (_mm512_unpacklo_epi16(p, q), _mm512_unpackhi_epi16(p, q));
        [
            _mm512_sub_epi8(_mm512_and_si512(r0, m15), m8),
            _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16::<4>(r0), m15), m8),
            _mm512_sub_epi8(_mm512_and_si512(r1, m15), m8),
            _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16::<4>(r1), m15), m8),
        ]
    }
}

/// [`values_quads`] with `vpmaddubsw`, `vpmaddwd` and `vpaddd`.
///
/// # Safety
/// The CPU must support AVX2; the shapes passed [`check_values`].
#[target_feature(enable = "avx2")]
unsafe fn values_avx2(
    wq: &[u8],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    // SAFETY: as this function's.
    unsafe { values_quads::<false>(wq, codes, d, vg, ahead, isum) }
}

/// [`values_quads`] with `vpdpbusd` on 256-bit registers (AVX-VNNI: the byte products, their
/// sum and the add in one instruction, the same exact i32 sums).
///
/// # Safety
/// The CPU must support AVX2 and AVX-VNNI; the shapes passed [`check_values`].
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn values_avx_vnni(
    wq: &[u8],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    // SAFETY: as this function's.
    unsafe { values_quads::<true>(wq, codes, d, vg, ahead, isum) }
}

/// [`ValueCodes`](super::fused_int4_values::ValueCodes) on 256-bit registers: per 32-byte chunk
/// and quarter of it (the token pairs' low or high bytes, then the low or high pairs of pairs:
/// one half run of the value lane order), over every token quad, eight accumulators for four
/// rows (sixteen registers hold no more).
///
/// # Safety
/// The CPU must support AVX2 (and AVX-VNNI when `VNNI`); the shapes passed [`check_values`].
#[inline(always)]
unsafe fn values_quads<const VNNI: bool>(
    wq: &[u8],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    let (sh, rows) = (Shape::new(wq, codes, d, vg, ahead), isum.len() / d);
    for r0 in (0..rows).step_by(4) {
        let (rb, wr) = sh.rows(r0, rows);
        for ch in 0..sh.h / 32 {
            for part in 0..4 {
                let c = sh.chunk(ch, wr, r0 == 0 && ch == 0 && part == 0);
                // SAFETY: the caller guarantees the features; the chunk lies inside every
                // token's codes and its groups' weights inside the rows (checked shapes).
                let a = unsafe {
                    if c.g[0] == c.g[1] {
                        quarter::<VNNI, false>(&c, part)
                    } else {
                        quarter::<VNNI, true>(&c, part)
                    }
                };
                // Part (low / high pairs, low / high pairs of pairs): half `part % 2` of runs
                // `2 (part / 2) + nibble`.
                let at = 64 * ch + 32 * (part / 2) + 8 * (part % 2);
                for (r, ar) in a.iter().enumerate().take(rb) {
                    for (nib, an) in ar.iter().enumerate() {
                        let dst = &mut isum[(r0 + r) * d + at + 16 * nib..][..8];
                        // SAFETY: eight i32 inside the row (checked by the slice above).
                        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), *an) };
                    }
                }
            }
        }
    }
}

/// One quarter of a chunk of [`values_quads`] over every token quad: four rows' sums of the
/// low and of the high nibbles.
///
/// # Safety
/// As [`values_quads`]; `c` describes a chunk inside the checked shapes.
#[inline(always)]
unsafe fn quarter<const VNNI: bool, const SPLIT: bool>(
    c: &Chunk<'_>,
    part: usize,
) -> [[__m256i; 2]; 4] {
    // SAFETY: the caller guarantees the features and the chunk.
    unsafe {
        let (m15, m8, ones) = (
            _mm256_set1_epi8(15),
            _mm256_set1_epi8(8),
            _mm256_set1_epi16(1),
        );
        let mut a = [[_mm256_setzero_si256(); 2]; 4];
        for q in 0..quad_len(c.n) / 4 {
            prefetch_lines(c.ahead, q * c.per, c.per);
            let j = 4 * q;
            let y = [c.load(j), c.load(j + 1), c.load(j + 2), c.load(j + 3)];
            let (p, s) = if part.is_multiple_of(2) {
                (
                    _mm256_unpacklo_epi8(y[0], y[1]),
                    _mm256_unpacklo_epi8(y[2], y[3]),
                )
            } else {
                (
                    _mm256_unpackhi_epi8(y[0], y[1]),
                    _mm256_unpackhi_epi8(y[2], y[3]),
                )
            };
            let x = if part / 2 == 0 {
                _mm256_unpacklo_epi16(p, s)
            } else {
                _mm256_unpackhi_epi16(p, s)
            };
            let x = [
                _mm256_sub_epi8(_mm256_and_si256(x, m15), m8),
                _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16::<4>(x), m15), m8),
            ];
            for (r, ar) in a.iter_mut().enumerate() {
                let w0 = _mm256_set1_epi32(c.weights(r, 0, j));
                let w = if SPLIT {
                    // The upper 128-bit lane holds block 1's bytes.
                    _mm256_blend_epi32::<0xF0>(w0, _mm256_set1_epi32(c.weights(r, 1, j)))
                } else {
                    w0
                };
                for (an, xn) in ar.iter_mut().zip(&x) {
                    *an = if VNNI {
                        _mm256_dpbusd_avx_epi32(*an, w, *xn)
                    } else {
                        // Pair sums at most 2 · 255 · 8 in magnitude: `vpmaddubsw` never
                        // saturates.
                        let pairs = _mm256_maddubs_epi16(w, *xn);
                        _mm256_add_epi32(*an, _mm256_madd_epi16(pairs, ones))
                    };
                }
            }
        }
        a
    }
}
