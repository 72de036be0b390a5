//! x86-64 builds of the fused decode kernels of [`super::fused`]: the same bodies run on
//! [`V16`] implementations in AVX-512F registers ([`Z`]) or pairs of AVX2 registers ([`Y`]),
//! each operation computing every lane exactly as the generic [`Lanes`](super::fused::Lanes)
//! with fused multiply-adds does (f16 → f32 is exact, i32 → f32 rounds to nearest even as `as`
//! does; the reduction adds lanes in the same order), so every build equals the generic one bit
//! for bit. The integer kernels they call are in `fused_x86_int4`.

use std::arch::x86_64::*;

use half::f16;

use super::fused::{self, FusedKernels, Int4Scratch, V16};
use super::fused_x86_int4::{dot_256, dot_512, values_256, values_512};
use super::kv::Int4Tile;

/// Sixteen lanes in one AVX-512 register. Only used inside the `avx512f` build below.
#[derive(Clone, Copy)]
struct Z(__m512);

/// Sixteen lanes in two AVX2 registers (lanes 0..8, 8..16). Only used inside the AVX2 build.
#[derive(Clone, Copy)]
struct Y(__m256, __m256);

/// Sums eight lanes as (l, l+4), (l, l+2), (l, l+1).
#[inline(always)]
fn reduce8(v: __m256) -> f32 {
    // SAFETY: only reached from the builds below, which run after AVX2 was detected.
    unsafe {
        let a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let b = _mm_add_ps(a, _mm_movehl_ps(a, a));
        let c = _mm_add_ss(b, _mm_shuffle_ps(b, b, 1));
        _mm_cvtss_f32(c)
    }
}

// SAFETY (every `unsafe` block of the two impls): the impls are only instantiated inside the
// `#[target_feature]` functions of `fused_build!`, which `detect`/`available` hand out only
// after detecting those features; every pointer read or written covers 16 elements, and each
// method asserts the slice is that long.
impl V16 for Z {
    #[inline(always)]
    fn zero() -> Self {
        // SAFETY: see the impl comment.
        Z(unsafe { _mm512_setzero_ps() })
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: see the impl comment.
        Z(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        assert!(src.len() >= 16);
        // SAFETY: see the impl comment.
        Z(unsafe { _mm512_loadu_ps(src.as_ptr()) })
    }
    #[inline(always)]
    fn load_f16(src: &[f16]) -> Self {
        assert!(src.len() >= 16);
        // SAFETY: see the impl comment.
        Z(unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(src.as_ptr().cast())) })
    }
    #[inline(always)]
    fn load_i32(src: &[i32]) -> Self {
        assert!(src.len() >= 16);
        // SAFETY: see the impl comment.
        Z(unsafe { _mm512_cvtepi32_ps(_mm512_loadu_si512(src.as_ptr().cast())) })
    }
    #[inline(always)]
    fn madd(self, b: Self, c: Self) -> Self {
        // SAFETY: see the impl comment.
        Z(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        assert!(dst.len() >= 16);
        // SAFETY: see the impl comment.
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn max_abs(self, x: Self) -> Self {
        // `vmaxps a, b` is `a > b ? a : b` per lane (b when either is NaN), as in `Lanes`.
        // SAFETY: see the impl comment.
        Z(unsafe { _mm512_max_ps(_mm512_abs_ps(x.0), self.0) })
    }
    #[inline(always)]
    fn reduce(self) -> f32 {
        // SAFETY: see the impl comment.
        unsafe {
            let lo = _mm512_castps512_ps256(self.0);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(self.0), 1));
            reduce8(_mm256_add_ps(lo, hi)) + 0.0
        }
    }
    #[inline(always)]
    fn reduce4(v: [Self; 4]) -> [f32; 4] {
        // Lane l of every vector meets lane l + 8, then l + 4, l + 2, l + 1, as in `reduce`,
        // with the four vectors' 128-bit quarters shuffled side by side.
        // SAFETY: see the impl comment.
        unsafe {
            let [a, b, c, d] = v.map(|x| x.0);
            let ab = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
            );
            let cd = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(c, d),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(c, d),
            );
            // Quarter k now holds vector k's four lanes after the + 8 step, then + 4.
            let w = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd),
            );
            let x = _mm512_add_ps(w, _mm512_permute_ps::<0b11_10_11_10>(w));
            let y = _mm512_add_ps(x, _mm512_permute_ps::<0b01_01_01_01>(x));
            let y = _mm512_add_ps(y, _mm512_setzero_ps());
            let lanes = std::mem::transmute::<__m512, [f32; 16]>(y);
            [lanes[0], lanes[4], lanes[8], lanes[12]]
        }
    }
}

