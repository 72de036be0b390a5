//! `ternary.cu`: the int8 quantiser and the ternary GEMV/GEMM equal their CPU statements
//! ([`quantize_row_i8_scalar`], [`ternary_matmul`]) bit for bit.

use tritter_kernels::gpu_ref::G2Matrix;
use tritter_kernels::{quantize_row_i8_scalar, ternary_matmul, TernaryMatrix};

use super::{gpu, rand, rand_ternary};

#[test]
fn act_quant_is_bit_exact() {
    let Some(g) = gpu() else { return };
    for &(m, k) in &[(1, 2560), (5, 1000), (3, 17), (40, 6912)] {
        let mut x = rand(m * k, (m * k) as u64);
        // Ties and an outlier row, so rounding and the absmax path are exercised.
        x[0] = 127.0;
        x[1] = 2.5;
        let dx = g.upload(&x).unwrap();
        let act = g.act_buf(k, m).unwrap();
        g.act_quant(&dx, 0, m, &act).unwrap();
        let (q, s, sum) = act.read(&g, m).unwrap();
        for t in 0..m {
            let mut want = vec![0i8; k];
            let ws = quantize_row_i8_scalar(&x[t * k..][..k], &mut want);
            assert_eq!(s[t].to_bits(), ws.to_bits(), "scale m{m} k{k} t{t}");
            assert_eq!(&q[t * act.k_pad..][..k], &want[..], "codes m{m} k{k} t{t}");
            assert!(q[t * act.k_pad + k..(t + 1) * act.k_pad]
                .iter()
                .all(|&v| v == 0));
            assert_eq!(sum[t], want.iter().map(|&v| i32::from(v)).sum::<i32>());
        }
    }
}

/// GEMV (m = 1) and GEMM (m > 1) equal the CPU BitLinear product bit for bit, with stacked
/// matrices keeping their own scales and ragged shapes.
#[test]
fn ternary_gemv_and_gemm_are_bit_exact() {
    let Some(g) = gpu() else { return };
    for &(n1, n2, k) in &[
        (2560, 640, 2560),
        (300, 77, 1000),
        (6912, 0, 2560),
        (64, 5, 6912),
    ] {
        let a = rand_ternary(n1, k, 1 + k as u64);
        let b = rand_ternary(n2.max(1), k, 2 + k as u64);
        let parts: Vec<(&TernaryMatrix, f32)> = if n2 == 0 {
            vec![(&a, 0.83)]
        } else {
            vec![(&a, 0.83), (&b, 1.21)]
        };
        let g2 = G2Matrix::stack(&parts).unwrap();
        let w = g.upload_ternary(&g2).unwrap();
        for &m in &[1usize, 2, 31, 33, 70] {
            let x = rand(m * k, (m + k) as u64);
            let dx = g.upload(&x).unwrap();
            let act = g.act_buf(k, m).unwrap();
            let out = g.upload(&vec![f32::NAN; m * w.n]).unwrap();
            g.bitlinear(&w, &dx, 0, m, &act, &out, 0).unwrap();
            let got = g.download(&out).unwrap();
            let mut want = vec![0f32; m * w.n];
            let mut row0 = vec![0f32; m * n1];
            ternary_matmul(&a, 0.83, &x, m, &mut row0).unwrap();
            let mut row1 = vec![0f32; m * b.n()];
            if n2 > 0 {
                ternary_matmul(&b, 1.21, &x, m, &mut row1).unwrap();
            }
            for t in 0..m {
                want[t * w.n..][..n1].copy_from_slice(&row0[t * n1..][..n1]);
                if n2 > 0 {
                    want[t * w.n + n1..][..n2].copy_from_slice(&row1[t * n2..][..n2]);
                }
            }
            let bad = got
                .iter()
                .zip(&want)
                .position(|(u, v)| u.to_bits() != v.to_bits());
            assert!(
                bad.is_none(),
                "n {n1}+{n2} k {k} m {m}: first mismatch at {:?}: {} vs {}",
                bad,
                got[bad.unwrap_or(0)],
                want[bad.unwrap_or(0)]
            );
        }
    }
}
