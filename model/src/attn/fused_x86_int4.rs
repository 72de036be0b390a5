//! x86-64 integer kernels of the INT4 decode path's key side: the dot products
//! ([`DotCodes`](super::fused_int4::DotCodes), `fused_int4`) with `vpdpbusd` (AVX-512 F/BW/VNNI)
//! or `vpmaddubsw` (AVX2) on the token-lane key chunks, one token per 32-bit lane (the value sums
//! are `fused_x86_values`). Integer sums are exact in any order, so each equals its portable
//! version exactly (tests compare the whole kernels bit for bit).

use std::arch::x86_64::*;

use super::fused_int4::{KeyDots, QBLOCK};
use super::int4::{key_chunk_bytes, KEY_CHUNK};
use super::kv::{lines_per_part, prefetch_lines};

/// The AVX-512 build's key scores: `vpdpbusd` where the CPU has AVX-512 VNNI (and BW), else
/// the AVX2 ones.
pub(super) fn dot_512(k: KeyDots<'_>) {
    let (rows, m) = k.shape();
    if is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni") {
        // SAFETY: the features were just detected; shapes checked.
        unsafe { dot_vnni(k, rows, m) }
    } else {
        // SAFETY: the AVX-512 build runs only after AVX2 was detected; shapes checked.
        unsafe { dot_avx2(k, rows, m) }
    }
}

/// The AVX2 build's key scores.
pub(super) fn dot_256(k: KeyDots<'_>) {
    let (rows, m) = k.shape();
    // SAFETY: only handed to the builds, which run after AVX2 was detected; shapes checked.
    unsafe { dot_avx2(k, rows, m) }
}

/// [`DotCodes`](super::fused_int4::DotCodes) with `vpdpbusd`: per chunk of 16 tokens and block
/// of 32 channels ([`vnni_block`]), four rows' exact sums, converted and scaled into four rows of
/// f32 lanes (the contract's order of steps), stored once per chunk.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI; `rows` and `m` come from [`KeyDots::shape`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn dot_vnni(k: KeyDots<'_>, rows: usize, m: usize) {
    let d = k.d;
    let (cb, blocks) = (key_chunk_bytes(d), d / QBLOCK);
    let scale = _mm512_set1_ps(k.scale);
    // Rows past the last of a group of four write here, over and over.
    let mut spare = [0f32; KEY_CHUNK];
    let per = lines_per_part(k.ahead, m / KEY_CHUNK);
    for r0 in (0..rows).step_by(4) {
        let rb = (rows - r0).min(4);
        let row = |r: usize| r0 + r.min(rb - 1);
        // Row r's query as i32 quadruples (channels 4i..4i + 4 at i), its steps and bias.
        let q: [*const i32; 4] = [0, 1, 2, 3].map(|r| k.q8[row(r) * d..].as_ptr().cast());
        let st: [&[f32]; 4] = [0, 1, 2, 3].map(|r| &k.st[row(r) * blocks..][..blocks]);
        // Not `array::map` for registers: its closure may lose the target features (a call each).
        let bias = [
            _mm512_set1_ps(k.bias[row(0)]),
            _mm512_set1_ps(k.bias[row(1)]),
            _mm512_set1_ps(k.bias[row(2)]),
            _mm512_set1_ps(k.bias[row(3)]),
        ];
        // Row r's first score, and whether the row exists (else every store goes to `spare`).
        let dst: [(*mut f32, usize); 4] = [0, 1, 2, 3].map(|r| {
            if r < rb {
                (k.out[(r0 + r) * m..].as_mut_ptr(), 1)
            } else {
                (spare.as_mut_ptr(), 0)
            }
        });
        for ch in 0..m / KEY_CHUNK {
            // Opaque to the optimiser, so the query broadcasts stay memory operands of the
            // multiply-adds: hoisted out of the chunk loop, 64 of them spilled to the stack.
            let q = std::hint::black_box(q);
            let cp = k.codes.as_ptr().wrapping_add(ch * cb);
            if r0 == 0 {
                prefetch_lines(k.ahead, ch * per, per);
            }
            let mut x = [_mm512_setzero_ps(); 4];
            for b in 0..blocks {
                // SAFETY: chunk ch has d / 8 octets of 64 bytes (shapes checked), block b covers
                // octets 4b..4b + 4 and quadruples 8b..8b + 8 of each row.
                let a = unsafe { vnni_block(cp.add(256 * b), q, 8 * b) };
                for ((xr, ar), sr) in x.iter_mut().zip(a).zip(&st) {
                    let y = _mm512_mul_ps(_mm512_cvtepi32_ps(ar), _mm512_set1_ps(sr[b]));
                    *xr = if b == 0 { y } else { _mm512_add_ps(*xr, y) };
                }
            }
            for ((&(p, live), xr), br) in dst.iter().zip(x).zip(bias) {
                let v = _mm512_mul_ps(_mm512_add_ps(xr, br), scale);
                // SAFETY: a live row's 16 scores of chunk ch lie inside `out` (checked shapes);
                // a missing row's store goes to the 16 lanes of `spare`.
                unsafe { _mm512_storeu_ps(p.add(ch * KEY_CHUNK * live), v) };
            }
        }
    }
}

