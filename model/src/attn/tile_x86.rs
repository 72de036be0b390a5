//! x86-64 builds of the tile kernels of [`super::tile`] with AVX-512F+FMA or AVX2+FMA
//! intrinsics, chosen at run time by `is_x86_feature_detected!`. They follow the generic spec's
//! order exactly (16 lanes, lane `l` sums elements `l mod 16` with fused multiply-adds, then the
//! halving reduction 8/4/2/1, then the tail), so they equal `scores_generic::<true>` and
//! `accumulate_generic::<true>` bit for bit.

use std::arch::x86_64::*;

use super::tile::Kernels;

/// # Safety
/// The CPU must support AVX-512F; `a` and `b` have the same length.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n16 = a.len() / 16 * 16;
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i < n16 {
        // SAFETY: i + 16 <= n16 <= len of both slices.
        let (x, y) = unsafe {
            (
                _mm512_loadu_ps(a.as_ptr().add(i)),
                _mm512_loadu_ps(b.as_ptr().add(i)),
            )
        };
        acc = _mm512_fmadd_ps(x, y, acc);
        i += 16;
    }
    let mut tail = 0f32;
    for j in n16..a.len() {
        tail = a[j].mul_add(b[j], tail);
    }
    // Halving reduction: (l, l+8), then (l, l+4), (l, l+2), (l, l+1).
    reduce16(acc) + tail
}

/// Sums eight lanes as (l, l+4), (l, l+2), (l, l+1).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn reduce8(v: __m256) -> f32 {
    let a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let b = _mm_add_ps(a, _mm_movehl_ps(a, a));
    let c = _mm_add_ss(b, _mm_shuffle_ps(b, b, 1));
    _mm_cvtss_f32(c)
}

/// # Safety
/// The CPU must support AVX2 and FMA; `a` and `b` have the same length.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n16 = a.len() / 16 * 16;
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i < n16 {
        // SAFETY: i + 16 <= n16 <= len of both slices.
        unsafe {
            acc0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
                acc0,
            );
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                acc1,
            );
        }
        i += 16;
    }
    let mut tail = 0f32;
    for j in n16..a.len() {
        tail = a[j].mul_add(b[j], tail);
    }
    reduce8(_mm256_add_ps(acc0, acc1)) + tail
}

/// # Safety
/// The CPU must support AVX-512F; `acc` and `v` have the same length.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn axpy_avx512(p: f32, v: &[f32], acc: &mut [f32]) {
    let n16 = acc.len() / 16 * 16;
    let pv = _mm512_set1_ps(p);
    let mut i = 0;
    while i < n16 {
        // SAFETY: i + 16 <= n16 <= len of both slices.
        unsafe {
            let a = acc.as_mut_ptr().add(i);
            _mm512_storeu_ps(
                a,
                _mm512_fmadd_ps(pv, _mm512_loadu_ps(v.as_ptr().add(i)), _mm512_loadu_ps(a)),
            );
        }
        i += 16;
    }
    for j in n16..acc.len() {
        acc[j] = p.mul_add(v[j], acc[j]);
    }
}

/// # Safety
/// The CPU must support AVX2 and FMA; `acc` and `v` have the same length.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(p: f32, v: &[f32], acc: &mut [f32]) {
    let n8 = acc.len() / 8 * 8;
    let pv = _mm256_set1_ps(p);
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 <= n8 <= len of both slices.
        unsafe {
            let a = acc.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                a,
                _mm256_fmadd_ps(pv, _mm256_loadu_ps(v.as_ptr().add(i)), _mm256_loadu_ps(a)),
            );
        }
        i += 8;
    }
    for j in n8..acc.len() {
        acc[j] = p.mul_add(v[j], acc[j]);
    }
}

/// Sixteen-lane reduction of [`dot_avx512`]: (l, l+8), then [`reduce8`].
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn reduce16(acc: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(acc);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
    reduce8(_mm256_add_ps(lo, hi))
}

