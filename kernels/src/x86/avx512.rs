//! AVX-512 kernels on T2 blocks: `vpdpbusd` (AVX-512 VNNI) and `vpmaddubsw` (AVX-512 BW) tiles,
//! plus the AVX-512 activation quantiser. Must equal `crate::scalar` bit for bit (proptests in
//! `crate::tests`).
//!
//! Both tiles multiply the unsigned codes `c = w + 1` ∈ {0, 1, 2} (the block bytes shifted and
//! masked, see `crate::format`) by signed activations broadcast four at a time, then subtract
//! `Σ x` per token: `Σ (w + 1)·x − Σ x = Σ w·x`.

use std::arch::x86_64::*;

use crate::format::{BlockT2, BLOCK_K};
use crate::tuning::prefetch_bytes;

/// Splits a block into its four code planes: plane `i` = codes of columns `4i..4i+4` for the
/// 16 rows, one u8 each (0..=2).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn planes(v: __m512i) -> [__m512i; 4] {
    let mask = _mm512_set1_epi8(3);
    [
        _mm512_and_si512(v, mask),
        _mm512_and_si512(_mm512_srli_epi16::<2>(v), mask),
        _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask),
        _mm512_and_si512(_mm512_srli_epi16::<6>(v), mask),
    ]
}

/// Four activations at `p` broadcast to all 16 i32 lanes.
///
/// # Safety
/// `p..p+4` must be readable.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn bcast4(p: *const i8) -> __m512i {
    // SAFETY: the caller guarantees 4 readable bytes; read_unaligned has no alignment need.
    _mm512_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() })
}

/// One panel × `M` tokens with `vpdpbusd`; `A` accumulator sets spread the four planes so that
/// few-token tiles are not bound by the instruction's latency (A = 2 for M = 2, 3;
/// one token uses [`tile_vnni_gemv`]).
///
/// Overflow: each `vpdpbusd` adds four products `c·x` with `c ≤ 2`, `|x| ≤ 128` (≤ 1024) to an
/// i32 lane; over `k ≤ 2^22` columns the sum stays below 2^31 (`format::MAX_K`).
///
/// # Safety
/// CPU has AVX-512 F/BW/VNNI; `blocks` points to `nb` blocks; `xp` to `nb · M · 16` bytes of
/// activations in the packed tile layout (`crate::matmul::pack_row`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn tile_vnni<const M: usize, const A: usize>(
    blocks: *const BlockT2,
    nb: usize,
    xp: *const i8,
    sums: &[i32; M],
) -> [[i32; 16]; M] {
    let mut acc = [[_mm512_setzero_si512(); M]; A];
    let mut xb = xp;
    for b in 0..nb {
        // SAFETY: b < nb blocks, each 64-byte aligned (BlockT2 is align(64)).
        let pl = planes(unsafe { _mm512_load_si512(blocks.add(b).cast()) });
        for (i, plane) in pl.iter().enumerate() {
            for (t, a) in acc[i % A].iter_mut().enumerate() {
                // SAFETY: block b of the tile holds M·16 bytes; (i·M + t)·4 + 4 ≤ M·16.
                let xv = unsafe { bcast4(xb.add((i * M + t) * 4)) };
                *a = _mm512_dpbusd_epi32(*a, *plane, xv);
            }
        }
        // SAFETY: stays within (or one past) the tile's nb · M · 16 bytes.
        xb = unsafe { xb.add(M * BLOCK_K) };
    }
    let mut out = [[0i32; 16]; M];
    for t in 0..M {
        let mut s = acc[0][t];
        for set in acc.iter().skip(1) {
            s = _mm512_add_epi32(s, set[t]);
        }
        s = _mm512_sub_epi32(s, _mm512_set1_epi32(sums[t]));
        // SAFETY: out[t] is 16 i32 = 64 bytes; storeu has no alignment need.
        unsafe { _mm512_storeu_si512(out[t].as_mut_ptr().cast(), s) };
    }
    out
}

/// One panel × one token with `vpdpbusd`, without shifts: plane `i` is masked in place
/// (`v & (3 << 2i)`, the code times `4^i`) into its own accumulator, which therefore holds
/// `4^i ·` (that plane's dot product); an exact arithmetic shift right by `2i` undoes the
/// factor at the end. Four ANDs and four `vpdpbusd` per 64-byte block instead of eleven ops.
///
/// Overflow: a masked code is at most `2 · 64 = 128` (fits u8); a `vpdpbusd` adds four
/// products `≤ 128 · 128` per lane (≤ 2^16), one per 16 columns, so `k ≤ 2^18`
/// (`format::MAX_K`) keeps every accumulator below 2^30.
///
/// # Safety
/// CPU has AVX-512 F/BW/VNNI; `blocks` points to `nb` blocks; `xp` to `nb · 16` activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn tile_vnni_gemv(
    blocks: *const BlockT2,
    nb: usize,
    xp: *const i8,
    sums: &[i32; 1],
) -> [[i32; 16]; 1] {
    let masks = [0x03u8, 0x0c, 0x30, 0xc0].map(|m| _mm512_set1_epi8(m as i8));
    let mut acc = [_mm512_setzero_si512(); 4];
    let pf = prefetch_bytes();
    for b in 0..nb {
        // The weights stream once per call: ask for them ahead (`crate::tuning`).
        super::prefetch_ahead(blocks.wrapping_add(b), pf);
        // SAFETY: b < nb blocks, each 64-byte aligned.
        let v = unsafe { _mm512_load_si512(blocks.add(b).cast()) };
        for (i, (a, mask)) in acc.iter_mut().zip(&masks).enumerate() {
            // SAFETY: block b's activations are xp[16b .. 16b + 16]; 4i + 4 ≤ 16.
            let xv = unsafe { bcast4(xp.add(b * BLOCK_K + 4 * i)) };
            *a = _mm512_dpbusd_epi32(*a, _mm512_and_si512(v, *mask), xv);
        }
    }
    let s = _mm512_add_epi32(
        _mm512_add_epi32(acc[0], _mm512_srai_epi32::<2>(acc[1])),
        _mm512_add_epi32(
            _mm512_srai_epi32::<4>(acc[2]),
            _mm512_srai_epi32::<6>(acc[3]),
        ),
    );
    let s = _mm512_sub_epi32(s, _mm512_set1_epi32(sums[0]));
    let mut out = [[0i32; 16]; 1];
    // SAFETY: out[0] is 64 bytes.
    unsafe { _mm512_storeu_si512(out[0].as_mut_ptr().cast(), s) };
    out
}

