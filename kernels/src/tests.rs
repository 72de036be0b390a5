//! Cross-module tests: every instruction set's GEMV/GEMM/BitLinear against a naive statement
//! on the ternary values (independent of the block format), over random and ragged shapes.

use proptest::prelude::*;

use crate::*;

/// Naive `y[t, row] = Σ_k w[row, k] · x[t, k]` on plain ternary values.
fn naive_gemm(w: &[i8], n: usize, k: usize, x: &[i8], m: usize) -> Vec<i32> {
    let mut y = vec![0i32; m * n];
    for t in 0..m {
        for row in 0..n {
            y[t * n + row] = (0..k)
                .map(|c| i32::from(w[row * k + c]) * i32::from(x[t * k + c]))
                .sum();
        }
    }
    y
}

fn case(
    max_n: usize,
    max_k: usize,
    max_m: usize,
) -> impl Strategy<Value = (usize, usize, usize, Vec<i8>, Vec<i8>)> {
    (1..=max_n, 1..=max_k, 1..=max_m).prop_flat_map(|(n, k, m)| {
        (
            Just(n),
            Just(k),
            Just(m),
            proptest::collection::vec(-1i8..=1, n * k),
            proptest::collection::vec(any::<i8>(), m * k),
        )
    })
}

fn check_gemm(n: usize, k: usize, m: usize, w: &[i8], x: &[i8]) {
    let mat = TernaryMatrix::from_ternary(w, n, k).unwrap();
    let want = naive_gemm(w, n, k, x, m);
    for &isa in available_isas() {
        let mut got = vec![i32::MIN; m * n];
        gemm_with(isa, &mat, x, m, &mut got).unwrap();
        assert_eq!(got, want, "{isa:?} gemm n={n} k={k} m={m}");
        if m == 1 {
            let mut got = vec![i32::MIN; n];
            gemv_with(isa, &mat, x, &mut got).unwrap();
            assert_eq!(got, want, "{isa:?} gemv n={n} k={k}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gemv_all_isas_equal_naive((n, k, _m, w, x) in case(70, 300, 1)) {
        check_gemm(n, k, 1, &w, &x[..k]);
    }

    #[test]
    fn gemm_all_isas_equal_naive((n, k, m, w, x) in case(40, 100, 37)) {
        check_gemm(n, k, m, &w, &x);
    }
}

#[test]
fn extreme_activations_do_not_overflow() {
    // All weights +1 / -1 against all activations -128: the largest |partial sums| per lane.
    // k spans several 16-block runs of i16 sums; m covers every token-tile width up to 8.
    let (n, k) = (33, 1000);
    for m in [17, 15, 6] {
        for wv in [1i8, -1] {
            let w = vec![wv; n * k];
            check_gemm(n, k, m, &w, &vec![-128i8; m * k]);
            check_gemm(n, k, m, &w, &vec![127i8; m * k]);
        }
    }
}

#[test]
fn largest_k_does_not_overflow() {
    let (n, k) = (17, format::MAX_K);
    for (wv, xv) in [(1i8, -128i8), (-1, -128), (1, 127), (-1, 127)] {
        let mat = TernaryMatrix::from_ternary(&vec![wv; n * k], n, k).unwrap();
        let want = vec![i32::from(wv) * i32::from(xv) * k as i32; n];
        for &isa in available_isas() {
            let mut got = vec![0i32; n];
            gemv_with(isa, &mat, &vec![xv; k], &mut got).unwrap();
            assert_eq!(got, want, "{isa:?} w={wv} x={xv}");
        }
    }
    assert!(matches!(
        TernaryMatrix::from_ternary(&vec![0; k + 1], 1, k + 1),
        Err(KernelError::BadShape { .. })
    ));
}

#[test]
fn ternary_matmul_matches_reference_statement() {
    let (n, k, m) = (37, 70, 20);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 23) as f32 - 11.0) * 0.01)
        .collect();
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 104729 % 97) as f32 - 48.0) * 0.1)
        .collect();
    let (mat, ws) = TernaryMatrix::from_f32_absmean(&w, n, k).unwrap();
    let wq = mat.to_ternary();
    // The reference: quantise each row, integer dot, one f32 division per output.
    let mut want = vec![0f32; m * n];
    for t in 0..m {
        let mut q = vec![0i8; k];
        let xs = quantize_row_i8_scalar(&x[t * k..(t + 1) * k], &mut q);
        let y = naive_gemm(&wq, n, k, &q, 1);
        for row in 0..n {
            want[t * n + row] = y[row] as f32 / (xs * ws);
        }
    }
    for &isa in available_isas() {
        let mut got = vec![f32::NAN; m * n];
        ternary_matmul_with(isa, &mat, ws, &x, m, &mut got).unwrap();
        assert_eq!(got, want, "{isa:?}");
    }
    let mut got = vec![f32::NAN; n];
    ternary_matmul(&mat, ws, &x[..k], 1, &mut got).unwrap();
    assert_eq!(got, want[..n]);
}

#[test]
fn bad_lengths_are_errors() {
    let mat = TernaryMatrix::from_ternary(&[0; 12], 3, 4).unwrap();
    let mut out = vec![0i32; 3];
    assert_eq!(
        gemv(&mat, &[0; 5], &mut out),
        Err(KernelError::BadLength {
            what: "x_q",
            expected: 4,
            got: 5
        })
    );
    assert_eq!(
        gemm(&mat, &[0; 8], 2, &mut out),
        Err(KernelError::BadLength {
            what: "out",
            expected: 6,
            got: 3
        })
    );
    let mut outf = vec![0f32; 3];
    assert!(ternary_matmul(&mat, 1.0, &[0.0; 3], 1, &mut outf).is_err());
}

#[test]
fn isas_are_ordered_and_detected() {
    let isas = available_isas();
    assert_eq!(isas[0], Isa::Scalar);
    assert!(isas.windows(2).all(|p| p[0] < p[1]));
    let cap = crate::isa_cap().ok().flatten();
    assert_eq!(best_isa(), crate::matmul::best_under(isas, cap));
    if cap.is_none() {
        assert_eq!(best_isa(), *isas.last().unwrap());
    }
}

/// `TRITTER_KERNELS` names one instruction set or is an error naming the value; the cap picks
/// the best set at or below it, the scalar specification when nothing is.
#[test]
fn the_kernel_cap_takes_the_best_set_at_or_below_it() {
    use crate::matmul::{best_under, parse_cap};
    assert_eq!(parse_cap(None), Ok(None));
    assert_eq!(parse_cap(Some("portable")), Ok(Some(Isa::Portable)));
    assert_eq!(parse_cap(Some("avx512vnni")), Ok(Some(Isa::Avx512Vnni)));
    let err = parse_cap(Some("AVX2")).unwrap_err().to_string();
    assert!(
        err.contains("TRITTER_KERNELS=\"AVX2\"") && err.contains("portable"),
        "{err}"
    );
    let all = [
        Isa::Scalar,
        Isa::Portable,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Vnni,
    ];
    let avx2_host = [Isa::Scalar, Isa::Portable, Isa::Avx2];
    assert_eq!(best_under(&all, None), Isa::Avx512Vnni);
    assert_eq!(best_under(&all, Some(Isa::Avx2)), Isa::Avx2);
    assert_eq!(best_under(&all, Some(Isa::Portable)), Isa::Portable);
    assert_eq!(best_under(&avx2_host, Some(Isa::Avx512)), Isa::Avx2);
    assert_eq!(best_under(&avx2_host, Some(Isa::Scalar)), Isa::Scalar);
}
