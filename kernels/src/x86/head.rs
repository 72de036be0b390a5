//! x86-64 inner loops of the LM-head GEMVs (`crate::head`): the row dot product
//! `Σ_c w[c] · x[c]` with f32 activations and f32 accumulation, over f16 weights (AVX-512F, or
//! AVX2 + F16C + FMA), f32 and int8 weights (AVX-512F, or AVX2 + FMA). Each must equal the
//! portable loop and
//! the in-order scalar spec of `crate::head` up to summation order (property tests there).
//!
//! The `pick_head_*` functions are the only way out of this module: they hand a loop out only
//! after checking its CPU features, and `crate::head` calls them once per process.

use half::f16;
use std::arch::x86_64::*;

use crate::head::RowDot;
use crate::tuning::prefetch_bytes;
use crate::Isa;

use super::prefetch_ahead;

/// The f16 row dot for this CPU within `cap` and its name, or `None` when only the portable
/// loop runs here.
pub(crate) fn pick_head_f16(cap: Isa) -> Option<(RowDot<f16>, &'static str)> {
    if cap >= Isa::Avx512 && is_x86_feature_detected!("avx512f") {
        return Some((dot_f16_avx512, "avx512f"));
    }
    if cap >= Isa::Avx2
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("fma")
    {
        return Some((dot_f16_avx2, "avx2+f16c"));
    }
    None
}

/// The f32 row dot for this CPU within `cap`, or `None` when only the portable loop runs here.
pub(crate) fn pick_head_f32(cap: Isa) -> Option<RowDot<f32>> {
    if cap >= Isa::Avx512 && is_x86_feature_detected!("avx512f") {
        return Some(dot_f32_avx512);
    }
    if cap >= Isa::Avx2 && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return Some(dot_f32_avx2);
    }
    None
}

/// The int8 row dot for this CPU within `cap`, or `None` when only the portable loop runs here.
pub(crate) fn pick_head_i8(cap: Isa) -> Option<RowDot<i8>> {
    if cap >= Isa::Avx512 && is_x86_feature_detected!("avx512f") {
        return Some(dot_i8_avx512);
    }
    if cap >= Isa::Avx2 && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return Some(dot_i8_avx2);
    }
    None
}

/// The first `min(w.len(), x.len())` values of each (callers pass equal lengths).
fn same_len<'a, T>(w: &'a [T], x: &'a [f32]) -> (&'a [T], &'a [f32]) {
    let len = w.len().min(x.len());
    (&w[..len], &x[..len])
}

fn dot_f16_avx512(w: &[f16], x: &[f32]) -> f32 {
    let (w, x) = same_len(w, x);
    // SAFETY: handed out only by `pick_head_f16` after avx512f was detected; equal lengths.
    unsafe { dot_f16_avx512_impl(w, x, prefetch_bytes()) }
}

fn dot_f16_avx2(w: &[f16], x: &[f32]) -> f32 {
    let (w, x) = same_len(w, x);
    // SAFETY: handed out only by `pick_head_f16` after avx2, f16c and fma were detected; equal
    // lengths.
    unsafe { dot_f16_avx2_impl(w, x, prefetch_bytes()) }
}

fn dot_f32_avx2(w: &[f32], x: &[f32]) -> f32 {
    let (w, x) = same_len(w, x);
    // SAFETY: handed out only by `pick_head_f32` after avx2 and fma were detected; equal lengths.
    unsafe { dot_f32_avx2_impl(w, x, prefetch_bytes()) }
}

fn dot_i8_avx2(w: &[i8], x: &[f32]) -> f32 {
    let (w, x) = same_len(w, x);
    // SAFETY: handed out only by `pick_head_i8` after avx2 and fma were detected; equal lengths.
    unsafe { dot_i8_avx2_impl(w, x, prefetch_bytes()) }
}

fn dot_f32_avx512(w: &[f32], x: &[f32]) -> f32 {
    let (w, x) = same_len(w, x);
    // SAFETY: handed out only by `pick_head_f32` after avx512f was detected; equal lengths.
    unsafe { dot_f32_avx512_impl(w, x, prefetch_bytes()) }
}

fn dot_i8_avx512(w: &[i8], x: &[f32]) -> f32 {
    let (w, x) = same_len(w, x);
    // SAFETY: handed out only by `pick_head_i8` after avx512f was detected; equal lengths.
    unsafe { dot_i8_avx512_impl(w, x, prefetch_bytes()) }
}

/// # Safety
/// CPU has AVX-512F; `w.len() == x.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn dot_f16_avx512_impl(w: &[f16], x: &[f32], pf: usize) -> f32 {
    let n = w.len() / 32 * 32;
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let wp = w.as_ptr() as *const u16;
    let xp = x.as_ptr();
    let mut i = 0;
    while i < n {
        prefetch_ahead(wp.wrapping_add(i), pf);
        // SAFETY: i + 32 <= n <= w.len() == x.len(); unaligned loads; f16 is a u16 bit pattern.
        unsafe {
            let h0 = _mm256_loadu_si256(wp.add(i) as *const __m256i);
            let h1 = _mm256_loadu_si256(wp.add(i + 16) as *const __m256i);
            a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(h0), _mm512_loadu_ps(xp.add(i)), a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(h1), _mm512_loadu_ps(xp.add(i + 16)), a1);
        }
        i += 32;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for j in n..w.len() {
        s += w[j].to_f32() * x[j];
    }
    s
}

