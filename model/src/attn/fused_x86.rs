//! x86-64 builds of the fused decode kernels of [`super::fused`]: the same bodies run on
//! [`V16`] implementations in AVX-512 F/BW registers ([`Z`]) or pairs of AVX2 registers ([`Y`]),
//! each operation computing every lane exactly as the generic [`Lanes`](super::fused::Lanes)
//! with fused multiply-adds does (f16 → f32 is exact, i32 → f32 rounds to nearest even as `as`
//! does; the reduction adds lanes in the same order), so every build equals the generic one bit
//! for bit. The integer kernels they call are in `fused_x86_int4` (keys) and `fused_x86_values`.

use std::arch::x86_64::*;

use half::f16;

use super::fused::{self, FusedKernels, Int4Scratch, V16};
use super::fused_x86_int4::{dot_256, dot_512};
use super::fused_x86_values::{values_256, values_512};
use super::kv::Int4Tile;
use super::lanes::{Q8, QU8, ROUND};

/// Sixteen lanes in one AVX-512 register. Only used inside the AVX-512 F/BW build below.
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

/// Lanes 0..8 and 8..16 of an AVX-512 register.
#[inline(always)]
fn halves(v: __m512) -> (__m256, __m256) {
    // SAFETY: only reached from the AVX-512 build, which runs after AVX-512F was detected.
    unsafe {
        (
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
        )
    }
}

/// The largest of four lanes by halving (lanes l and l + 2, then l + 1; `vmaxps a, b` is
/// `a > b ? a : b`, so `max(upper, lower)` is `max16`'s step exactly, NaN included).
#[inline(always)]
fn hmax4(m4: __m128) -> f32 {
    // SAFETY: only reached from the builds below, which run after AVX2 was detected.
    unsafe {
        let m2 = _mm_max_ps(_mm_movehl_ps(m4, m4), m4);
        _mm_cvtss_f32(_mm_max_ss(_mm_shuffle_ps::<1>(m2, m2), m2))
    }
}

/// `lanes::round_to`'s integers of eight lanes: `x · inv` clamped to ±`lim`, rounded
/// half to even by adding and subtracting 1.5 · 2^23 in the bits, NaN → 0.
#[inline(always)]
fn round8(x: __m256, inv: f32, lim: f32) -> __m256i {
    // SAFETY: only reached from the AVX2 build, which runs after AVX2 was detected.
    unsafe {
        let v = _mm256_mul_ps(x, _mm256_set1_ps(inv));
        let c = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-lim)), _mm256_set1_ps(lim));
        let r = _mm256_set1_ps(ROUND);
        let i = _mm256_sub_epi32(
            _mm256_castps_si256(_mm256_add_ps(c, r)),
            _mm256_castps_si256(r),
        );
        _mm256_and_si256(i, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(v, v)))
    }
}

/// Sixteen i32 (two registers of eight) as i16, in order (exact for values in i16 range).
#[inline(always)]
fn pack16(a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: only reached from the AVX2 build, which runs after AVX2 was detected.
    unsafe { _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b)) }
}

/// `round_to`'s integers of sixteen lanes (see [`round8`]).
#[inline(always)]
fn round16(x: __m512, inv: f32, lim: f32) -> __m512i {
    // SAFETY: only reached from the AVX-512 build, which runs after AVX-512F was detected.
    unsafe {
        let v = _mm512_mul_ps(x, _mm512_set1_ps(inv));
        let c = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-lim)), _mm512_set1_ps(lim));
        let r = _mm512_set1_ps(ROUND);
        let ord = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v);
        _mm512_maskz_sub_epi32(
            ord,
            _mm512_castps_si512(_mm512_add_ps(c, r)),
            _mm512_castps_si512(r),
        )
    }
}

