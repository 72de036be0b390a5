//! Sixteen f32 lanes ([`V16`]) and their specification ([`Lanes`], plain arrays): the vector
//! type the fused decode kernels (`fused`, `fused_int4`) are written over. Every implementation
//! (`fused_x86`'s AVX-512 and AVX2 ones) must compute each lane exactly as [`Lanes`] does.
//! Also the scalar rounding to i8 / u8 of the INT4 kernels ([`round_q8`], [`round_u8`]), which
//! [`V16::store_q8`] and [`V16::store_u8`] must equal.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::tile::{madd, max16};

/// Rows of queries sharing one decoded key or value.
pub(crate) const ROWS: usize = 4;
/// Lanes of the spec (one AVX-512 register).
pub(crate) const L: usize = 16;

/// Sixteen f32 lanes and the operations the kernels need; every implementation computes each
/// lane exactly as [`Lanes`] does (the x86 ones in registers).
pub(crate) trait V16: Copy {
    /// All lanes 0.
    fn zero() -> Self;
    /// Every lane `x`.
    fn splat(x: f32) -> Self;
    /// `src[..16]`.
    fn load(src: &[f32]) -> Self;
    /// `src[..16]` converted from f16 (exact).
    fn load_f16(src: &[f16]) -> Self;
    /// `src[..16]` converted from i32 (rounded to nearest, ties to even, as `as f32`).
    fn load_i32(src: &[i32]) -> Self;
    /// `self · b + c` per lane (fused where the build fuses).
    fn madd(self, b: Self, c: Self) -> Self;
    /// Stores the lanes into `dst[..16]`.
    fn store(self, dst: &mut [f32]);
    /// Per lane `if |x| > self { |x| } else { self }` (a NaN in `x` leaves the lane as it was).
    fn max_abs(self, x: Self) -> Self;
    /// `self · b` per lane (rounded, never fused).
    fn mul(self, b: Self) -> Self;
    /// Per lane `if self == 0 { 0 } else { self · b }` (a zero weight stays zero whatever `b`).
    fn mul_nz(self, b: Self) -> Self;
    /// `self + b` per lane.
    fn add(self, b: Self) -> Self;
    /// The largest lane by halving, as `tile::max16` (lane `l` against `l + 8`, `+ 4`, `+ 2`,
    /// `+ 1`, each step `if upper > lower { upper } else { lower }`).
    fn hmax(self) -> f32;
    /// Each lane rounded as [`round_q8`]`(x, inv)`, into `dst[..16]`.
    fn store_q8(self, inv: f32, dst: &mut [i8]);
    /// Each lane rounded as [`round_u8`]`(x, inv)`, into `dst[..16]`.
    fn store_u8(self, inv: f32, dst: &mut [u8]);
    /// [`V16::store_u8`] of four vectors into `dst[..64]` (the AVX-512 build narrows them
    /// together, with saturating packs).
    #[inline(always)]
    fn store_u8x4(v: [Self; 4], inv: f32, dst: &mut [u8]) {
        for (x, o) in v.iter().zip(dst[..4 * L].chunks_exact_mut(L)) {
            x.store_u8(inv, o);
        }
    }
    /// The halving reduction of `tile::dot_generic` (lanes l and l + 8, then + 4, + 2, + 1),
    /// plus its empty tail (`+ 0.0`).
    fn reduce(self) -> f32;
    /// [`V16::reduce`] of four vectors (the x86 builds share the shuffles among them).
    #[inline(always)]
    fn reduce4(v: [Self; 4]) -> [f32; 4] {
        [v[0].reduce(), v[1].reduce(), v[2].reduce(), v[3].reduce()]
    }
}

/// The specification: plain arrays, multiply-adds fused when `FMA`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lanes<const FMA: bool>([f32; L]);