impl V16 for Y {
    #[inline(always)]
    fn zero() -> Self {
        // SAFETY: see the impl comment of `Z`.
        unsafe { Y(_mm256_setzero_ps(), _mm256_setzero_ps()) }
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: see the impl comment of `Z`.
        unsafe { Y(_mm256_set1_ps(x), _mm256_set1_ps(x)) }
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        assert!(src.len() >= 16);
        // SAFETY: see the impl comment of `Z`.
        unsafe {
            Y(
                _mm256_loadu_ps(src.as_ptr()),
                _mm256_loadu_ps(src.as_ptr().add(8)),
            )
        }
    }
    #[inline(always)]
    fn load_f16(src: &[f16]) -> Self {
        assert!(src.len() >= 16);
        // SAFETY: see the impl comment of `Z`.
        unsafe {
            Y(
                _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().add(8).cast())),
            )
        }
    }
    #[inline(always)]
    fn load_i32(src: &[i32]) -> Self {
        assert!(src.len() >= 16);
        // SAFETY: see the impl comment of `Z`.
        unsafe {
            Y(
                _mm256_cvtepi32_ps(_mm256_loadu_si256(src.as_ptr().cast())),
                _mm256_cvtepi32_ps(_mm256_loadu_si256(src.as_ptr().add(8).cast())),
            )
        }
    }
    #[inline(always)]
    fn madd(self, b: Self, c: Self) -> Self {
        // SAFETY: see the impl comment of `Z`.
        unsafe {
            Y(
                _mm256_fmadd_ps(self.0, b.0, c.0),
                _mm256_fmadd_ps(self.1, b.1, c.1),
            )
        }
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        assert!(dst.len() >= 16);
        // SAFETY: see the impl comment of `Z`.
        unsafe {
            _mm256_storeu_ps(dst.as_mut_ptr(), self.0);
            _mm256_storeu_ps(dst.as_mut_ptr().add(8), self.1);
        }
    }
    #[inline(always)]
    fn max_abs(self, x: Self) -> Self {
        // As `Z::max_abs`; |x| by clearing the sign bit.
        // SAFETY: see the impl comment of `Z`.
        unsafe {
            let sign = _mm256_set1_ps(-0.0);
            Y(
                _mm256_max_ps(_mm256_andnot_ps(sign, x.0), self.0),
                _mm256_max_ps(_mm256_andnot_ps(sign, x.1), self.1),
            )
        }
    }
    #[inline(always)]
    fn reduce(self) -> f32 {
        // SAFETY: see the impl comment of `Z`.
        reduce8(unsafe { _mm256_add_ps(self.0, self.1) }) + 0.0
    }
}

