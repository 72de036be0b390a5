//! LM-head GEMVs `out[r] = Σ_c w[r, c] · x[c]` (row-major `[rows, k]` weights, f32 activations,
//! f32 accumulation) in three precisions: f16 (half the bytes of f32), f32, and int8 with one
//! scale per row ([`I8Rows`], a quarter). Decode reads the head once per token, so these are
//! bandwidth kernels: rows in parallel (rayon), with an inner loop per row chosen once per
//! process: the SIMD loops of the architecture back end (`x86/head.rs`: AVX-512F, or AVX2 with
//! FMA, and F16C for f16) where the CPU has them, else the portable loops here. Each must
//! match its in-order scalar spec ([`gemv_f16_scalar`], [`gemv_i8_scalar`], the naive sum) up
//! to summation order (tests bound the difference).

use std::sync::OnceLock;

use half::f16;
use rayon::prelude::*;

use crate::{arch, HugeBuf, KernelError};

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

/// [`gemv_f16_scalar`] with the fastest inner loop, rows in parallel.
pub fn gemv_f16(w: &[f16], x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check(w, x, out)?;
    rows_par(dots().f16, w, x, out);
    Ok(())
}

/// [`gemv_f16`] with the portable inner loop (for tests).
pub fn gemv_f16_portable(w: &[f16], x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check(w, x, out)?;
    rows_par(dot_f16_portable, w, x, out);
    Ok(())
}

/// The inner loop [`gemv_f16`] uses on this machine.
pub fn gemv_f16_isa() -> &'static str {
    dots().f16_name
}

/// f32 head GEMV `out[r] = Σ_c w[r, c] · x[c]`, rows in parallel (AVX-512F or AVX2 + FMA when available).
pub fn gemv_f32(w: &[f32], x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check(w, x, out)?;
    rows_par(dots().f32, w, x, out);
    Ok(())
}

/// A head quantised to int8 per row: `w[r, c] ≈ scale[r] · q[r, c]`, `scale = absmax / 127`.
#[derive(Debug, Clone, PartialEq)]
pub struct I8Rows {
    /// Codes, row-major `[rows, k]` (on huge pages when large: `crate::huge`).
    pub q: HugeBuf<i8>,
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
        let mut q = HugeBuf::filled(0i8, w.len())?;
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

/// Int8 head GEMV ([`gemv_i8_scalar`] up to summation order), rows in parallel.
pub fn gemv_i8(w: &I8Rows, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check_i8(w, x, out)?;
    rows_par(dots().i8, &w.q, x, out);
    out.iter_mut().zip(&w.scale).for_each(|(o, s)| *o *= s);
    Ok(())
}

/// One row's dot product `Σ_c w[c] · x[c]` (f32 accumulation).
pub(crate) type RowDot<T> = fn(&[T], &[f32]) -> f32;

/// The inner loops the head GEMVs use on this CPU.
struct Dots {
    f16: RowDot<f16>,
    /// Name of the f16 loop ([`gemv_f16_isa`]).
    f16_name: &'static str,
    f32: RowDot<f32>,
    i8: RowDot<i8>,
}

/// The inner loops, chosen on the first call (CPU features are detected once, as for
/// [`crate::best_isa`], within its cap `TRITTER_KERNELS`): the back end's SIMD loop where it has
/// one, else the portable one.
fn dots() -> &'static Dots {
    static DOTS: OnceLock<Dots> = OnceLock::new();
    DOTS.get_or_init(|| {
        let cap = crate::matmul::isa_ceiling();
        let (f16, f16_name) = arch::pick_head_f16(cap).unwrap_or((dot_f16_portable, "portable"));
        Dots {
            f16,
            f16_name,
            f32: arch::pick_head_f32(cap).unwrap_or(dot_f32_portable),
            i8: arch::pick_head_i8(cap).unwrap_or(dot_i8_portable),
        }
    })
}

/// Portable f16 row dot: 16 f32 lanes, then the tail in order.
fn dot_f16_portable(w: &[f16], x: &[f32]) -> f32 {
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

/// Portable f32 row dot: 16 lanes, then the tail in order.
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

/// Portable int8 row dot: 16 lanes, then the tail in order.
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

/// Fails unless `x` is non-empty and `w` holds `out.len()` rows of `x.len()`.
fn check<T>(w: &[T], x: &[f32], out: &[f32]) -> Result<(), KernelError> {
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

/// [`check`] for an [`I8Rows`] head, naming `x` and `out` against its shape first.
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
    check(&w.q, x, out)
}

/// `out[r] = dot(w[r], x)`, rows in parallel in chunks of 64.
fn rows_par<T: Sync>(dot: RowDot<T>, w: &[T], x: &[f32], out: &mut [f32]) {
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
