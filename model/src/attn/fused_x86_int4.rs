//! x86-64 integer kernels of the INT4 decode path: the key dot products
//! ([`DotCodes`](super::fused_int4::DotCodes), `fused_int4`) and the value sums
//! ([`ValueCodes`](super::fused_int4_values::ValueCodes), `fused_int4_values`): the dots with
//! `vpdpbusd` (AVX-512 F/BW/VNNI) or `vpmaddubsw` (AVX2) on the token-lane key chunks, one token
//! per 32-bit lane, the value sums with `vpdpwssd` over a whole 16-byte block per register, or
//! over half blocks with `vpdpwssd` on 256-bit registers (AVX-VNNI) or `vpmaddwd` + `vpaddd`.
//! Integer sums are exact in any order, so each equals its portable version exactly (tests
//! compare the whole kernels bit for bit).

use std::arch::x86_64::*;

use super::fused_int4::{KeyDots, QBLOCK};
use super::fused_int4_values::{vpos, WEIGHT_PAD};
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

/// The AVX-512 build's value sums: `vpdpwssd` over whole 16-byte blocks where the CPU has
/// AVX-512 VNNI (and BW, VL), else the AVX2 ones.
pub(super) fn values_512(
    wq: &[i16],
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

/// The AVX2 build's value sums: `vpdpwssd` on 256-bit registers where the CPU has AVX-VNNI, else
/// `vpmaddwd` and an add.
pub(super) fn values_256(
    wq: &[i16],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    check_values(wq, codes, d, vg, isum);
    if is_x86_feature_detected!("avxvnni") {
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
    wq: &[i16],
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
fn check_values(wq: &[i16], codes: &[u8], d: usize, vg: usize, isum: &[i32]) {
    let (h, rows) = (d / 2, isum.len() / d);
    let n = codes.len() / h;
    assert!(h.is_multiple_of(32) && vg.is_multiple_of(32) && d.is_multiple_of(vg));
    assert!(codes.len() == n * h && isum.len() == rows * d);
    assert!(wq.len() >= rows * (n + n % 2) * (d / vg) + WEIGHT_PAD);
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
        let bias = [0, 1, 2, 3].map(|r| _mm512_set1_ps(k.bias[row(r)]));
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
        [0, 1, 2, 3].map(|r| _mm512_add_epi32(lo[r], hi[r]))
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

/// [`values_pairs`] with `vpmaddwd` and `vpaddd`.
///
/// # Safety
/// The CPU must support AVX2; the shapes passed [`check_values`].
#[target_feature(enable = "avx2")]
unsafe fn values_avx2(
    wq: &[i16],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    // SAFETY: as this function's.
    unsafe { values_pairs::<false>(wq, codes, d, vg, ahead, isum) }
}

/// [`values_pairs`] with `vpdpwssd` on 256-bit registers (AVX-VNNI: the multiply and the add in
/// one instruction, the same exact i32 sums).
///
/// # Safety
/// The CPU must support AVX2 and AVX-VNNI; the shapes passed [`check_values`].
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn values_avx_vnni(
    wq: &[i16],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    // SAFETY: as this function's.
    unsafe { values_pairs::<true>(wq, codes, d, vg, ahead, isum) }
}

/// `acc + Σ pairs c · w` per 32-bit lane: `vpdpwssd` (AVX-VNNI) or `vpmaddwd` + `vpaddd`; exact
/// either way (no pair reaches the one `vpmaddwd` overflow, −32768 · −32768 twice).
///
/// # Safety
/// The CPU must support AVX2, and AVX-VNNI when `VNNI`.
#[inline(always)]
unsafe fn madd_acc<const VNNI: bool>(acc: __m256i, c: __m256i, w: __m256i) -> __m256i {
    // SAFETY: the caller guarantees the features.
    unsafe {
        if VNNI {
            _mm256_dpwssd_avx_epi32(acc, c, w)
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(c, w))
        }
    }
}

/// [`ValueCodes`](super::fused_int4_values::ValueCodes) on 256-bit registers, from 16-byte block
/// every token's codes: per block (one value group), half block (8 bytes) and
/// token pair, the two tokens' bytes interleaved and zero-extended so each 32-bit lane holds one
/// channel's two codes, times the group's broadcast weight pair; eight accumulators for four rows.
///
/// # Safety
/// The CPU must support AVX2 (and AVX-VNNI when `VNNI`); the shapes passed [`check_values`].
#[inline(always)]
unsafe fn values_pairs<const VNNI: bool>(
    wq: &[i16],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    let (h, groups, rows) = (d / 2, d / vg, isum.len() / d);
    let n = codes.len() / h;
    let np = n + n % 2;
    let per_row = groups * np;
    let m15 = _mm256_set1_epi16(15);
    let per = lines_per_part(ahead, n.div_ceil(2));
    for r0 in (0..rows).step_by(4) {
        let rb = (rows - r0).min(4);
        // Row r's weights as i32 pairs (tokens 2p, 2p + 1 of group g at g · np / 2 + p).
        let wr: [*const i32; 4] =
            [0, 1, 2, 3].map(|r| wq[(r0 + r.min(rb - 1)) * per_row..].as_ptr().cast::<i32>());
        for blk in 0..h / 16 {
            let g = 32 * blk / vg * np / 2;
            for half in 0..2 {
                let cp = codes.as_ptr().wrapping_add(16 * blk + 8 * half);
                let mut a = [[_mm256_setzero_si256(); 2]; 4];
                for p in 0..n.div_ceil(2) {
                    if r0 == 0 && blk == 0 && half == 0 {
                        prefetch_lines(ahead, p * per, per);
                    }
                    // SAFETY: token 2p (and 2p + 1 when it exists) has 16 · blk + 16 <= h bytes
                    // of codes; pair p's weights lie inside each row's `per_row` (checked).
                    unsafe {
                        let x = _mm_loadl_epi64(cp.add(2 * p * h).cast());
                        let y = if 2 * p + 1 < n {
                            _mm_loadl_epi64(cp.add((2 * p + 1) * h).cast())
                        } else {
                            _mm_setzero_si128()
                        };
                        let w = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(x, y));
                        let c = [_mm256_and_si256(w, m15), _mm256_srli_epi16::<4>(w)];
                        for (ar, &wp) in a.iter_mut().zip(&wr) {
                            let wv = _mm256_set1_epi32(wp.add(g + p).read_unaligned());
                            ar[0] = madd_acc::<VNNI>(ar[0], c[0], wv);
                            ar[1] = madd_acc::<VNNI>(ar[1], c[1], wv);
                        }
                    }
                }
                // Lane i of `an` holds byte b + i (b = 16 · blk + 8 · half), eight consecutive
                // places in the value lane order.
                let b = 16 * blk + 8 * half;
                for (r, ar) in a.iter().enumerate().take(rb) {
                    for (nib, an) in ar.iter().enumerate() {
                        let at = vpos(d, 2 * b + nib);
                        let dst = &mut isum[(r0 + r) * d + at..][..8];
                        // SAFETY: eight i32 inside the row (checked by the slice above).
                        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), *an) };
                    }
                }
            }
        }
    }
}

