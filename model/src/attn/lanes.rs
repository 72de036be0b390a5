//! Sixteen f32 lanes ([`V16`]) and their specification ([`Lanes`], plain arrays): the vector
//! type the fused decode kernels (`fused`, `fused_int4`) are written over. Every implementation
//! (`fused_x86`'s AVX-512 and AVX2 ones) must compute each lane exactly as [`Lanes`] does.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::tile::madd;

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

/// Row `r0 + r` of a block of `rb` rows, repeating the last one to fill [`ROWS`].
#[inline(always)]
pub(crate) fn row(r0: usize, r: usize, rb: usize) -> usize {
    r0 + r.min(rb - 1)
}