/// One panel × `M` tokens with `vpmaddubsw` + `vpmaddwd` (AVX-512 BW, no VNNI).
///
/// Overflow: `vpmaddubsw` sums two products `c·x` (`c ≤ 2`, `|x| ≤ 128`): |·| ≤ 512, no
/// saturation; the four planes of one block add to ≤ 2048 in i16 before `vpmaddwd` widens to
/// i32 (pairs summed: ≤ 4096 per block per lane), far from i32 limits for `k ≤ 2^22`.
///
/// # Safety
/// CPU has AVX-512 F/BW; pointers as for [`tile_vnni`].
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn tile_bw<const M: usize>(
    blocks: *const BlockT2,
    nb: usize,
    xp: *const i8,
    sums: &[i32; M],
) -> [[i32; 16]; M] {
    let ones = _mm512_set1_epi16(1);
    let mut acc = [_mm512_setzero_si512(); M];
    let mut xb = xp;
    for b in 0..nb {
        // SAFETY: b < nb blocks, each 64-byte aligned.
        let pl = planes(unsafe { _mm512_load_si512(blocks.add(b).cast()) });
        for (t, a) in acc.iter_mut().enumerate() {
            let mut s16 = _mm512_setzero_si512();
            for (i, plane) in pl.iter().enumerate() {
                // SAFETY: as in tile_vnni, (i·M + t)·4 + 4 ≤ M·16.
                let xv = unsafe { bcast4(xb.add((i * M + t) * 4)) };
                s16 = _mm512_add_epi16(s16, _mm512_maddubs_epi16(*plane, xv));
            }
            *a = _mm512_add_epi32(*a, _mm512_madd_epi16(s16, ones));
        }
        // SAFETY: stays within (or one past) the tile.
        xb = unsafe { xb.add(M * BLOCK_K) };
    }
    let mut out = [[0i32; 16]; M];
    for t in 0..M {
        let s = _mm512_sub_epi32(acc[t], _mm512_set1_epi32(sums[t]));
        // SAFETY: out[t] is 64 bytes.
        unsafe { _mm512_storeu_si512(out[t].as_mut_ptr().cast(), s) };
    }
    out
}

/// AVX-512 form of `crate::quant::quantize_row_i8_scalar`; returns `(scale, Σ q)`.
/// Bit-exact: max, the f32 multiply and round-to-nearest-even (`vrndscaleps` imm 8) are the
/// same IEEE operations as the scalar code; the clamped value is an integer in -128..=127 so
/// the conversions are exact.
///
/// # Safety
/// CPU has AVX-512 F/BW; `x.len() == out.len()`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn quantize_row(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let len = x.len();
    let full = len / 16 * 16;
    let tail = (len - full) as u32;
    let tail_mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
    let mut vmax = _mm512_setzero_ps();
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 ≤ len.
        let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) };
        // Operand order keeps the running max when v is NaN, like f32::max in the scalar code.
        vmax = _mm512_max_ps(_mm512_abs_ps(v), vmax);
    }
    if tail > 0 {
        // SAFETY: the mask only loads the tail's in-bounds lanes.
        let v = unsafe { _mm512_maskz_loadu_ps(tail_mask, x.as_ptr().add(full)) };
        vmax = _mm512_max_ps(_mm512_abs_ps(v), vmax);
    }
    let absmax = _mm512_reduce_max_ps(vmax);
    let scale = 127.0f32 / absmax.max(1e-5);
    let vs = _mm512_set1_ps(scale);
    let lo = _mm512_set1_ps(-128.0);
    let hi = _mm512_set1_ps(127.0);
    let mut vsum = _mm512_setzero_si512();
    let quant = |v: __m512| {
        let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(v, vs),
        );
        _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi))
    };
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 ≤ len for both slices.
        let q = quant(unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) });
        vsum = _mm512_add_epi32(vsum, q);
        // SAFETY: 16 bytes at out[i..i + 16] are in bounds.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), _mm512_cvtsepi32_epi8(q)) };
    }
    if tail > 0 {
        // SAFETY: masked load/store touch only the tail's in-bounds lanes.
        let q = quant(unsafe { _mm512_maskz_loadu_ps(tail_mask, x.as_ptr().add(full)) });
        vsum = _mm512_add_epi32(vsum, _mm512_maskz_mov_epi32(tail_mask, q));
        // SAFETY: the mask stores only the tail's in-bounds bytes of `out`.
        unsafe {
            _mm512_mask_cvtsepi32_storeu_epi8(out.as_mut_ptr().add(full).cast(), tail_mask, q)
        };
    }
    (scale, _mm512_reduce_add_epi32(vsum))
}