/// [`ValueCodes`](super::fused_int4_values::ValueCodes) with `vpdpwssd`: per pair of 16-byte
/// blocks (32 bytes of each token's codes, read once per pass) and token pair, the two tokens'
/// bytes interleaved and zero-extended so each of a block's 16 lanes holds one channel pair's codes
/// of both tokens; each block's group weight pair (one value group per block, as `vg` is a multiple
/// of 32) is broadcast into the multiply-add. Sixteen accumulators for four rows. Equal to
/// [`values_avx2`] (the same exact i32 sums, `vpdpwssd` does not saturate). Built with AVX-512 VL
/// as well: without it the 256-bit temporaries of the byte interleave may only live in registers
/// 0–15, which the sixteen accumulators need, and LLVM kept four of them on the stack, a store and
/// a reload per token pair (Zen 4: the kernel's share of a profile 0.76–0.87× with VL).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI; the shapes passed [`check_values`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn values_vnni(
    wq: &[i16],
    codes: &[u8],
    d: usize,
    vg: usize,
    ahead: &[u8],
    isum: &mut [i32],
) {
    let (h, groups, rows) = (d / 2, d / vg, isum.len() / d);
    let n = codes.len() / h;
    let np = n + n % 2;
    let per_row = groups * np;
    let m15 = _mm512_set1_epi16(15);
    let per = lines_per_part(ahead, n / 2);
    for r0 in (0..rows).step_by(4) {
        let rb = (rows - r0).min(4);
        // Row r's weights as i32 pairs (tokens 2p, 2p + 1 of group g at g · np / 2 + p).
        let wr: [*const i32; 4] =
            [0, 1, 2, 3].map(|r| wq[(r0 + r.min(rb - 1)) * per_row..].as_ptr().cast::<i32>());
        for bp in 0..h / 32 {
            let g = [2 * bp, 2 * bp + 1].map(|blk| 32 * blk / vg * np / 2);
            let cp = codes.as_ptr().wrapping_add(32 * bp);
            // a[r][2 · block + nibble]
            let mut a = [[_mm512_setzero_si512(); 4]; 4];
            for p in 0..n / 2 {
                if r0 == 0 && bp == 0 {
                    prefetch_lines(ahead, p * per, per);
                }
                // SAFETY: tokens 2p and 2p + 1 < n have 32 · bp + 32 <= h bytes of codes each;
                // pair p's weights lie inside each row's `per_row` (checked).
                unsafe {
                    let x = _mm256_loadu_si256(cp.add(2 * p * h).cast());
                    let y = _mm256_loadu_si256(cp.add((2 * p + 1) * h).cast());
                    pair_blocks(&mut a, x, y, &wr, g, p, m15);
                }
            }
            if n % 2 == 1 {
                let p = n / 2;
                // SAFETY: token 2p = n - 1 has 32 · bp + 32 <= h bytes of codes; its pair's
                // weights (the missing token's weighted 0) lie inside `per_row` (checked).
                unsafe {
                    let x = _mm256_loadu_si256(cp.add(2 * p * h).cast());
                    pair_blocks(&mut a, x, _mm256_setzero_si256(), &wr, g, p, m15);
                }
            }
            // In block k's registers lane l holds byte 32 · bp + 16k + l: sixteen consecutive
            // places in the value lane order.
            for (r, ar) in a.iter().enumerate().take(rb) {
                for (i, an) in ar.iter().enumerate() {
                    let at = vpos(d, 2 * (32 * bp + 16 * (i / 2)) + i % 2);
                    let dst = &mut isum[(r0 + r) * d + at..][..16];
                    // SAFETY: sixteen i32 inside the row (checked by the slice above).
                    unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), *an) };
                }
            }
        }
    }
}

