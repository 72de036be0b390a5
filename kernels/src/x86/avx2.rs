//! AVX2 kernels on T2 blocks: a `vpmaddubsw` tile (the two 32-byte halves of a block are rows
//! 0..8 and 8..16) and the AVX2 activation quantiser. Must equal `crate::scalar` bit for bit.

use std::arch::x86_64::*;

use crate::format::{BlockT2, BLOCK_K};
use crate::tuning::prefetch_bytes;

/// Code planes of one 32-byte half block: plane `i` = codes of columns `4i..4i+4`, 8 rows.
#[inline]
#[target_feature(enable = "avx2")]
fn planes(v: __m256i) -> [__m256i; 4] {
    let mask = _mm256_set1_epi8(3);
    [
        _mm256_and_si256(v, mask),
        _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
        _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask),
    ]
}

/// Blocks summed in i16 lanes before they are widened to i32 (see [`tile`]).
const FLUSH: usize = 16;

/// One panel × `M` tokens (M ≤ 8).
///
/// Overflow: `vpmaddubsw` sums two products `c·x` (`c ≤ 2`, `−128 ≤ x ≤ 127`) into
/// [−512, 508], no saturation; the four planes of a block add to [−2048, 2032] per i16 lane, so
/// [`FLUSH`] = 16 blocks stay in [−32768, 32512] and the wrapping i16 adds are exact. Only then
/// does `vpmaddwd` widen them into the i32 accumulators: one widening per 16 blocks instead of
/// one per block. For M > 2 the two 32-byte halves (rows 0..8, 8..16) are taken in turn over
/// each run of 16 blocks (the second pass finds the run's blocks and activations in L1).
///
/// # Safety
/// CPU has AVX2; `blocks` points to `nb` blocks; `xp` to `nb · M · 16` bytes in the packed tile
/// layout.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn tile<const M: usize>(
    blocks: *const BlockT2,
    nb: usize,
    xp: *const i8,
    sums: &[i32; M],
) -> [[i32; 16]; M] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; M];
    let mut b0 = 0;
    while b0 < nb {
        let b1 = nb.min(b0 + FLUSH);
        if M <= 2 {
            // Few tokens: both halves per broadcast (2·M sums + 8 planes fit the registers).
            let mut s16 = [[_mm256_setzero_si256(); 2]; M];
            let pf = prefetch_bytes();
            for b in b0..b1 {
                // The weights stream once per call here: ask for them ahead (`crate::tuning`).
                super::prefetch_ahead(blocks.wrapping_add(b), pf);
                // SAFETY: b < nb; each block is 64 aligned bytes, read as two 32-byte halves.
                let (lo, hi) = unsafe {
                    let p = blocks.add(b).cast::<__m256i>();
                    (
                        planes(_mm256_load_si256(p)),
                        planes(_mm256_load_si256(p.add(1))),
                    )
                };
                // SAFETY: b < nb; the tile holds M · 16 activation bytes per block.
                let xb = unsafe { xp.add(b * M * BLOCK_K) };
                for (t, s) in s16.iter_mut().enumerate() {
                    for i in 0..4 {
                        // SAFETY: (i·M + t)·4 + 4 ≤ M·16 bytes of this block's activations.
                        let xv = _mm256_set1_epi32(unsafe {
                            xb.add((i * M + t) * 4).cast::<i32>().read_unaligned()
                        });
                        s[0] = _mm256_add_epi16(s[0], _mm256_maddubs_epi16(lo[i], xv));
                        s[1] = _mm256_add_epi16(s[1], _mm256_maddubs_epi16(hi[i], xv));
                    }
                }
            }
            for (a, s) in acc.iter_mut().zip(&s16) {
                a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(s[0], ones));
                a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(s[1], ones));
            }
            b0 = b1;
            continue;
        }
        // More tokens: one half at a time over the run. A broadcast then serves one half only,
        // so the compiler has no reason to keep 4·M of them alive across halves (it spilled
        // them), and M sums + 4 planes + a broadcast fit the 16 registers up to M = 8.
        for half in 0..2 {
            let mut s16 = [_mm256_setzero_si256(); M];
            for b in b0..b1 {
                // SAFETY: b < nb; each block is 64 aligned bytes, read as two 32-byte halves.
                let pl =
                    planes(unsafe { _mm256_load_si256(blocks.add(b).cast::<__m256i>().add(half)) });
                // SAFETY: b < nb; the tile holds M · 16 activation bytes per block.
                let xb = unsafe { xp.add(b * M * BLOCK_K) };
                for (t, s) in s16.iter_mut().enumerate() {
                    for (i, plane) in pl.iter().enumerate() {
                        // SAFETY: (i·M + t)·4 + 4 ≤ M·16 bytes of this block's activations.
                        let xv = _mm256_set1_epi32(unsafe {
                            xb.add((i * M + t) * 4).cast::<i32>().read_unaligned()
                        });
                        *s = _mm256_add_epi16(*s, _mm256_maddubs_epi16(*plane, xv));
                    }
                }
            }
            for (a, s) in acc.iter_mut().zip(&s16) {
                a[half] = _mm256_add_epi32(a[half], _mm256_madd_epi16(*s, ones));
            }
        }
        b0 = b1;
    }
    let mut out = [[0i32; 16]; M];
    for t in 0..M {
        let s = _mm256_set1_epi32(sums[t]);
        // SAFETY: out[t] is 16 i32; each store writes 8 of them.
        unsafe {
            _mm256_storeu_si256(out[t].as_mut_ptr().cast(), _mm256_sub_epi32(acc[t][0], s));
            _mm256_storeu_si256(
                out[t].as_mut_ptr().add(8).cast(),
                _mm256_sub_epi32(acc[t][1], s),
            );
        }
    }
    out
}

