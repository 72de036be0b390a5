//! LM-head GEMVs `out[r] = Σ_c w[r, c] · x[c]` (row-major `[rows, k]` weights, f32 activations,
//! f32 accumulation) in three precisions: f16 (half the bytes of f32), f32, and int8 with one
//! scale per row ([`I8Rows`], a quarter). Decode reads the head once per token, so these are
//! bandwidth kernels: rows in parallel (rayon), AVX-512F (or AVX2 + F16C + FMA for f16) inner
//! loops chosen at run time. Each must match its in-order scalar spec ([`gemv_f16_scalar`],
//! [`gemv_i8_scalar`], the naive sum) up to summation order (tests bound the difference).

use half::f16;
use rayon::prelude::*;

use crate::KernelError;

/// The specification: one row at a time, in order, f32 accumulation.
pub fn gemv_f16_scalar(w: &[f16], x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check(w, x, out)?;
    let k = x.len();
    for (r, o) in out.iter_mut().enumerate() {
        *o = w[r * k..][..k]
            .iter()
            .zip(x)
            .map(|(a, b)| a.to_f32() * b)
            .sum();
    }
    Ok(())
}

fn check(w: &[f16], x: &[f32], out: &[f32]) -> Result<(), KernelError> {
    if x.is_empty() {
        return Err(KernelError::BadLength {
            what: "x",
            expected: 1,
            got: 0,
        });
    }
    if w.len() != out.len() * x.len() {
        return Err(KernelError::BadLength {
            what: "w",
            expected: out.len() * x.len(),
            got: w.len(),
        });
    }
    Ok(())
}

type RowDot = fn(&[f16], &[f32]) -> f32;

fn dot_portable(w: &[f16], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut buf = [0f32; 16];
    let (wc, wr) = w.split_at(w.len() / 16 * 16);
    let (xc, xr) = x.split_at(wc.len());
    for (a, b) in wc.chunks_exact(16).zip(xc.chunks_exact(16)) {
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(a, &mut buf);
        for i in 0..16 {
            acc[i] += buf[i] * b[i];
        }
    }
    let tail: f32 = wr.iter().zip(xr).map(|(a, b)| a.to_f32() * b).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    unsafe fn dot_avx512_impl(w: &[f16], x: &[f32]) -> f32 {
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

    pub fn dot_avx512(w: &[f16], x: &[f32]) -> f32 {
        // SAFETY: selected only when avx512f was detected at run time (see `pick`).
        unsafe { dot_avx512_impl(w, x) }
    }

    #[target_feature(enable = "avx2,f16c,fma")]
    unsafe fn dot_avx2_impl(w: &[f16], x: &[f32]) -> f32 {
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

    pub fn dot_f32_avx512(w: &[f32], x: &[f32]) -> f32 {
        // SAFETY: selected only when avx512f was detected at run time (see `pick_f32`).
        unsafe { dot_f32_avx512_impl(w, x) }
    }

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

    pub fn dot_i8_avx512(w: &[i8], x: &[f32]) -> f32 {
        // SAFETY: selected only when avx512f was detected at run time (see `pick_i8`).
        unsafe { dot_i8_avx512_impl(w, x) }
    }

    pub fn dot_avx2(w: &[f16], x: &[f32]) -> f32 {
        // SAFETY: selected only when avx2, f16c and fma were detected at run time (see `pick`).
        unsafe { dot_avx2_impl(w, x) }
    }
}

fn pick() -> (RowDot, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return (x86::dot_avx512, "avx512f");
        }
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("fma")
        {
            return (x86::dot_avx2, "avx2+f16c");
        }
    }
    (dot_portable, "portable")
}

fn dot_f32_portable(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (wc, wr) = w.split_at(w.len() / 16 * 16);
    let (xc, xr) = x.split_at(wc.len());
    for (a, b) in wc.chunks_exact(16).zip(xc.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += a[i] * b[i];
        }
    }
    acc.iter().sum::<f32>() + wr.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>()
}

fn dot_i8_portable(w: &[i8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (wc, wr) = w.split_at(w.len() / 16 * 16);
    let (xc, xr) = x.split_at(wc.len());
    for (a, b) in wc.chunks_exact(16).zip(xc.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += a[i] as f32 * b[i];
        }
    }
    acc.iter().sum::<f32>() + wr.iter().zip(xr).map(|(a, b)| *a as f32 * b).sum::<f32>()
}

fn pick_f32() -> fn(&[f32], &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        return x86::dot_f32_avx512;
    }
    dot_f32_portable
}

fn pick_i8() -> fn(&[i8], &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        return x86::dot_i8_avx512;
    }
    dot_i8_portable
}