macro_rules! fused_build {
    ($v:ty, $feat:literal, $sf:ident, $af:ident, $si:ident, $ai:ident, $sm:ident, $dot:ident, $vals:ident) => {
        /// # Safety
        /// The CPU must support
        #[doc = $feat]
        #[target_feature(enable = $feat)]
        unsafe fn $sm(m: &mut [f32], l: &mut [f32], acc: &mut [f32], s: &mut [f32], c: &mut [f32]) {
            super::tile::online_softmax_rows(m, l, acc, s, c)
        }
        /// # Safety
        /// The CPU must support
        #[doc = $feat]
        #[target_feature(enable = $feat)]
        unsafe fn $sf(q: &[f32], keys: &[f16], d: usize, scale: f32, s: &mut [f32], ahead: &[f16]) {
            fused::scores_f16::<$v>(q, keys, d, scale, s, ahead)
        }
        /// # Safety
        /// The CPU must support
        #[doc = $feat]
        #[target_feature(enable = $feat)]
        unsafe fn $af(p: &[f32], vals: &[f16], d: usize, acc: &mut [f32], ahead: &[f16]) {
            fused::accumulate_f16::<$v>(p, vals, d, acc, ahead)
        }
        /// # Safety
        /// The CPU must support
        #[doc = $feat]
        #[target_feature(enable = $feat)]
        unsafe fn $si(
            q: &[f32],
            t: &Int4Tile<'_>,
            d: usize,
            scale: f32,
            s: &mut [f32],
            scratch: &mut Int4Scratch,
        ) {
            fused::scores_int4::<$v>($dot, q, t, d, scale, s, scratch)
        }
        /// # Safety
        /// The CPU must support
        #[doc = $feat]
        #[target_feature(enable = $feat)]
        unsafe fn $ai(
            p: &[f32],
            t: &Int4Tile<'_>,
            d: usize,
            accp: &mut [f32],
            acc: &mut [f32],
            scratch: &mut Int4Scratch,
        ) {
            fused::accumulate_int4::<$v>($vals, p, t, d, accp, acc, scratch)
        }
    };
}

fused_build!(
    Z,
    "avx512f,avx2,fma,f16c",
    sf_512,
    af_512,
    si_512,
    ai_512,
    sm_512,
    dot_512,
    values_512
);
fused_build!(
    Y,
    "avx2,fma,f16c",
    sf_256,
    af_256,
    si_256,
    ai_256,
    sm_256,
    dot_256,
    values_256
);

/// Safe entry points over one build's functions; only called after detecting its features.
macro_rules! safe_kernels {
    ($sf:ident, $af:ident, $si:ident, $ai:ident, $sm:ident, $name:literal) => {{
        fn sm(m: &mut [f32], l: &mut [f32], acc: &mut [f32], s: &mut [f32], c: &mut [f32]) {
            // SAFETY: handed out by `available` only after its features were detected.
            unsafe { $sm(m, l, acc, s, c) }
        }
        fn sf(q: &[f32], k: &[f16], d: usize, sc: f32, s: &mut [f32], ah: &[f16]) {
            // SAFETY: handed out by `available` only after its features were detected.
            unsafe { $sf(q, k, d, sc, s, ah) }
        }
        fn af(p: &[f32], v: &[f16], d: usize, a: &mut [f32], ah: &[f16]) {
            // SAFETY: as above.
            unsafe { $af(p, v, d, a, ah) }
        }
        fn si(q: &[f32], t: &Int4Tile<'_>, d: usize, sc: f32, s: &mut [f32], b: &mut Int4Scratch) {
            // SAFETY: as above.
            unsafe { $si(q, t, d, sc, s, b) }
        }
        fn ai(
            p: &[f32],
            t: &Int4Tile<'_>,
            d: usize,
            ap: &mut [f32],
            a: &mut [f32],
            b: &mut Int4Scratch,
        ) {
            // SAFETY: as above.
            unsafe { $ai(p, t, d, ap, a, b) }
        }
        FusedKernels {
            scores_f16: sf,
            accumulate_f16: af,
            scores_int4: si,
            accumulate_int4: ai,
            softmax_rows: sm,
            name: $name,
        }
    }};
}

/// The best build this CPU supports, or `None` for the generic one.
pub(crate) fn detect() -> Option<FusedKernels> {
    available().into_iter().next()
}

/// Every build this CPU supports, best first (tests check each against the generic one).
pub(crate) fn available() -> Vec<FusedKernels> {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    let mut v = Vec::new();
    if avx2 && is_x86_feature_detected!("avx512f") {
        v.push(safe_kernels!(
            sf_512, af_512, si_512, ai_512, sm_512, "avx512"
        ));
    }
    if avx2 {
        v.push(safe_kernels!(
            sf_256, af_256, si_256, ai_256, sm_256, "avx2"
        ));
    }
    v
}