/// Scores of up to four query rows against four keys at a time, a 4 × 4 block of accumulators:
/// each key chunk is loaded once for the four rows and each query chunk once for the four keys
/// (a decode step's rows share every key, so the keys are read once per group of four rows, not
/// once per row); per pair the same lane order as [`dot_avx512`]. Needs `d % 16 == 0`.
///
/// # Safety
/// The CPU must support AVX-512F and FMA; `q` is `[rows][d]`, `keys` `[n][d]`, `s` `[rows][n]`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn scores_blocked_avx512(q: &[f32], keys: &[f32], d: usize, scale: f32, s: &mut [f32]) {
    let (rows, n) = (q.len() / d, keys.len() / d);
    let n4 = n / 4 * 4;
    for r0 in (0..rows).step_by(4) {
        let rb = (rows - r0).min(4);
        // Missing rows repeat the last one; their scores are not stored.
        let row = |r: usize| &q[(r0 + r.min(rb - 1)) * d..][..d];
        let qp = [
            row(0).as_ptr(),
            row(1).as_ptr(),
            row(2).as_ptr(),
            row(3).as_ptr(),
        ];
        let k = keys.as_ptr();
        for j in (0..n4).step_by(4) {
            let mut a = [[_mm512_setzero_ps(); 4]; 4];
            for c in (0..d).step_by(16) {
                // SAFETY: c + 16 <= d and j + 3 < n, so every load stays inside its query row
                // or `keys`.
                unsafe {
                    let kv = [
                        _mm512_loadu_ps(k.add(j * d + c)),
                        _mm512_loadu_ps(k.add((j + 1) * d + c)),
                        _mm512_loadu_ps(k.add((j + 2) * d + c)),
                        _mm512_loadu_ps(k.add((j + 3) * d + c)),
                    ];
                    for (ar, &qr) in a.iter_mut().zip(&qp) {
                        let qv = _mm512_loadu_ps(qr.add(c));
                        for (x, &kx) in ar.iter_mut().zip(&kv) {
                            *x = _mm512_fmadd_ps(qv, kx, *x);
                        }
                    }
                }
            }
            for (r, ar) in a.iter().enumerate().take(rb) {
                for (i, &x) in ar.iter().enumerate() {
                    s[(r0 + r) * n + j + i] = reduce16(x) * scale;
                }
            }
        }
        for r in 0..rb {
            for jj in n4..n {
                // SAFETY: same features as this function; both slices are `d` long.
                let x = unsafe { dot_avx512(row(r), &keys[jj * d..(jj + 1) * d]) };
                s[(r0 + r) * n + jj] = x * scale;
            }
        }
    }
}

/// `acc[r] += Σ_j p[r][j] · v[j]` for up to four rows at a time, 64 columns of each held in four
/// registers across all keys, so each value chunk is loaded once for the four rows (same
/// per-element operation order as the generic spec: a zero probability is skipped). Needs
/// `d % 64 == 0`.
///
/// # Safety
/// The CPU must support AVX-512F and FMA; `acc` is `[rows][d]`, `vals` `[n][d]`, `p` `[rows][n]`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn accumulate_blocked_avx512(p: &[f32], vals: &[f32], d: usize, acc: &mut [f32]) {
    let rows = acc.len() / d;
    for r0 in (0..rows).step_by(4) {
        // SAFETY: same features and shapes as this function.
        unsafe {
            match (rows - r0).min(4) {
                4 => accumulate_rows_avx512::<4>(p, vals, d, acc, r0),
                3 => accumulate_rows_avx512::<3>(p, vals, d, acc, r0),
                2 => accumulate_rows_avx512::<2>(p, vals, d, acc, r0),
                _ => accumulate_rows_avx512::<1>(p, vals, d, acc, r0),
            }
        }
    }
}

/// Rows `r0..r0 + R` of [`accumulate_blocked_avx512`].
///
/// # Safety
/// As [`accumulate_blocked_avx512`], with `r0 + R <= rows`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn accumulate_rows_avx512<const R: usize>(
    p: &[f32],
    vals: &[f32],
    d: usize,
    acc: &mut [f32],
    r0: usize,
) {
    let n = vals.len() / d;
    let pr: [&[f32]; R] = std::array::from_fn(|r| &p[(r0 + r) * n..][..n]);
    for c in (0..d).step_by(64) {
        let rp: [*mut f32; R] = std::array::from_fn(|r| acc[(r0 + r) * d + c..][..64].as_mut_ptr());
        // SAFETY: every `rp` points at 64 floats of its row; every `v` at 64 floats of `vals`
        // (c + 64 <= d, j < n).
        unsafe {
            let mut a = [[_mm512_setzero_ps(); 4]; R];
            for (ar, &ap) in a.iter_mut().zip(&rp) {
                for (b, x) in ar.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(ap.add(16 * b));
                }
            }
            for j in 0..n {
                let v = vals.as_ptr().add(j * d + c);
                let x = [
                    _mm512_loadu_ps(v),
                    _mm512_loadu_ps(v.add(16)),
                    _mm512_loadu_ps(v.add(32)),
                    _mm512_loadu_ps(v.add(48)),
                ];
                for (ar, prr) in a.iter_mut().zip(&pr) {
                    let pj = prr[j];
                    if pj == 0.0 {
                        continue;
                    }
                    let pv = _mm512_set1_ps(pj);
                    for (y, &xb) in ar.iter_mut().zip(&x) {
                        *y = _mm512_fmadd_ps(pv, xb, *y);
                    }
                }
            }
            for (ar, &ap) in a.iter().zip(&rp) {
                for (b, &x) in ar.iter().enumerate() {
                    _mm512_storeu_ps(ap.add(16 * b), x);
                }
            }
        }
    }
}

