//! x86-64 inner loops of the LM-head GEMVs (`crate::head`): the row dot product
//! `Σ_c w[c] · x[c]` with f32 activations and f32 accumulation, over f16 weights (AVX-512F, or
//! AVX2 + F16C + FMA), f32 and int8 weights (AVX-512F). Each must equal the portable loop and
//! the in-order scalar spec of `crate::head` up to summation order (property tests there).
//!
//! The `pick_head_*` functions are the only way out of this module: they hand a loop out only
//! after checking its CPU features, and `crate::head` calls them once per process.

use half::f16;
use std::arch::x86_64::*;

use crate::head::RowDot;

/// The f16 row dot for this CPU and its name, or `None` when only the portable loop runs here.
pub(crate) fn pick_head_f16() -> Option<(RowDot<f16>, &'static str)> {
    if is_x86_feature_detected!("avx512f") {
        return Some((dot_f16_avx512, "avx512f"));
    }
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("fma")
    {
        return Some((dot_f16_avx2, "avx2+f16c"));
    }
    None
}

/// The f32 row dot for this CPU, or `None` when only the portable loop runs here.
pub(crate) fn pick_head_f32() -> Option<RowDot<f32>> {
    if is_x86_feature_detected!("avx512f") {
        return Some(dot_f32_avx512);
    }
    None
}

/// The int8 row dot for this CPU, or `None` when only the portable loop runs here.
pub(crate) fn pick_head_i8() -> Option<RowDot<i8>> {
    if is_x86_feature_detected!("avx512f") {
        return Some(dot_i8_avx512);
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
    unsafe { dot_f16_avx512_impl(w, x) }
}

fn dot_f16_avx2(w: &[f16], x: &[f32]) -> f32 {
    let (w, x) = same_len(w, x);
    // SAFETY: handed out only by `pick_head_f16` after avx2, f16c and fma were detected; equal
    // lengths.
    unsafe { dot_f16_avx2_impl(w, x) }
}

fn dot_f32_avx512(w: &[f32], x: &[f32]) -> f32 {
    let (w, x) = same_len(w, x);
    // SAFETY: handed out only by `pick_head_f32` after avx512f was detected; equal lengths.
    unsafe { dot_f32_avx512_impl(w, x) }
}

fn dot_i8_avx512(w: &[i8], x: &[f32]) -> f32 {
    let (w, x) = same_len(w, x);
    // SAFETY: handed out only by `pick_head_i8` after avx512f was detected; equal lengths.
    unsafe { dot_i8_avx512_impl(w, x) }
}

/// # Safety
/// CPU has AVX-512F; `w.len() == x.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn dot_f16_avx512_impl(w: &[f16], x: &[f32]) -> f32 {
    let n = w.len() / 32 * 32;
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let wp = w.as_ptr() as *const u16;
    let xp = x.as_ptr();
    let mut i = 0;
    while i < n {
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

/// # Safety
/// CPU has AVX2, F16C and FMA; `w.len() == x.len()`.
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn dot_f16_avx2_impl(w: &[f16], x: &[f32]) -> f32 {
    let n = w.len() / 16 * 16;
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let wp = w.as_ptr() as *const u16;
    let xp = x.as_ptr();
    let mut i = 0;
    while i < n {
        // SAFETY: i + 16 <= n <= w.len() == x.len(); unaligned loads; f16 is a u16 bit pattern.
        unsafe {
            let h0 = _mm_loadu_si128(wp.add(i) as *const __m128i);
            let h1 = _mm_loadu_si128(wp.add(i + 8) as *const __m128i);
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(h0), _mm256_loadu_ps(xp.add(i)), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(h1), _mm256_loadu_ps(xp.add(i + 8)), a1);
        }
        i += 16;
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a0, a1)) };
    let mut s: f32 = lanes.iter().sum();
    for j in n..w.len() {
        s += w[j].to_f32() * x[j];
    }
    s
}

/// # Safety
/// CPU has AVX-512F; `w.len() == x.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn dot_f32_avx512_impl(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len() / 32 * 32;
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut i = 0;
    while i < n {
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
unsafe fn dot_i8_avx512_impl(w: &[i8], x: &[f32]) -> f32 {
    let n = w.len() / 32 * 32;
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut i = 0;
    while i < n {
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
