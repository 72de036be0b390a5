//! x86-64 integer kernels of the INT4 decode path: the key dot products
//! ([`DotCodes`](super::fused_int4::DotCodes), `fused_int4`) and the value sums
//! ([`ValueCodes`](super::fused_int4_values::ValueCodes), `fused_int4_values`): the dots with
//! `vpdpwssd` (AVX-512 F/BW/VNNI) or `vpmaddwd` (AVX2), the value sums likewise (`vpdpwssd` over a
//! whole 16-byte block per register, or `vpmaddwd` over half blocks). Integer sums are exact in any order, so
//! each equals its portable version exactly (tests compare the whole kernels bit for bit).

use std::arch::x86_64::*;

use super::fused_int4_values::{vpos, WEIGHT_PAD};

/// The AVX-512 build's integer dot: `vpdpwssd` where the CPU has AVX-512 VNNI (and BW), else
/// the AVX2 one.
pub(super) fn dot_512(qi: &[i16], codes: &[u8], d: usize, out: &mut [i32]) {
    if is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni") {
        // SAFETY: the features were just detected.
        unsafe { dot_vnni(qi, codes, d, out) }
    } else {
        dot_256(qi, codes, d, out)
    }
}

/// The AVX2 build's integer dot.
pub(super) fn dot_256(qi: &[i16], codes: &[u8], d: usize, out: &mut [i32]) {
    // SAFETY: only handed to the builds, which run after AVX2 was detected.
    unsafe { dot_avx2(qi, codes, d, out) }
}

/// The AVX-512 build's value sums: `vpdpwssd` over whole 16-byte blocks where the CPU has
/// AVX-512 VNNI (and BW, VL), else the AVX2 ones.
pub(super) fn values_512(wq: &[i16], codes: &[u8], d: usize, vg: usize, isum: &mut [i32]) {
    check_values(wq, codes, d, vg, isum);
    if is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
    {
        // SAFETY: the features were just detected; shapes checked.
        unsafe { values_vnni(wq, codes, d, vg, isum) }
    } else {
        // SAFETY: the AVX-512 build runs only after AVX2 was detected; shapes checked.
        unsafe { values_avx2(wq, codes, d, vg, 0, isum) }
    }
}

/// The AVX2 build's value sums (`vpmaddwd`).
pub(super) fn values_256(wq: &[i16], codes: &[u8], d: usize, vg: usize, isum: &mut [i32]) {
    check_values(wq, codes, d, vg, isum);
    // SAFETY: only handed to the builds, which run after AVX2 was detected; shapes checked.
    unsafe { values_avx2(wq, codes, d, vg, 0, isum) }
}

/// The shapes the value kernels rely on (`ValueCodes`' contract).
fn check_values(wq: &[i16], codes: &[u8], d: usize, vg: usize, isum: &[i32]) {
    let (h, rows) = (d / 2, isum.len() / d);
    let n = codes.len() / h;
    assert!(h.is_multiple_of(32) && vg.is_multiple_of(32) && d.is_multiple_of(vg));
    assert!(codes.len() == n * h && isum.len() == rows * d);
    assert!(wq.len() >= rows * (n + n % 2) * (d / vg) + WEIGHT_PAD);
}

/// `[Σ a0, Σ a1, Σ a2, Σ a3]` of four vectors of 16 i32 lanes (shuffles shared among them).
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce4_512(a: [__m512i; 4]) -> __m128i {
    // 256-bit halves added: a0's 8 partials then a1's; a2's then a3's.
    let u01 = _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0x44>(a[0], a[1]),
        _mm512_shuffle_i32x4::<0xEE>(a[0], a[1]),
    );
    let u23 = _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0x44>(a[2], a[3]),
        _mm512_shuffle_i32x4::<0xEE>(a[2], a[3]),
    );
    // 128-bit block r holds row r's four partials.
    let v = _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0x88>(u01, u23),
        _mm512_shuffle_i32x4::<0xDD>(u01, u23),
    );
    let w = _mm512_add_epi32(v, _mm512_shuffle_epi32::<0x4E>(v));
    let x = _mm512_add_epi32(w, _mm512_shuffle_epi32::<0xB1>(w));
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castsi512_si128(_mm512_permutexvar_epi32(idx, x))
}

/// Bytes of key codes [`dot_vnni`] asks the CPU to fetch ahead of the four keys it is on: a
/// tile's codes are one stream, but a short one (64 keys) that the hardware prefetcher has barely
/// picked up before it ends.
const DOT_AHEAD: usize = 1024;

/// Asks the CPU to fetch the 64-byte lines of `len` bytes from `p` (a hint: no effect on results).
#[inline(always)]
fn prefetch_lines(p: *const u8, len: usize) {
    for off in (0..len).step_by(64) {
        // SAFETY: a prefetch never faults, whatever the address (past a slice's end included);
        // the pointer is only formed with wrapping arithmetic.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast()) };
    }
}