/// AVX2 form of [`scores_blocked_avx512`]: one key at a time against up to four query rows (two
/// registers of eight lanes per pair, [`dot_avx2`]'s order), so each key chunk is loaded once for
/// the four rows. Needs `d % 16 == 0`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; shapes as for [`scores_blocked_avx512`].
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_blocked_avx2(q: &[f32], keys: &[f32], d: usize, scale: f32, s: &mut [f32]) {
    let (rows, n) = (q.len() / d, keys.len() / d);
    for r0 in (0..rows).step_by(4) {
        let rb = (rows - r0).min(4);
        // Missing rows repeat the last one; their scores are not stored.
        let row = |r: usize| &q[(r0 + r.min(rb - 1)) * d..][..d];
        let qp = [
            row(0).as_ptr(),
            row(1).as_ptr(),
            row(2).as_ptr(),
            row(3).as_ptr(),
        ];
        for j in 0..n {
            let k = keys[j * d..][..d].as_ptr();
            let mut a = [[_mm256_setzero_ps(); 2]; 4];
            for c in (0..d).step_by(16) {
                // SAFETY: c + 16 <= d: every load stays inside its query row or key.
                unsafe {
                    let (k0, k1) = (_mm256_loadu_ps(k.add(c)), _mm256_loadu_ps(k.add(c + 8)));
                    for (ar, &qr) in a.iter_mut().zip(&qp) {
                        ar[0] = _mm256_fmadd_ps(_mm256_loadu_ps(qr.add(c)), k0, ar[0]);
                        ar[1] = _mm256_fmadd_ps(_mm256_loadu_ps(qr.add(c + 8)), k1, ar[1]);
                    }
                }
            }
            for (r, ar) in a.iter().enumerate().take(rb) {
                // The empty tail of `dot_avx2` adds 0.
                s[(r0 + r) * n + j] = (reduce8(_mm256_add_ps(ar[0], ar[1])) + 0.0) * scale;
            }
        }
    }
}

/// AVX2 form of [`accumulate_blocked_avx512`]: 16 columns of up to four rows in eight registers
/// per pass. Needs `d % 16 == 0`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; shapes as for [`accumulate_blocked_avx512`].
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_blocked_avx2(p: &[f32], vals: &[f32], d: usize, acc: &mut [f32]) {
    let rows = acc.len() / d;
    for r0 in (0..rows).step_by(4) {
        // SAFETY: same features and shapes as this function.
        unsafe {
            match (rows - r0).min(4) {
                4 => accumulate_rows_avx2::<4>(p, vals, d, acc, r0),
                3 => accumulate_rows_avx2::<3>(p, vals, d, acc, r0),
                2 => accumulate_rows_avx2::<2>(p, vals, d, acc, r0),
                _ => accumulate_rows_avx2::<1>(p, vals, d, acc, r0),
            }
        }
    }
}

/// Rows `r0..r0 + R` of [`accumulate_blocked_avx2`].
///
/// # Safety
/// As [`accumulate_blocked_avx2`], with `r0 + R <= rows`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_rows_avx2<const R: usize>(
    p: &[f32],
    vals: &[f32],
    d: usize,
    acc: &mut [f32],
    r0: usize,
) {
    let n = vals.len() / d;
    let pr: [&[f32]; R] = std::array::from_fn(|r| &p[(r0 + r) * n..][..n]);
    for c in (0..d).step_by(16) {
        let rp: [*mut f32; R] = std::array::from_fn(|r| acc[(r0 + r) * d + c..][..16].as_mut_ptr());
        // SAFETY: every `rp` points at 16 floats of its row; every `v` at 16 floats of `vals`
        // (c + 16 <= d, j < n).
        unsafe {
            let mut a = [[_mm256_setzero_ps(); 2]; R];
            for (ar, &ap) in a.iter_mut().zip(&rp) {
                ar[0] = _mm256_loadu_ps(ap);
                ar[1] = _mm256_loadu_ps(ap.add(8));
            }
            for j in 0..n {
                let v = vals.as_ptr().add(j * d + c);
                let (x0, x1) = (_mm256_loadu_ps(v), _mm256_loadu_ps(v.add(8)));
                for (ar, prr) in a.iter_mut().zip(&pr) {
                    let pj = prr[j];
                    if pj == 0.0 {
                        continue;
                    }
                    let pv = _mm256_set1_ps(pj);
                    ar[0] = _mm256_fmadd_ps(pv, x0, ar[0]);
                    ar[1] = _mm256_fmadd_ps(pv, x1, ar[1]);
                }
            }
            for (ar, &ap) in a.iter().zip(&rp) {
                _mm256_storeu_ps(ap, ar[0]);
                _mm256_storeu_ps(ap.add(8), ar[1]);
            }
        }
    }
}