/// One token pair of [`values_vnni`]: the 32 code bytes `x` and `y` of tokens `2p` and `2p + 1`
/// interleaved and zero-extended (block 0 = the low 16 bytes of both, block 1 the high), nibbles
/// split, times each row's broadcast weight pair of the block's group, into `a[r]`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI; every `wr[r]` must have readable i32 pairs at
/// `g[0] + p` and `g[1] + p`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn pair_blocks(
    a: &mut [[__m512i; 4]; 4],
    x: __m256i,
    y: __m256i,
    wr: &[*const i32; 4],
    g: [usize; 2],
    p: usize,
    m15: __m512i,
) {
    let (lo, hi) = (_mm256_unpacklo_epi8(x, y), _mm256_unpackhi_epi8(x, y));
    let w = [
        _mm512_cvtepu8_epi16(_mm256_permute2x128_si256::<0x20>(lo, hi)),
        _mm512_cvtepu8_epi16(_mm256_permute2x128_si256::<0x31>(lo, hi)),
    ];
    let c = [
        _mm512_and_si512(w[0], m15),
        _mm512_srli_epi16::<4>(w[0]),
        _mm512_and_si512(w[1], m15),
        _mm512_srli_epi16::<4>(w[1]),
    ];
    for (ar, &wp) in a.iter_mut().zip(wr) {
        // SAFETY: the caller guarantees both weight pairs are readable.
        let (w0, w1) = unsafe {
            (
                _mm512_set1_epi32(wp.add(g[0] + p).read_unaligned()),
                _mm512_set1_epi32(wp.add(g[1] + p).read_unaligned()),
            )
        };
        ar[0] = _mm512_dpwssd_epi32(ar[0], c[0], w0);
        ar[1] = _mm512_dpwssd_epi32(ar[1], c[1], w0);
        ar[2] = _mm512_dpwssd_epi32(ar[2], c[2], w1);
        ar[3] = _mm512_dpwssd_epi32(ar[3], c[3], w1);
    }
}
