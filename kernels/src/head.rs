//! f16 GEMV for LM heads: `out[r] = Σ_c w[r, c] · x[c]` with f16 weights (row-major `[rows, k]`)
//! and f32 activations, f32 accumulation. Half the bytes of an f32 head, and decode reads the head
//! once per token, so this is a bandwidth kernel: rows in parallel (rayon), AVX-512F or
//! AVX2 + F16C + FMA inner loops chosen at run time. Must match [`gemv_f16_scalar`] up to
//! summation order (tests bound the difference).

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
