//! What the kernel benches share.

use tritter_kernels::TernaryMatrix;

/// Deterministic ternary weights (a fixed LCG; the values do not affect the kernels' speed).
pub fn weights(n: usize, k: usize) -> TernaryMatrix {
    let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ (n * k) as u64;
    let v: Vec<i8> = (0..n * k)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 33) % 3) as i8 - 1
        })
        .collect();
    TernaryMatrix::from_ternary(&v, n, k).unwrap()
}
