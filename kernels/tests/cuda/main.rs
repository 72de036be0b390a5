//! The CUDA kernels against their host statements (feature `cuda`; needs an NVIDIA GPU), one
//! module per `.cu` file (`ternary`, `attention`, `ops`) and one for the speed variants of
//! `Tuning` (`variants`). Without a GPU each test prints why it did nothing, unless
//! `TRITTER_REQUIRE_GPU=1` (set by scripts/gpu-check.sh), which makes a missing GPU a failure.
#![cfg(feature = "cuda")]

mod attention;
mod ops;
mod ternary;
mod variants;

use tritter_kernels::cuda::{Gpu, GpuKvKind};
use tritter_kernels::TernaryMatrix;

fn gpu() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var("TRITTER_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("TRITTER_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("no CUDA device ({e}); skipping");
            None
        }
    }
}

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn rand_ternary(n: usize, k: usize, seed: u64) -> TernaryMatrix {
    let v: Vec<i8> = rand(n * k, seed)
        .iter()
        .map(|x| (x * 1.5).round().clamp(-1.0, 1.0) as i8)
        .collect();
    TernaryMatrix::from_ternary(&v, n, k).unwrap()
}

#[test]
fn bad_sizes_are_errors_not_launches() {
    let Some(g) = gpu() else { return };
    let x = g.upload(&[1f32; 10]).unwrap();
    let act = g.act_buf(64, 1).unwrap();
    assert!(g.act_quant(&x, 0, 1, &act).is_err());
    assert!(g.kv_cache(GpuKvKind::Int4, 8, 1, 12, 0, 0, 0.0).is_err());
    assert!(g.kv_cache(GpuKvKind::F32, 8, 1, 16, 8, 0, 0.0).is_err());
}