/// One block of 32 channels of one 16-token chunk (`cp`: its four octets of 64 bytes) times four
/// query rows (quadruples `i0..i0 + 8` of each): low and high nibbles in their own accumulators,
/// eight independent chains of four multiply-adds, added at the end.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI; `cp` must point at 256 readable bytes and every
/// `q[r]` at `i0 + 8` readable i32.
#[inline(always)]
unsafe fn vnni_block(cp: *const u8, q: [*const i32; 4], i0: usize) -> [__m512i; 4] {
    // SAFETY: the caller guarantees the bytes and quadruples read.
    unsafe {
        let m4 = _mm512_set1_epi8(15);
        let mut lo = [_mm512_setzero_si512(); 4];
        let mut hi = [_mm512_setzero_si512(); 4];
        for i in 0..4 {
            let x = _mm512_loadu_si512(cp.add(64 * i).cast());
            let (cl, chh) = (
                _mm512_and_si512(x, m4),
                _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4),
            );
            for r in 0..4 {
                let ql = _mm512_set1_epi32(q[r].add(i0 + 2 * i).read_unaligned());
                let qh = _mm512_set1_epi32(q[r].add(i0 + 2 * i + 1).read_unaligned());
                lo[r] = _mm512_dpbusd_epi32(lo[r], cl, ql);
                hi[r] = _mm512_dpbusd_epi32(hi[r], chh, qh);
            }
        }
        [
            _mm512_add_epi32(lo[0], hi[0]),
            _mm512_add_epi32(lo[1], hi[1]),
            _mm512_add_epi32(lo[2], hi[2]),
            _mm512_add_epi32(lo[3], hi[3]),
        ]
    }
}

/// [`DotCodes`](super::fused_int4::DotCodes) with `vpmaddubsw`: per half chunk (8 tokens) and
/// block, each octet's 32 bytes split into nibbles, times four rows' broadcast quadruples; the
/// block's eight products per pair summed in i16 (exact: each is at most 2 · 15 · 128 = 3840 in
/// magnitude, eight of them 30720), widened with `vpmaddwd` by ones, converted and scaled as the
/// contract orders.
///
/// # Safety
/// The CPU must support AVX2; `rows` and `m` come from [`KeyDots::shape`].
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(k: KeyDots<'_>, rows: usize, m: usize) {
    let d = k.d;
    let (cb, blocks) = (key_chunk_bytes(d), d / QBLOCK);
    let (m4, ones) = (_mm256_set1_epi8(15), _mm256_set1_epi16(1));
    let scale = _mm256_set1_ps(k.scale);
    let per = lines_per_part(k.ahead, m / KEY_CHUNK);
    for r0 in (0..rows).step_by(4) {
        let rb = (rows - r0).min(4);
        let row = |r: usize| r0 + r.min(rb - 1);
        let q: [*const i32; 4] = [0, 1, 2, 3].map(|r| k.q8[row(r) * d..].as_ptr().cast());
        for ch in 0..m / KEY_CHUNK {
            let q = std::hint::black_box(q);
            if r0 == 0 {
                prefetch_lines(k.ahead, ch * per, per);
            }
            for half in 0..2 {
                let cp = k.codes.as_ptr().wrapping_add(ch * cb + 32 * half);
                let mut x = [_mm256_setzero_ps(); 4];
                for b in 0..blocks {
                    let mut a = [_mm256_setzero_si256(); 4];
                    for o in 4 * b..4 * b + 4 {
                        // SAFETY: octet o < d / 8 of chunk ch has 64 bytes at ch · cb + 64 · o,
                        // of which this half reads 32; 2o + 1 < d / 4 quadruples per row.
                        unsafe {
                            let y = _mm256_loadu_si256(cp.add(64 * o).cast());
                            let lo = _mm256_and_si256(y, m4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(y), m4);
                            for (ar, &qr) in a.iter_mut().zip(&q) {
                                let ql = _mm256_set1_epi32(qr.add(2 * o).read_unaligned());
                                let qh = _mm256_set1_epi32(qr.add(2 * o + 1).read_unaligned());
                                let p = _mm256_add_epi16(
                                    _mm256_maddubs_epi16(lo, ql),
                                    _mm256_maddubs_epi16(hi, qh),
                                );
                                *ar = _mm256_add_epi16(*ar, p);
                            }
                        }
                    }
                    for (r, (xr, ar)) in x.iter_mut().zip(a).enumerate() {
                        let i = _mm256_madd_epi16(ar, ones);
                        let sb = _mm256_set1_ps(k.st[row(r) * blocks + b]);
                        let y = _mm256_mul_ps(_mm256_cvtepi32_ps(i), sb);
                        *xr = if b == 0 { y } else { _mm256_add_ps(*xr, y) };
                    }
                }
                for (r, xr) in x.iter().enumerate().take(rb) {
                    let br = _mm256_set1_ps(k.bias[r0 + r]);
                    let v = _mm256_mul_ps(_mm256_add_ps(*xr, br), scale);
                    let dst = &mut k.out[(r0 + r) * m + ch * KEY_CHUNK + 8 * half..][..8];
                    // SAFETY: eight f32 (checked by the slice above).
                    unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
                }
            }
        }
    }
}