impl<const FMA: bool> V16 for Lanes<FMA> {
    #[inline(always)]
    fn zero() -> Self {
        Lanes([0.0; L])
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Lanes([x; L])
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        let mut x = [0.0; L];
        x.copy_from_slice(&src[..L]);
        Lanes(x)
    }
    #[inline(always)]
    fn load_f16(src: &[f16]) -> Self {
        let mut x = [0.0; L];
        src[..L].convert_to_f32_slice(&mut x);
        Lanes(x)
    }
    #[inline(always)]
    fn load_i32(src: &[i32]) -> Self {
        let mut x = [0.0; L];
        for (o, &i) in x.iter_mut().zip(&src[..L]) {
            *o = i as f32;
        }
        Lanes(x)
    }
    #[inline(always)]
    fn madd(mut self, b: Self, c: Self) -> Self {
        for l in 0..L {
            self.0[l] = madd::<FMA>(self.0[l], b.0[l], c.0[l]);
        }
        self
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        dst[..L].copy_from_slice(&self.0);
    }
    #[inline(always)]
    fn max_abs(mut self, x: Self) -> Self {
        for (m, &v) in self.0.iter_mut().zip(&x.0) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
        self
    }
    #[inline(always)]
    fn mul(mut self, b: Self) -> Self {
        for (x, &y) in self.0.iter_mut().zip(&b.0) {
            *x *= y;
        }
        self
    }
    #[inline(always)]
    fn mul_nz(mut self, b: Self) -> Self {
        for (x, &y) in self.0.iter_mut().zip(&b.0) {
            *x = if *x == 0.0 { 0.0 } else { *x * y };
        }
        self
    }
    #[inline(always)]
    fn add(mut self, b: Self) -> Self {
        for (x, &y) in self.0.iter_mut().zip(&b.0) {
            *x += y;
        }
        self
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        max16(self.0)
    }
    #[inline(always)]
    fn store_q8(self, inv: f32, dst: &mut [i8]) {
        for (o, &x) in dst[..L].iter_mut().zip(&self.0) {
            *o = round_q8(x, inv);
        }
    }
    #[inline(always)]
    fn store_u8(self, inv: f32, dst: &mut [u8]) {
        for (o, &x) in dst[..L].iter_mut().zip(&self.0) {
            *o = round_u8(x, inv);
        }
    }
    #[inline(always)]
    fn reduce(self) -> f32 {
        let mut lanes = self.0;
        let mut w = L / 2;
        while w > 0 {
            for l in 0..w {
                lanes[l] += lanes[l + w];
            }
            w /= 2;
        }
        lanes[0] + 0.0
    }
}

/// Largest u8-rounded value weight (`fused_int4_values`).
pub(crate) const QU8: f32 = 255.0;
/// Largest magnitude of an i8-rounded query element.
pub(crate) const Q8: f32 = 127.0;
/// 1.5 · 2^23: adding then subtracting it rounds an f32 below 2^22 to an integer, half to even.
pub(crate) const ROUND: f32 = 12_582_912.0;

/// `x · inv` rounded half to even, clamped to ±`lim` (an integer; NaN → 0): equal to
/// `((x · inv + ROUND) − ROUND).clamp(−lim, lim) as i32`, but the integer comes from the bits of
/// `v + ROUND` (its exponent is 2^23 for |v| ≤ 2^22, so the low bits are `round(v)`) rather than
/// a saturating float-to-int cast, which LLVM leaves scalar; so loops over it vectorise.
/// Clamping before rounding is the same as after: the bounds are integers.
#[inline(always)]
fn round_to(x: f32, inv: f32, lim: f32) -> i32 {
    let v = (x * inv).clamp(-lim, lim);
    let i = (v + ROUND).to_bits() as i32 - ROUND.to_bits() as i32;
    if v.is_nan() {
        0
    } else {
        i
    }
}

/// [`round_to`] ±[`QU8`], negatives to 0, as u8.
#[inline(always)]
pub(crate) fn round_u8(x: f32, inv: f32) -> u8 {
    round_to(x, inv, QU8).max(0) as u8
}

/// [`round_to`] ±[`Q8`], as i8.
#[inline(always)]
pub(crate) fn round_q8(x: f32, inv: f32) -> i8 {
    round_to(x, inv, Q8) as i8
}

/// Row `r0 + r` of a block of `rb` rows, repeating the last one to fill [`ROWS`].
#[inline(always)]
pub(crate) fn row(r0: usize, r: usize, rb: usize) -> usize {
    r0 + r.min(rb - 1)
}
