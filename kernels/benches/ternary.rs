//! Criterion benchmarks of the ternary kernels at the BitNet b1.58 2B4T shapes (n × k):
//! GEMV (batch 1) for the attention/FFN projections and the LM head, GEMM at batch 512 for the
//! first three, each with 1 and 2 rayon threads and the best instruction set. Run with
//! `cargo bench -p tritter-kernels --bench ternary` (filter e.g. `-- gemv/t1`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use tritter_kernels::{best_isa, quantize_row_i8, ternary_matmul};

mod common;
use common::weights;

fn activations(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
        .collect()
}

const GEMV_SHAPES: [(usize, usize); 4] =
    [(2560, 2560), (6912, 2560), (2560, 6912), (128_256, 2560)];
const GEMM_BATCH: usize = 512;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn bench_gemv(c: &mut Criterion) {
    eprintln!("isa: {:?}", best_isa());
    for threads in [1, 2] {
        let pool = pool(threads);
        let mut g = c.benchmark_group(format!("gemv/t{threads}"));
        g.measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        for &(n, k) in &GEMV_SHAPES {
            let w = weights(n, k);
            let x = activations(k);
            let mut out = vec![0f32; n];
            g.throughput(Throughput::Bytes(w.packed_bytes() as u64));
            g.bench_function(BenchmarkId::from_parameter(format!("{n}x{k}")), |b| {
                pool.install(|| {
                    b.iter(|| ternary_matmul(&w, 1.0, black_box(&x), 1, &mut out).unwrap())
                })
            });
        }
        g.finish();
    }
}

fn bench_gemm(c: &mut Criterion) {
    for threads in [1, 2] {
        let pool = pool(threads);
        let mut g = c.benchmark_group(format!("gemm{GEMM_BATCH}/t{threads}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(4))
            .warm_up_time(Duration::from_secs(1));
        for &(n, k) in &GEMV_SHAPES[..3] {
            let w = weights(n, k);
            let x = activations(GEMM_BATCH * k);
            let mut out = vec![0f32; GEMM_BATCH * n];
            g.throughput(Throughput::Elements((2 * GEMM_BATCH * n * k) as u64));
            g.bench_function(BenchmarkId::from_parameter(format!("{n}x{k}")), |b| {
                pool.install(|| {
                    b.iter(|| ternary_matmul(&w, 1.0, black_box(&x), GEMM_BATCH, &mut out).unwrap())
                })
            });
        }
        g.finish();
    }
}

fn bench_quant(c: &mut Criterion) {
    let x = activations(6912);
    let mut q = vec![0i8; 6912];
    c.bench_function("quantize_row_i8/6912", |b| {
        b.iter(|| quantize_row_i8(black_box(&x), &mut q))
    });
}

criterion_group!(benches, bench_gemv, bench_gemm, bench_quant);
criterion_main!(benches);