/// `round_u8`'s integers of sixteen lanes before the narrowing: `min(255, x · inv)` (a NaN
/// stays NaN: `vminps` returns its second operand then) converted half to even, so a NaN, `-inf`
/// or anything below -2^31 becomes `i32::MIN`, which the saturating packs of
/// [`V16::store_u8x4`] take to 0, and every other value below 0 packs to 0 too.
#[inline(always)]
fn cvt_u8_bound(x: __m512, inv: f32) -> __m512i {
    // SAFETY: only reached from the AVX-512 build, which runs after AVX-512F was detected.
    unsafe {
        let v = _mm512_min_ps(_mm512_set1_ps(QU8), _mm512_mul_ps(x, _mm512_set1_ps(inv)));
        _mm512_cvtps_epi32(v)
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
    fn mul(self, b: Self) -> Self {
        // SAFETY: see the impl comment.
        Z(unsafe { _mm512_mul_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn mul_nz(self, b: Self) -> Self {
        // SAFETY: see the impl comment.
        unsafe {
            let nz = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(self.0, _mm512_setzero_ps());
            Z(_mm512_maskz_mul_ps(nz, self.0, b.0))
        }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        // SAFETY: see the impl comment.
        Z(unsafe { _mm512_add_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        // SAFETY: see the impl comment.
        unsafe {
            let (lo, hi) = halves(self.0);
            let m8 = _mm256_max_ps(hi, lo);
            hmax4(_mm_max_ps(
                _mm256_extractf128_ps(m8, 1),
                _mm256_castps256_ps128(m8),
            ))
        }
    }
    #[inline(always)]
    fn store_q8(self, inv: f32, dst: &mut [i8]) {
        assert!(dst.len() >= 16);
        // SAFETY: see the impl comment.
        unsafe {
            let i = _mm512_cvtepi32_epi8(round16(self.0, inv, Q8));
            _mm_storeu_si128(dst.as_mut_ptr().cast(), i);
        }
    }
    #[inline(always)]
    fn store_u8(self, inv: f32, dst: &mut [u8]) {
        assert!(dst.len() >= 16);
        // SAFETY: see the impl comment.
        unsafe {
            let i = _mm512_max_epi32(round16(self.0, inv, QU8), _mm512_setzero_si512());
            _mm_storeu_si128(dst.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(i));
        }
    }
    #[inline(always)]
    fn store_u8x4(v: [Self; 4], inv: f32, dst: &mut [u8]) {
        assert!(dst.len() >= 64);
        // SAFETY: see the impl comment.
        unsafe {
            // Element by element, not `map`: its closure runs outside this build's target
            // features when the caller is large, and then every intrinsic is a call.
            let i = [
                cvt_u8_bound(v[0].0, inv),
                cvt_u8_bound(v[1].0, inv),
                cvt_u8_bound(v[2].0, inv),
                cvt_u8_bound(v[3].0, inv),
            ];
            // Saturating packs (i32 → i16 signed, i16 → u8 unsigned) leave 128-bit lane k
            // holding lanes 4k..4k + 4 of each input in turn; the permute puts them in order.
            let b = _mm512_packus_epi16(
                _mm512_packs_epi32(i[0], i[1]),
                _mm512_packs_epi32(i[2], i[3]),
            );
            let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            _mm512_storeu_si512(dst.as_mut_ptr().cast(), _mm512_permutexvar_epi32(order, b));
        }
    }
    #[inline(always)]
    fn reduce(self) -> f32 {
        // SAFETY: see the impl comment.
        unsafe {
            let (lo, hi) = halves(self.0);
            reduce8(_mm256_add_ps(lo, hi)) + 0.0
        }
    }
    #[inline(always)]
    fn reduce4(v: [Self; 4]) -> [f32; 4] {
        // Lane l of every vector meets lane l + 8, then l + 4, l + 2, l + 1, as in `reduce`,
        // with the four vectors' 128-bit quarters shuffled side by side.
        // SAFETY: see the impl comment.
        unsafe {
            let [a, b, c, d] = [v[0].0, v[1].0, v[2].0, v[3].0];
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
    fn mul(self, b: Self) -> Self {
        // SAFETY: see the impl comment of `Z`.
        unsafe { Y(_mm256_mul_ps(self.0, b.0), _mm256_mul_ps(self.1, b.1)) }
    }
    #[inline(always)]
    fn mul_nz(self, b: Self) -> Self {
        // `x · b` where `x != 0` (unordered: a NaN weight stays NaN), else +0.
        // SAFETY: see the impl comment of `Z`.
        unsafe {
            let z = _mm256_setzero_ps();
            let f = |x: __m256, y: __m256| {
                _mm256_and_ps(_mm256_mul_ps(x, y), _mm256_cmp_ps::<_CMP_NEQ_UQ>(x, z))
            };
            Y(f(self.0, b.0), f(self.1, b.1))
        }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        // SAFETY: see the impl comment of `Z`.
        unsafe { Y(_mm256_add_ps(self.0, b.0), _mm256_add_ps(self.1, b.1)) }
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        // SAFETY: see the impl comment of `Z`.
        unsafe {
            let m8 = _mm256_max_ps(self.1, self.0);
            hmax4(_mm_max_ps(
                _mm256_extractf128_ps(m8, 1),
                _mm256_castps256_ps128(m8),
            ))
        }
    }
    #[inline(always)]
    fn store_q8(self, inv: f32, dst: &mut [i8]) {
        assert!(dst.len() >= 16);
        let w = pack16(round8(self.0, inv, Q8), round8(self.1, inv, Q8));
        // SAFETY: see the impl comment of `Z`.
        unsafe {
            let i = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            _mm_storeu_si128(dst.as_mut_ptr().cast(), i);
        }
    }
    #[inline(always)]
    fn store_u8(self, inv: f32, dst: &mut [u8]) {
        assert!(dst.len() >= 16);
        // Sixteen i16 in order; the unsigned narrowing takes negatives to 0 (all are ±255 at most).
        let w = pack16(round8(self.0, inv, QU8), round8(self.1, inv, QU8));
        // SAFETY: see the impl comment of `Z`.
        unsafe {
            let i = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            _mm_storeu_si128(dst.as_mut_ptr().cast(), i);
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
    "avx512f,avx512bw,avx2,fma,f16c",
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

/// Every build this CPU supports, best first (tests check each against the generic one).
pub(crate) fn available() -> Vec<FusedKernels> {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    let mut v = Vec::new();
    if avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
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

#[cfg(test)]
#[path = "fused_x86_tests.rs"]
mod tests;
