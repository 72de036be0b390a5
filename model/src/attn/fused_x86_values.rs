//! x86-64 integer kernels of the INT4 decode path's value side
//! ([`ValueCodes`](super::fused_int4_values::ValueCodes), `fused_int4_values`): the u8 weights
//! times the centred 4-bit codes (`code − 8`, signed bytes) over token quads, with `vpdpbusd` on 512-bit registers (AVX-512
//! F/BW/VL/VNNI), on 256-bit registers (AVX-VNNI), or `vpmaddubsw` + `vpmaddwd` + `vpaddd`
//! (AVX2). Integer sums are exact in any order, so each equals the portable version exactly
//! (tests compare them on the whole u8 range).
//!
//! The cache keeps value codes in token quads (`attn::int4`), so a plain load gives registers
//! whose 32-bit lanes hold one code byte of four tokens; the nibbles are split with a mask and
//! a shift and centred with a byte subtraction, and the registers come out in the value lane
//! order of `fused_int4_values::vpos`.

use std::arch::x86_64::*;

use super::fused_int4_values::WEIGHT_PAD;
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
    let (qb, rows) = (2 * d, isum.len() / d);
    assert!(d.is_multiple_of(64) && vg.is_multiple_of(32) && d.is_multiple_of(vg));
    assert!(codes.len().is_multiple_of(qb) && isum.len() == rows * d);
    assert!(wq.len() >= rows * codes.len() / qb * 4 * (d / vg) + WEIGHT_PAD);
}

/// A call's shapes: the codes (`quads` quads of `qb` bytes), the weights (`per_row` a row, `nq` a
/// group), the value group `vg`, and the fetch hint (`per` lines per quad).
struct Shape<'a> {
    wq: &'a [u8],
    codes: &'a [u8],
    ahead: &'a [u8],
    qb: usize,
    quads: usize,
    nq: usize,
    vg: usize,
    per_row: usize,
    per: usize,
}