/// [`DotCodes`](super::fused_int4::DotCodes) with `vpdpwssd`: 32 codes per register (zero-extended bytes, low and high
/// nibbles), four query rows × four keys per pass over the codes, so the sixteen sums come out of
/// one shared reduction ([`reduce16_512`]); the last `n % 4` keys one at a time.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn dot_vnni(qi: &[i16], codes: &[u8], d: usize, out: &mut [i32]) {
    let (h, rows) = (d / 2, qi.len() / d);
    let n = codes.len() / h;
    assert!(h.is_multiple_of(32) && qi.len() == rows * d && out.len() >= rows * n);
    for r0 in (0..rows).step_by(4) {
        let rb = (rows - r0).min(4);
        let q: [&[i16]; 4] = [0, 1, 2, 3].map(|r| &qi[(r0 + r.min(rb - 1)) * d..][..d]);
        let quads = n / 4;
        for j4 in 0..quads {
            let kp = codes.as_ptr().wrapping_add(4 * j4 * h);
            prefetch_lines(kp.wrapping_add(DOT_AHEAD), 4 * h);
            // a[k][r]: key 4·j4 + k, row r.
            let mut a = [[_mm512_setzero_si512(); 4]; 4];
            for c in (0..h).step_by(32) {
                for (k, ak) in a.iter_mut().enumerate() {
                    // SAFETY: key 4·j4 + k < n has h bytes of codes from kp + k·h, c + 32 <= h;
                    // the query rows are d = 2h long (asserted shapes).
                    unsafe { key_chunk(ak, kp.add(k * h + c), &q, c, h) };
                }
            }
            let mut sums = [0i32; 16];
            // SAFETY: 64 bytes into a 16-lane i32 array.
            unsafe { _mm512_storeu_si512(sums.as_mut_ptr().cast(), reduce16_512(a)) };
            for (r, run) in sums.chunks_exact(4).enumerate().take(rb) {
                out[(r0 + r) * n + 4 * j4..][..4].copy_from_slice(run);
            }
        }
        for (j, cj) in codes.chunks_exact(h).enumerate().skip(4 * quads) {
            let mut a = [_mm512_setzero_si512(); 4];
            for c in (0..h).step_by(32) {
                // SAFETY: as above, for key j.
                unsafe { key_chunk(&mut a, cj.as_ptr().add(c), &q, c, h) };
            }
            let mut sums = [0i32; 4];
            // SAFETY: 16 bytes into a 16-byte array.
            unsafe { _mm_storeu_si128(sums.as_mut_ptr().cast(), reduce4_512(a)) };
            for (r, &v) in sums.iter().enumerate().take(rb) {
                out[(r0 + r) * n + j] = v;
            }
        }
    }
}

/// Adds 32 codes of one key (`kc`: its bytes `c .. c + 32`, low and high nibbles) times four query
/// rows' matching i16 elements (`c ..` and `h + c ..` of each row) into `acc[r]`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI; `kc` must point at 32 readable bytes and every row of
/// `q` hold at least `h + c + 32` elements with `c + 32 <= h`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn key_chunk(acc: &mut [__m512i; 4], kc: *const u8, q: &[&[i16]; 4], c: usize, h: usize) {
    // SAFETY: the caller guarantees the 32 code bytes and the row lengths.
    unsafe {
        let b = _mm512_cvtepu8_epi16(_mm256_loadu_si256(kc.cast()));
        let (lo, hi) = (
            _mm512_and_si512(b, _mm512_set1_epi16(15)),
            _mm512_srli_epi16::<4>(b),
        );
        for (ar, qr) in acc.iter_mut().zip(q) {
            let ql = _mm512_loadu_si512(qr.as_ptr().add(c).cast());
            let qh = _mm512_loadu_si512(qr.as_ptr().add(h + c).cast());
            *ar = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(*ar, lo, ql), hi, qh);
        }
    }
}

/// The sums of sixteen vectors of 16 i32 lanes, `a[k][r]` → lane `4r + k` (128-bit block `r`
/// holds row `r`'s four keys): 256-bit halves, then 128-bit blocks, then lanes, each step halving
/// the vectors while it adds, so the shuffles are shared among all sixteen.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16_512(a: [[__m512i; 4]; 4]) -> __m512i {
    // Halves: [x0 + x2, x1 + x3, y0 + y2, y1 + y3] in 128-bit blocks.
    let halves = |x: __m512i, y: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0x44>(x, y),
            _mm512_shuffle_i32x4::<0xEE>(x, y),
        )
    };
    // Blocks: p_k's block r = four partial sums of a[k][r].
    let p = a.map(|ak| {
        let (x, y) = (halves(ak[0], ak[1]), halves(ak[2], ak[3]));
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0x88>(x, y),
            _mm512_shuffle_i32x4::<0xDD>(x, y),
        )
    });
    // Lanes, within every block: lane k = Σ of p_k's four lanes there.
    let pair = |x: __m512i, y: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y))
    };
    let (u, v) = (pair(p[0], p[1]), pair(p[2], p[3]));
    _mm512_add_epi32(_mm512_unpacklo_epi64(u, v), _mm512_unpackhi_epi64(u, v))
}