fn check_t<T>(w: &[T], x: &[f32], out: &[f32]) -> Result<(), KernelError> {
    if x.is_empty() {
        return Err(KernelError::BadLength {
            what: "x",
            expected: 1,
            got: 0,
        });
    }
    if w.len() != out.len() * x.len() {
        return Err(KernelError::BadLength {
            what: "w",
            expected: out.len() * x.len(),
            got: w.len(),
        });
    }
    Ok(())
}

fn rows_par<T: Sync>(dot: fn(&[T], &[f32]) -> f32, w: &[T], x: &[f32], out: &mut [f32]) {
    const ROWS: usize = 64;
    let k = x.len();
    out.par_chunks_mut(ROWS).enumerate().for_each(|(c, o)| {
        for (j, y) in o.iter_mut().enumerate() {
            *y = dot(&w[(c * ROWS + j) * k..][..k], x);
        }
    });
}

/// f32 head GEMV `out[r] = Σ_c w[r, c] · x[c]`, rows in parallel (AVX-512F when available).
pub fn gemv_f32(w: &[f32], x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check_t(w, x, out)?;
    rows_par(pick_f32(), w, x, out);
    Ok(())
}

/// A head quantised to int8 per row: `w[r, c] ≈ scale[r] · q[r, c]`, `scale = absmax / 127`.
#[derive(Debug, Clone, PartialEq)]
pub struct I8Rows {
    /// Codes, row-major `[rows, k]`.
    pub q: Vec<i8>,
    /// One scale per row.
    pub scale: Vec<f32>,
    /// Row length.
    pub k: usize,
}

impl I8Rows {
    /// Quantises row-major f32 rows of length `k` (round to nearest).
    pub fn quantize(w: &[f32], k: usize) -> Result<Self, KernelError> {
        if k == 0 || !w.len().is_multiple_of(k) {
            return Err(KernelError::BadLength {
                what: "w",
                expected: k.max(1) * (w.len() / k.max(1)),
                got: w.len(),
            });
        }
        let mut q = vec![0i8; w.len()];
        let scale: Vec<f32> = w
            .par_chunks(k)
            .zip(q.par_chunks_mut(k))
            .map(|(row, qr)| {
                let m = row.iter().fold(0f32, |a, v| a.max(v.abs()));
                let s = if m > 0.0 { m / 127.0 } else { 1.0 };
                for (o, v) in qr.iter_mut().zip(row) {
                    *o = (v / s).round().clamp(-127.0, 127.0) as i8;
                }
                s
            })
            .collect();
        Ok(Self { q, scale, k })
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.scale.len()
    }

    /// Bytes read per GEMV (codes + scales).
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * self.scale.len()
    }
}

/// The specification of [`gemv_i8`]: `out[r] = scale[r] · Σ_c q[r, c] · x[c]`, in order.
pub fn gemv_i8_scalar(w: &I8Rows, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check_i8(w, x, out)?;
    for (r, o) in out.iter_mut().enumerate() {
        let s: f32 = w.q[r * w.k..][..w.k]
            .iter()
            .zip(x)
            .map(|(a, b)| *a as f32 * b)
            .sum();
        *o = s * w.scale[r];
    }
    Ok(())
}

fn check_i8(w: &I8Rows, x: &[f32], out: &[f32]) -> Result<(), KernelError> {
    if x.len() != w.k {
        return Err(KernelError::BadLength {
            what: "x",
            expected: w.k,
            got: x.len(),
        });
    }
    if out.len() != w.rows() {
        return Err(KernelError::BadLength {
            what: "out",
            expected: w.rows(),
            got: out.len(),
        });
    }
    check_t(&w.q, x, out)
}

/// Int8 head GEMV ([`gemv_i8_scalar`] up to summation order), rows in parallel.
pub fn gemv_i8(w: &I8Rows, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check_i8(w, x, out)?;
    rows_par(pick_i8(), &w.q, x, out);
    out.iter_mut().zip(&w.scale).for_each(|(o, s)| *o *= s);
    Ok(())
}

/// The inner loop [`gemv_f16`] uses on this machine.
pub fn gemv_f16_isa() -> &'static str {
    pick().1
}

/// [`gemv_f16_scalar`] with the fastest inner loop, rows in parallel.
pub fn gemv_f16(w: &[f16], x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check(w, x, out)?;
    gemv_f16_rows(pick().0, w, x, out);
    Ok(())
}

/// [`gemv_f16`] with the portable inner loop (for tests).
pub fn gemv_f16_portable(w: &[f16], x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check(w, x, out)?;
    gemv_f16_rows(dot_portable, w, x, out);
    Ok(())
}