impl<'a> Shape<'a> {
    fn new(wq: &'a [u8], codes: &'a [u8], d: usize, vg: usize, ahead: &'a [u8]) -> Self {
        let qb = 2 * d;
        let quads = codes.len() / qb;
        Shape {
            wq,
            codes,
            ahead,
            qb,
            quads,
            nq: 4 * quads,
            vg,
            per_row: d / vg * 4 * quads,
            per: lines_per_part(ahead, quads),
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
            qb: self.qb,
            quads: self.quads,
            off: 128 * ch,
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

/// Where a kernel reads: the codes, the bytes of a quad `qb` and the quads, the chunk's first
/// byte in a quad (its 32 code bytes of four tokens: 128), four rows' weights, the byte offsets
/// of the chunk's two blocks' groups in a row, and the fetch hint (`per` lines per quad; 0:
/// none).
#[derive(Clone, Copy)]
struct Chunk<'a> {
    codes: &'a [u8],
    qb: usize,
    quads: usize,
    off: usize,
    wr: [*const u8; 4],
    g: [usize; 2],
    ahead: &'a [u8],
    per: usize,
}

impl Chunk<'_> {
    /// The address of quad `q`'s bytes of the chunk, from byte `at` of them (`< 128`).
    ///
    /// # Safety
    /// `q < quads`; the caller reads at most `128 − at` bytes from it.
    #[inline(always)]
    unsafe fn at(&self, q: usize, at: usize) -> *const u8 {
        debug_assert!(q < self.quads && at < 128);
        // SAFETY: quad q lies inside the codes (q < quads = len / qb) and the chunk's 128 bytes
        // inside the quad (off + 128 <= 2d = qb, checked shapes).
        unsafe { self.codes.as_ptr().add(q * self.qb + self.off + at) }
    }

    /// Row `r`'s u8 weights of tokens `j..j + 4` in the group of block `k`, as one i32.
    ///
    /// # Safety
    /// `j + 4` must not pass the row's quads (`j < 4 · quads`, a multiple of 4).
    #[inline(always)]
    unsafe fn weights(&self, r: usize, k: usize, j: usize) -> i32 {
        // SAFETY: the group's quads lie inside the row (checked shapes, caller's `j`).
        unsafe { self.wr[r].add(self.g[k] + j).cast::<i32>().read_unaligned() }
    }
}

/// [`ValueCodes`](super::fused_int4_values::ValueCodes) with `vpdpbusd`: per 32-byte chunk of
/// the codes (64 channels) and token quad, the quad's 128 bytes in two registers of sixteen
/// 32-bit lanes (one 16-byte block each), nibbles split, times each row's broadcast weight quad
/// of the block's group; sixteen accumulators for four rows, stored in the value lane order.
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
        for ch in 0..d / 64 {
            let c = sh.chunk(ch, wr, r0 == 0 && ch == 0);
            // SAFETY: the features are this function's; the chunk lies inside every quad and
            // its groups' weights inside the rows (checked shapes).
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
/// Register `2k + nibble` of a row holds block `k`'s low or high nibbles' sums.
///
/// # Safety
/// As [`values_vnni`]; `c` describes a chunk inside the checked shapes.
#[inline(always)]
unsafe fn chunk_vnni<const SPLIT: bool>(c: &Chunk<'_>) -> [[__m512i; 4]; 4] {
    // SAFETY: the caller guarantees the features and the chunk.
    unsafe {
        let (m15, m8) = (_mm512_set1_epi8(15), _mm512_set1_epi8(8));
        let mut a = [[_mm512_setzero_si512(); 4]; 4];
        for q in 0..c.quads {
            prefetch_lines(c.ahead, q * c.per, c.per);
            let j = 4 * q;
            let y0 = _mm512_loadu_si512(c.at(q, 0).cast());
            let y1 = _mm512_loadu_si512(c.at(q, 64).cast());
            let x = [
                _mm512_sub_epi8(_mm512_and_si512(y0, m15), m8),
                _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16::<4>(y0), m15), m8),
                _mm512_sub_epi8(_mm512_and_si512(y1, m15), m8),
                _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16::<4>(y1), m15), m8),
            ];
            for (r, ar) in a.iter_mut().enumerate() {
                let w0 = _mm512_set1_epi32(c.weights(r, 0, j));
                let w1 = if SPLIT {
                    _mm512_set1_epi32(c.weights(r, 1, j))
                } else {
                    w0
                };
                ar[0] = _mm512_dpbusd_epi32(ar[0], w0, x[0]);
                ar[1] = _mm512_dpbusd_epi32(ar[1], w0, x[1]);
                ar[2] = _mm512_dpbusd_epi32(ar[2], w1, x[2]);
                ar[3] = _mm512_dpbusd_epi32(ar[3], w1, x[3]);
            }
        }
        a
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
/// and quarter of it (8 code bytes of four tokens: one register a quad, inside one block), over
/// every token quad, eight accumulators for four rows (sixteen registers hold no more).
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
        for ch in 0..d / 64 {
            for part in 0..4 {
                let c = sh.chunk(ch, wr, r0 == 0 && ch == 0 && part == 0);
                // SAFETY: the caller guarantees the features; the chunk lies inside every quad
                // and its groups' weights inside the rows (checked shapes).
                let a = unsafe { quarter::<VNNI>(&c, part) };
                // Bytes 8 part.. of the chunk: block part / 2, its half part % 2.
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
/// As [`values_quads`]; `c` describes a chunk inside the checked shapes, `part < 4`.
#[inline(always)]
unsafe fn quarter<const VNNI: bool>(c: &Chunk<'_>, part: usize) -> [[__m256i; 2]; 4] {
    // SAFETY: the caller guarantees the features and the chunk.
    unsafe {
        let (m15, m8, ones) = (
            _mm256_set1_epi8(15),
            _mm256_set1_epi8(8),
            _mm256_set1_epi16(1),
        );
        let mut a = [[_mm256_setzero_si256(); 2]; 4];
        for q in 0..c.quads {
            prefetch_lines(c.ahead, q * c.per, c.per);
            let j = 4 * q;
            let y = _mm256_loadu_si256(c.at(q, 32 * part).cast());
            let x = [
                _mm256_sub_epi8(_mm256_and_si256(y, m15), m8),
                _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16::<4>(y), m15), m8),
            ];
            for (r, ar) in a.iter_mut().enumerate() {
                let w = _mm256_set1_epi32(c.weights(r, part / 2, j));
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
