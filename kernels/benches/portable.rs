//! The portable GEMV path (`Isa::Portable`) against the AVX2 tile and the scalar specification,
//! 1 thread, at the 2B4T decode shapes. The paths are alternated round by round in one process
//! and each ratio is taken per round (`AVX2 time ÷ portable time` of the same round, i.e. the
//! portable path's speed as a fraction of AVX2's), then the median over the rounds: on a shared,
//! noisy host only ratios measured side by side mean anything. The two go first in turn.
//! Not a criterion bench.
//! Run with `cargo bench -p tritter-kernels --bench portable` (`-- ROUNDS`, default 41).

use std::hint::black_box;
use std::time::Instant;
use tritter_kernels::{available_isas, gemv_with, Isa, TernaryMatrix};

mod common;
use common::weights;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Mean µs of one call over `reps` calls.
fn time(isa: Isa, w: &TernaryMatrix, x: &[i8], out: &mut [i32], reps: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..reps {
        gemv_with(isa, w, black_box(x), out).unwrap();
    }
    t.elapsed().as_secs_f64() * 1e6 / reps as f64
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(41);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let avx2 = available_isas().contains(&Isa::Avx2);
    println!("1 thread, {rounds} rounds; medians; AVX2 available: {avx2}");
    for (n, k) in [(2560, 2560), (6912, 2560), (2560, 6912)] {
        let w = weights(n, k);
        let x: Vec<i8> = (0..k).map(|i| (i * 7919 % 255) as u8 as i8).collect();
        let mut out = vec![0i32; n];
        let (mut port, mut simd, mut scal) = (Vec::new(), Vec::new(), Vec::new());
        pool.install(|| {
            // Round 0 warms caches and scratch buffers and is not counted.
            for r in 0..=rounds {
                // Which path goes first alternates, so neither always finds the other's cache.
                let mut a = f64::NAN;
                if avx2 && r % 2 == 0 {
                    a = time(Isa::Avx2, &w, &x, &mut out, 5);
                }
                let p = time(Isa::Portable, &w, &x, &mut out, 5);
                if avx2 && r % 2 == 1 {
                    a = time(Isa::Avx2, &w, &x, &mut out, 5);
                }
                // The scalar specification is ~6x slower than the portable path: every 4th round.
                if r > 0 {
                    port.push(p);
                    simd.push(a);
                    if r % 4 == 1 {
                        let s = time(Isa::Scalar, &w, &x, &mut out, 1);
                        scal.push((s, p));
                    }
                }
            }
        });
        let vs_avx2 = median(simd.iter().zip(&port).map(|(a, p)| a / p).collect());
        let vs_scalar = median(scal.iter().map(|(s, p)| s / p).collect());
        println!(
            "{n}x{k}: portable {:.1} µs, AVX2 {:.1} µs, scalar {:.1} µs | portable/AVX2 speed \
             {vs_avx2:.3}, portable/scalar speed {vs_scalar:.2}",
            median(port.clone()),
            median(simd.clone()),
            median(scal.iter().map(|(s, _)| *s).collect()),
        );
    }
}