/// [`DotCodes`](super::fused_int4::DotCodes) with `vpmaddwd`: 16 codes per register.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(qi: &[i16], codes: &[u8], d: usize, out: &mut [i32]) {
    let (h, rows) = (d / 2, qi.len() / d);
    let n = codes.len() / h;
    assert!(h.is_multiple_of(16) && qi.len() == rows * d && out.len() >= rows * n);
    let m = _mm256_set1_epi16(15);
    for r0 in (0..rows).step_by(4) {
        let rb = (rows - r0).min(4);
        let q: [&[i16]; 4] = [0, 1, 2, 3].map(|r| &qi[(r0 + r.min(rb - 1)) * d..][..d]);
        for (j, cj) in codes.chunks_exact(h).enumerate() {
            let mut a = [_mm256_setzero_si256(); 4];
            for c in (0..h).step_by(16) {
                // SAFETY: c + 16 <= h bytes of key j's codes; c + 16 <= h and h + c + 16 <= d
                // i16 of each query row (asserted shapes).
                unsafe {
                    let b = _mm256_cvtepu8_epi16(_mm_loadu_si128(cj.as_ptr().add(c).cast()));
                    let (lo, hi) = (_mm256_and_si256(b, m), _mm256_srli_epi16::<4>(b));
                    for (ar, qr) in a.iter_mut().zip(q) {
                        let ql = _mm256_loadu_si256(qr.as_ptr().add(c).cast());
                        let qh = _mm256_loadu_si256(qr.as_ptr().add(h + c).cast());
                        let x =
                            _mm256_add_epi32(_mm256_madd_epi16(lo, ql), _mm256_madd_epi16(hi, qh));
                        *ar = _mm256_add_epi32(*ar, x);
                    }
                }
            }
            let t = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
            let mut sums = [0i32; 4];
            // SAFETY: 16 bytes into a 16-byte array.
            unsafe { _mm_storeu_si128(sums.as_mut_ptr().cast(), s) };
            for (r, &v) in sums.iter().enumerate().take(rb) {
                out[(r0 + r) * n + j] = v;
            }
        }
    }
}

/// [`ValueCodes`](super::fused_int4_values::ValueCodes) with `vpmaddwd`, from 16-byte block
/// `block0` of every token's codes on: per block (one value group), half block (8 bytes) and
/// token pair, the two tokens' bytes interleaved and zero-extended so each 32-bit lane holds one
/// channel's two codes, times the group's broadcast weight pair; eight accumulators for four rows.
///
/// # Safety
/// The CPU must support AVX2; the shapes passed [`check_values`] and `16 · block0 <= d / 2`.
#[target_feature(enable = "avx2")]
unsafe fn values_avx2(
    wq: &[i16],
    codes: &[u8],
    d: usize,
    vg: usize,
    block0: usize,
    isum: &mut [i32],
) {
    let (h, groups, rows) = (d / 2, d / vg, isum.len() / d);
    let n = codes.len() / h;
    let np = n + n % 2;
    let per_row = groups * np;
    let m15 = _mm256_set1_epi16(15);
    for r0 in (0..rows).step_by(4) {
        let rb = (rows - r0).min(4);
        // Row r's weights as i32 pairs (tokens 2p, 2p + 1 of group g at g · np / 2 + p).
        let wr: [*const i32; 4] =
            [0, 1, 2, 3].map(|r| wq[(r0 + r.min(rb - 1)) * per_row..].as_ptr().cast::<i32>());
        for blk in block0..h / 16 {
            let g = 32 * blk / vg * np / 2;
            for half in 0..2 {
                let cp = codes.as_ptr().wrapping_add(16 * blk + 8 * half);
                let mut a = [[_mm256_setzero_si256(); 2]; 4];
                for p in 0..n.div_ceil(2) {
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
                            ar[0] = _mm256_add_epi32(ar[0], _mm256_madd_epi16(c[0], wv));
                            ar[1] = _mm256_add_epi32(ar[1], _mm256_madd_epi16(c[1], wv));
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
unsafe fn values_vnni(wq: &[i16], codes: &[u8], d: usize, vg: usize, isum: &mut [i32]) {
    let (h, groups, rows) = (d / 2, d / vg, isum.len() / d);
    let n = codes.len() / h;
    let np = n + n % 2;
    let per_row = groups * np;
    let m15 = _mm512_set1_epi16(15);
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