/// Horizontal max of 8 floats.
#[inline]
#[target_feature(enable = "avx2")]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
    _mm_cvtss_f32(m)
}

/// AVX2 form of `crate::quant::quantize_row_i8_scalar`; returns `(scale, Σ q)`. Bit-exact for
/// the reasons given for the AVX-512 form; the tail (< 32 values) runs the scalar statement.
///
/// # Safety
/// CPU has AVX2; `x.len() == out.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_row(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let len = x.len();
    let full = len / 32 * 32;
    let sign = _mm256_set1_ps(-0.0);
    let mut vmax = _mm256_setzero_ps();
    for i in (0..len / 8 * 8).step_by(8) {
        // SAFETY: i + 8 ≤ len.
        let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) };
        vmax = _mm256_max_ps(_mm256_andnot_ps(sign, v), vmax);
    }
    let mut absmax = hmax(vmax);
    for v in &x[len / 8 * 8..] {
        absmax = absmax.max(v.abs());
    }
    let scale = 127.0f32 / absmax.max(1e-5);
    let vs = _mm256_set1_ps(scale);
    let lo = _mm256_set1_ps(-128.0);
    let hi = _mm256_set1_ps(127.0);
    // Undo the lane interleave of packs_epi32 + packs_epi16 (see the loop).
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut vsum = _mm256_setzero_si256();
    let quant = |p: *const f32| {
        // SAFETY: callers pass p with 8 readable floats.
        let v = unsafe { _mm256_loadu_ps(p) };
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(v, vs),
        );
        _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi))
    };
    for i in (0..full).step_by(32) {
        let p = x[i..i + 32].as_ptr();
        // SAFETY: p..p+32 lie in x (sliced above).
        let (a, b, c, d) = unsafe {
            (
                quant(p),
                quant(p.add(8)),
                quant(p.add(16)),
                quant(p.add(24)),
            )
        };
        vsum = _mm256_add_epi32(
            vsum,
            _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d)),
        );
        // packs work per 128-bit lane: result dwords are a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7.
        let ab = _mm256_packs_epi32(a, b);
        let cd = _mm256_packs_epi32(c, d);
        let q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
        // SAFETY: out[i..i + 32] is in bounds.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), q) };
    }
    let sum128 = _mm_add_epi32(
        _mm256_castsi256_si128(vsum),
        _mm256_extracti128_si256::<1>(vsum),
    );
    let sum64 = _mm_add_epi32(sum128, _mm_unpackhi_epi64(sum128, sum128));
    let mut sum = _mm_cvtsi128_si32(_mm_add_epi32(sum64, _mm_shuffle_epi32::<1>(sum64)));
    for (q, &v) in out[full..].iter_mut().zip(&x[full..]) {
        *q = (v * scale).round_ties_even().clamp(-128.0, 127.0) as i8;
        sum += i32::from(*q);
    }
    (scale, sum)
}
