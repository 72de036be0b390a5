//! Per-token int8 activation quantisation, bit-exact to BitNet's reference
//! (transformers `integrations/bitnet.py`, `ActQuant`):
//! `scale = 127 / max(max|x|, 1e-5)`, `q = clamp(round_half_even(x · scale), -128, 127)`,
//! all in f32.

use crate::{best_isa, Isa};

/// The reference statement, scalar. Quantises `x` into `out` (the first
/// `min(x.len(), out.len())` values) and returns `scale` (`x_scale`: `x ≈ q / scale`).
/// Inputs are expected finite; NaN gives unspecified (but memory-safe) codes.
pub fn quantize_row_i8_scalar(x: &[f32], out: &mut [i8]) -> f32 {
    let len = x.len().min(out.len());
    quantize_scalar(&x[..len], &mut out[..len]).0
}

/// Scalar statement returning `(scale, Σ q)`.
fn quantize_scalar(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let absmax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = 127.0f32 / absmax.max(1e-5);
    let mut sum = 0i32;
    for (q, &v) in out.iter_mut().zip(x) {
        *q = (v * scale).round_ties_even().clamp(-128.0, 127.0) as i8;
        sum += i32::from(*q);
    }
    (scale, sum)
}

/// Quantises `x` into `out` with `isa` (which must be available); returns `(scale, Σ q)`.
/// Processes the first `min(x.len(), out.len())` values.
pub(crate) fn quantize_with(isa: Isa, x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let len = x.len().min(out.len());
    let (x, out) = (&x[..len], &mut out[..len]);
    // SAFETY: callers pass only available ISAs (checked in `crate::matmul`); lengths are equal.
    match unsafe { crate::arch::quantize_row(isa, x, out) } {
        Some(r) => r,
        None => quantize_scalar(x, out),
    }
}

/// Quantises one token's activations to int8 (fastest available instruction set; bit-exact to
/// [`quantize_row_i8_scalar`]). Writes the first `min(x.len(), out.len())` values and returns
/// `x_scale`.
pub fn quantize_row_i8(x: &[f32], out: &mut [i8]) -> f32 {
    quantize_with(best_isa(), x, out).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::available_isas;
    use proptest::prelude::*;

    /// Naive statement in f64 where it is exact: the f32 product `x·scale` is formed exactly as
    /// the reference does, rounding ties to even written out by hand.
    fn naive(x: &[f32]) -> (Vec<i8>, f32) {
        let mut absmax = 0f32;
        for v in x {
            if v.abs() > absmax {
                absmax = v.abs();
            }
        }
        let scale = 127.0f32 / if absmax < 1e-5 { 1e-5 } else { absmax };
        let q = x
            .iter()
            .map(|&v| {
                let p = f64::from(v * scale);
                let fl = p.floor();
                let frac = p - fl;
                let r = if frac > 0.5 || (frac == 0.5 && fl % 2.0 != 0.0) {
                    fl + 1.0
                } else {
                    fl
                };
                r.clamp(-128.0, 127.0) as i8
            })
            .collect();
        (q, scale)
    }

    fn check_all_isas(x: &[f32]) {
        let (want, want_scale) = naive(x);
        let mut out = vec![0i8; x.len()];
        assert_eq!(quantize_row_i8_scalar(x, &mut out), want_scale);
        assert_eq!(out, want, "scalar");
        for &isa in available_isas() {
            let mut out = vec![0i8; x.len()];
            let (scale, sum) = quantize_with(isa, x, &mut out);
            assert_eq!(scale, want_scale, "{isa:?}");
            assert_eq!(out, want, "{isa:?}");
            assert_eq!(
                sum,
                want.iter().map(|&q| i32::from(q)).sum::<i32>(),
                "{isa:?}"
            );
        }
    }

    #[test]
    fn ties_round_to_even() {
        // absmax 127 → scale 1.0 exactly; x·scale = ±2.5 → ±2, 3.5 → 4, 0.5 → 0, -1.5 → -2.
        let mut x = vec![127.0, 2.5, -2.5, 3.5, 0.5, -1.5, 1.5, -0.5, 126.5];
        check_all_isas(&x);
        let mut out = vec![0i8; x.len()];
        quantize_row_i8(&x, &mut out);
        assert_eq!(out, vec![127, 2, -2, 4, 0, -2, 2, 0, 126]);
        // Same values past the SIMD widths, so the vector bodies see the ties too.
        x = x.iter().cycle().take(9 * 11).copied().collect();
        check_all_isas(&x);
    }

    #[test]
    fn all_zero_row_uses_the_clamp() {
        for len in [1, 7, 16, 33, 100] {
            let x = vec![0.0f32; len];
            let mut out = vec![5i8; len];
            let scale = quantize_row_i8(&x, &mut out);
            assert_eq!(scale, 127.0f32 / 1e-5);
            assert!(out.iter().all(|&q| q == 0));
            check_all_isas(&x);
        }
    }

    #[test]
    fn tiny_absmax_is_clamped_to_1e_5() {
        // absmax below the 1e-5 clamp: 5e-6 · 127e5 = 63.5 → 64 (a tie), not 127.
        let x = [5e-6f32, -5e-6, 1e-6];
        check_all_isas(&x);
    }

    proptest! {
        #[test]
        fn simd_equals_reference(x in proptest::collection::vec(-1000f32..1000.0, 1..300)) {
            check_all_isas(&x);
        }

        #[test]
        fn integer_grid_has_exact_ties(v in proptest::collection::vec(-254i32..=254, 1..200)) {
            // Halves of integers with absmax fixed at 127 give scale 1: many exact .5 ties.
            let mut x: Vec<f32> = v.iter().map(|&i| i as f32 * 0.5).collect();
            x.push(127.0);
            check_all_isas(&x);
        }
    }
}