/// Four independent FMA chains of 8 lanes, 32 weights per iteration.
///
/// # Safety
/// CPU has AVX2, F16C and FMA; `w.len() == x.len()`.
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn dot_f16_avx2_impl(w: &[f16], x: &[f32], pf: usize) -> f32 {
    let n = w.len() / 32 * 32;
    let mut a = [_mm256_setzero_ps(); 4];
    let wp = w.as_ptr() as *const u16;
    let xp = x.as_ptr();
    let mut i = 0;
    while i < n {
        prefetch_ahead(wp.wrapping_add(i), pf);
        for (j, aj) in a.iter_mut().enumerate() {
            // SAFETY: i + 32 <= n <= w.len() == x.len(); unaligned loads; f16 is a u16 bit
            // pattern.
            unsafe {
                let at = i + 8 * j;
                let h = _mm_loadu_si128(wp.add(at) as *const __m128i);
                *aj = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(xp.add(at)), *aj);
            }
        }
        i += 32;
    }
    let mut s = sum4_256(a);
    for j in n..w.len() {
        s += w[j].to_f32() * x[j];
    }
    s
}

/// The sum of four 8-lane accumulators' lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn sum4_256(a: [__m256; 4]) -> f32 {
    let v = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
    lanes.iter().sum()
}

/// Four independent FMA chains of 8 lanes, 32 weights per iteration.
///
/// # Safety
/// CPU has AVX2 and FMA; `w.len() == x.len()`.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2_impl(w: &[f32], x: &[f32], pf: usize) -> f32 {
    let n = w.len() / 32 * 32;
    let mut a = [_mm256_setzero_ps(); 4];
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut i = 0;
    while i < n {
        prefetch_ahead(wp.wrapping_add(i), pf);
        prefetch_ahead(wp.wrapping_add(i + 16), pf);
        for (j, aj) in a.iter_mut().enumerate() {
            // SAFETY: i + 32 <= n <= w.len() == x.len(); unaligned loads.
            unsafe {
                let at = i + 8 * j;
                *aj = _mm256_fmadd_ps(
                    _mm256_loadu_ps(wp.add(at)),
                    _mm256_loadu_ps(xp.add(at)),
                    *aj,
                );
            }
        }
        i += 32;
    }
    let mut s = sum4_256(a);
    for j in n..w.len() {
        s += w[j] * x[j];
    }
    s
}

/// Four independent FMA chains of 8 lanes, 32 codes (sign-extended to i32, then f32) per
/// iteration.
///
/// # Safety
/// CPU has AVX2 and FMA; `w.len() == x.len()`.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_i8_avx2_impl(w: &[i8], x: &[f32], pf: usize) -> f32 {
    let n = w.len() / 32 * 32;
    let mut a = [_mm256_setzero_ps(); 4];
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut i = 0;
    while i < n {
        // One line per two iterations (32 codes each); a second hint to the same line is wasted.
        if i % 64 == 0 {
            prefetch_ahead(wp.wrapping_add(i), pf);
        }
        // SAFETY: i + 32 <= n <= w.len() == x.len(); 32-byte unaligned load of i8.
        let b = unsafe { _mm256_loadu_si256(wp.add(i) as *const __m256i) };
        let halves = [_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b)];
        for (j, aj) in a.iter_mut().enumerate() {
            let h = halves[j / 2];
            let q = if j % 2 == 0 {
                h
            } else {
                _mm_srli_si128::<8>(h)
            };
            let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            // SAFETY: i + 8j + 8 <= n <= x.len(); unaligned load.
            *aj = _mm256_fmadd_ps(f, unsafe { _mm256_loadu_ps(xp.add(i + 8 * j)) }, *aj);
        }
        i += 32;
    }
    let mut s = sum4_256(a);
    for j in n..w.len() {
        s += w[j] as f32 * x[j];
    }
    s
}

/// # Safety
/// CPU has AVX-512F; `w.len() == x.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn dot_f32_avx512_impl(w: &[f32], x: &[f32], pf: usize) -> f32 {
    let n = w.len() / 32 * 32;
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut i = 0;
    while i < n {
        prefetch_ahead(wp.wrapping_add(i), pf);
        prefetch_ahead(wp.wrapping_add(i + 16), pf);
        // SAFETY: i + 32 <= n <= w.len() == x.len(); unaligned loads.
        unsafe {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(i)), _mm512_loadu_ps(xp.add(i)), a0);
            a1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(wp.add(i + 16)),
                _mm512_loadu_ps(xp.add(i + 16)),
                a1,
            );
        }
        i += 32;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for j in n..w.len() {
        s += w[j] * x[j];
    }
    s
}

/// # Safety
/// CPU has AVX-512F; `w.len() == x.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn dot_i8_avx512_impl(w: &[i8], x: &[f32], pf: usize) -> f32 {
    let n = w.len() / 32 * 32;
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut i = 0;
    while i < n {
        if i % 64 == 0 {
            prefetch_ahead(wp.wrapping_add(i), pf);
        }
        // SAFETY: i + 32 <= n <= w.len() == x.len(); 16-byte unaligned loads of i8.
        unsafe {
            let b0 = _mm_loadu_si128(wp.add(i) as *const __m128i);
            let b1 = _mm_loadu_si128(wp.add(i + 16) as *const __m128i);
            let f0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b0));
            let f1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b1));
            a0 = _mm512_fmadd_ps(f0, _mm512_loadu_ps(xp.add(i)), a0);
            a1 = _mm512_fmadd_ps(f1, _mm512_loadu_ps(xp.add(i + 16)), a1);
        }
        i += 32;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for j in n..w.len() {
        s += w[j] as f32 * x[j];
    }
    s
}