macro_rules! tile_fns {
    ($scores:ident, $accumulate:ident, $scores_impl:ident, $accumulate_impl:ident,
     $dot:ident, $axpy:ident, $blocked:ident, $block:literal, $scores_blocked:expr, $feat:literal) => {
        /// # Safety
        /// The CPU must support the features of
        #[doc = $feat]
        #[target_feature(enable = $feat)]
        unsafe fn $scores_impl(q: &[f32], keys: &[f32], d: usize, scale: f32, s: &mut [f32]) {
            if let Some(blocked) = $scores_blocked {
                if d.is_multiple_of(16) {
                    // SAFETY: same features as this function; d is a multiple of 16.
                    return unsafe { blocked(q, keys, d, scale, s) };
                }
            }
            let n = keys.len() / d;
            for (j, k) in keys.chunks_exact(d).enumerate() {
                for (r, qr) in q.chunks_exact(d).enumerate() {
                    // SAFETY: same features as this function; both slices are `d` long.
                    s[r * n + j] = unsafe { $dot(qr, k) } * scale;
                }
            }
        }

        /// # Safety
        /// The CPU must support the features of
        #[doc = $feat]
        #[target_feature(enable = $feat)]
        unsafe fn $accumulate_impl(p: &[f32], vals: &[f32], d: usize, acc: &mut [f32]) {
            if d.is_multiple_of($block) {
                // SAFETY: same features as this function; d is a multiple of the block.
                return unsafe { $blocked(p, vals, d, acc) };
            }
            let n = vals.len() / d;
            for (j, v) in vals.chunks_exact(d).enumerate() {
                for (r, a) in acc.chunks_exact_mut(d).enumerate() {
                    let pj = p[r * n + j];
                    if pj != 0.0 {
                        // SAFETY: same features as this function; `a` and `v` are `d` long.
                        unsafe { $axpy(pj, v, a) };
                    }
                }
            }
        }

        /// Safe entry point; only handed out by [`detect`] after the features were detected.
        fn $scores(q: &[f32], keys: &[f32], d: usize, scale: f32, s: &mut [f32]) {
            // SAFETY: `detect` returns this function only after detecting the features.
            unsafe { $scores_impl(q, keys, d, scale, s) }
        }

        /// Safe entry point; only handed out by [`detect`] after the features were detected.
        fn $accumulate(p: &[f32], vals: &[f32], d: usize, acc: &mut [f32]) {
            // SAFETY: `detect` returns this function only after detecting the features.
            unsafe { $accumulate_impl(p, vals, d, acc) }
        }
    };
}

tile_fns!(
    scores_avx512,
    accumulate_avx512,
    scores_avx512_impl,
    accumulate_avx512_impl,
    dot_avx512,
    axpy_avx512,
    accumulate_blocked_avx512,
    64,
    Some(scores_blocked_avx512 as unsafe fn(&[f32], &[f32], usize, f32, &mut [f32])),
    "avx512f,avx2,fma"
);
tile_fns!(
    scores_avx2,
    accumulate_avx2,
    scores_avx2_impl,
    accumulate_avx2_impl,
    dot_avx2,
    axpy_avx2,
    accumulate_blocked_avx2,
    16,
    Some(scores_blocked_avx2 as unsafe fn(&[f32], &[f32], usize, f32, &mut [f32])),
    "avx2,fma"
);

/// Every kernel set this CPU supports, best first (tests check each against the generic spec).
pub(crate) fn available() -> Vec<Kernels> {
    let fma = is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx2");
    let mut v = Vec::new();
    if fma && is_x86_feature_detected!("avx512f") {
        v.push(Kernels {
            scores: scores_avx512,
            accumulate: accumulate_avx512,
            name: "avx512",
        });
    }
    if fma {
        v.push(Kernels {
            scores: scores_avx2,
            accumulate: accumulate_avx2,
            name: "avx2",
        });
    }
    v
}
