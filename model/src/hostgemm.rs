//! f32 matrix products on the CPU with the kernel family chosen per call site.
//!
//! `gemm` (the crate candle's CPU matmul calls) picks one kernel family per process: with its
//! `x86-v4` feature (Tritter's `gemm-avx512`), the AVX-512 microkernels on every CPU that has
//! AVX-512 F. On a Zen 4 EPYC those made the training step's products faster (candle's matmul)
//! but the vision tower's and EnCodec's products slower (docs/TRAINING.md). So the direct
//! callers go through [`gemm_f32_avx2`]: gemm's own AVX2 + FMA microkernels through its generic
//! driver (`gemm_common::gemm::gemm_basic_generic`, the function gemm's dispatch calls for that
//! family), so they run the same kernels whatever the feature says. Without the feature (the
//! default) that is exactly what `gemm::gemm` runs on an AVX2 CPU.

use gemm::Parallelism;

/// `dst ← alpha·dst (when read_dst) + beta·lhs·rhs`, `m × n` from `m × k` and `k × n`, every
/// matrix given by a pointer and its column and row strides (as `gemm::gemm`, without the
/// conjugation flags, which are for complex types), on gemm's AVX2 + FMA kernels where the CPU
/// has them, else on `gemm::gemm`'s own choice.
///
/// # Safety
/// As `gemm::gemm`: every element `(r, c)` at `r·rs + c·cs` for `r` below the rows and `c` below
/// the columns must be inside its allocation, strides non-negative; `dst` must be writable and
/// overlap neither operand.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32_avx2(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut f32, isize, isize),
    read_dst: bool,
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    alpha: f32,
    beta: f32,
    par: Parallelism,
) {
    let (dst, dst_cs, dst_rs) = dst;
    let (lhs, lhs_cs, lhs_rs) = lhs;
    let (rhs, rhs_cs, rhs_rs) = rhs;
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(simd) = gemm_common::simd::V3::try_new() {
            // gemm's kernels prefer a column-major destination: a row-major one is computed as
            // its transpose, `dstᵀ = rhsᵀ · lhsᵀ`, as `gemm::gemm` does before it dispatches.
            let (m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs) =
                if dst_cs.abs() < dst_rs.abs() {
                    (
                        n, m, dst_rs, dst_cs, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs,
                    )
                } else {
                    (
                        m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
                    )
                };
            use gemm_f32::microkernel::fma::f32 as fma;
            // SAFETY: the caller's contract is gemm's; `simd` proves AVX2 + FMA are present,
            // which the `fma` microkernels need.
            unsafe {
                gemm_common::gemm::gemm_basic_generic::<
                    _,
                    f32,
                    8,
                    { fma::MR_DIV_N * 8 },
                    { fma::NR },
                    { fma::MR_DIV_N },
                    { fma::H_M },
                    { fma::H_N },
                >(
                    simd,
                    m,
                    n,
                    k,
                    dst,
                    dst_cs,
                    dst_rs,
                    read_dst,
                    lhs,
                    lhs_cs,
                    lhs_rs,
                    rhs,
                    rhs_cs,
                    rhs_rs,
                    alpha,
                    beta,
                    false,
                    false,
                    false,
                    |a, b, c| a * b + c,
                    &fma::UKR,
                    &fma::H_UKR,
                    false,
                    par,
                );
            }
            return;
        }
    }
    // SAFETY: the caller's contract is gemm's.
    unsafe {
        gemm::gemm(
            m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
            alpha, beta, false, false, false, par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive triple loop in f64: the specification both families are checked against.
    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                    .sum();
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Row-major and column-major destinations, with and without accumulation, odd shapes that
    /// leave partial microkernel tiles, against the f64 triple loop.
    #[test]
    fn matches_the_naive_product() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 9),
            (64, 48, 130),
            (129, 7, 300),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let want = naive(m, n, k, &a, &b);
            {
                for row_major in [true, false] {
                    for accumulate in [false, true] {
                        let mut dst = vec![0.5f32; m * n];
                        let (cs, rs) = if row_major {
                            (1, n as isize)
                        } else {
                            (m as isize, 1)
                        };
                        // SAFETY: every matrix is dense in its own vector.
                        unsafe {
                            gemm_f32_avx2(
                                m,
                                n,
                                k,
                                (dst.as_mut_ptr(), cs, rs),
                                accumulate,
                                (a.as_ptr(), 1, k as isize),
                                (b.as_ptr(), 1, n as isize),
                                1.0,
                                2.0,
                                Parallelism::None,
                            );
                        }
                        for i in 0..m {
                            for j in 0..n {
                                let got = dst[(i as isize * rs + j as isize * cs) as usize];
                                let base = if accumulate { 0.5 } else { 0.0 };
                                let w = base + 2.0 * want[i * n + j];
                                let tol = 1e-5 * (k as f64).sqrt() * 4.0;
                                assert!(
                                    (f64::from(got) - w).abs() <= tol,
                                    "{m}×{n}×{k} row_major={row_major} \
                                     acc={accumulate} ({i},{j}): {got} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