fn gemv_f16_rows(dot: RowDot, w: &[f16], x: &[f32], out: &mut [f32]) {
    const ROWS: usize = 64;
    let k = x.len();
    out.par_chunks_mut(ROWS).enumerate().for_each(|(c, o)| {
        for (j, y) in o.iter_mut().enumerate() {
            *y = dot(&w[(c * ROWS + j) * k..][..k], x);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: &[f32], b: &[f32], w: &[f16], x: &[f32]) {
        let k = x.len();
        for (r, (p, q)) in a.iter().zip(b).enumerate() {
            // Bound from the magnitudes summed: reordering changes the sum by at most ~k·ε·Σ|w x|.
            let mag: f32 = w[r * k..][..k]
                .iter()
                .zip(x)
                .map(|(u, v)| (u.to_f32() * v).abs())
                .sum();
            assert!(
                (p - q).abs() <= 1e-5 * mag * (k as f32).sqrt() + 1e-6,
                "row {r}: {p} vs {q}"
            );
        }
    }

    proptest! {
        #[test]
        fn simd_and_portable_match_scalar(
            rows in 1usize..80,
            k in 1usize..300,
            seed in 0u64..1000,
        ) {
            let w: Vec<f16> = (0..rows * k)
                .map(|i| f16::from_f32((((i as u64 * 2654435761 + seed) % 2001) as f32 - 1000.0) / 500.0))
                .collect();
            let x: Vec<f32> = (0..k)
                .map(|i| (((i as u64 * 40503 + seed * 7) % 997) as f32 - 498.0) / 250.0)
                .collect();
            let mut want = vec![0f32; rows];
            gemv_f16_scalar(&w, &x, &mut want).unwrap();
            let mut got = vec![0f32; rows];
            gemv_f16(&w, &x, &mut got).unwrap();
            close(&got, &want, &w, &x);
            gemv_f16_portable(&w, &x, &mut got).unwrap();
            close(&got, &want, &w, &x);
        }
    }

    proptest! {
        #[test]
        fn f32_and_i8_gemv_match_their_specs(
            rows in 1usize..80,
            k in 1usize..300,
            seed in 0u64..1000,
        ) {
            let w: Vec<f32> = (0..rows * k)
                .map(|i| (((i as u64 * 2654435761 + seed) % 2001) as f32 - 1000.0) / 500.0)
                .collect();
            let x: Vec<f32> = (0..k)
                .map(|i| (((i as u64 * 40503 + seed * 7) % 997) as f32 - 498.0) / 250.0)
                .collect();
            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let mut got = vec![0f32; rows];
            gemv_f32(&w, &x, &mut got).unwrap();
            let naive: Vec<f32> = (0..rows)
                .map(|r| (0..k).map(|c| w[r * k + c] * x[c]).sum())
                .collect();
            close(&got, &naive, &wh, &x);
            let q = I8Rows::quantize(&w, k).unwrap();
            let mut want = vec![0f32; rows];
            gemv_i8_scalar(&q, &x, &mut want).unwrap();
            gemv_i8(&q, &x, &mut got).unwrap();
            close(&got, &want, &wh, &x);
            // Quantisation error: each code is within half a step of the weight.
            for r in 0..rows {
                for c in 0..k {
                    let back = q.q[r * k + c] as f32 * q.scale[r];
                    prop_assert!((back - w[r * k + c]).abs() <= 0.5001 * q.scale[r]);
                }
            }
        }
    }

    #[test]
    fn bad_lengths_are_named() {
        let w = vec![f16::ONE; 10];
        let mut out = vec![0f32; 3];
        let e = gemv_f16(&w, &[1.0; 4], &mut out).unwrap_err();
        assert!(e.to_string().contains("`w`"), "{e}");
        assert!(gemv_f16(&w, &[], &mut out).is_err());
    }

    #[test]
    fn exact_on_small_integers() {
        // Small integers are exact in f16 and f32: every order gives the same sum.
        let (rows, k) = (5, 37);
        let w: Vec<f16> = (0..rows * k)
            .map(|i| f16::from_f32((i % 7) as f32 - 3.0))
            .collect();
        let x: Vec<f32> = (0..k).map(|i| (i % 5) as f32 - 2.0).collect();
        let mut got = vec![0f32; rows];
        gemv_f16(&w, &x, &mut got).unwrap();
        for (r, g) in got.iter().enumerate() {
            let want: f32 = (0..k).map(|c| w[r * k + c].to_f32() * x[c]).sum();
            assert_eq!(*g, want);
        }
    }
}
