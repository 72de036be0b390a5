//! `tritter bench kernels --json`: the ternary kernels against the machine's own copy bandwidth
//! and candle's dense f32 matmul, measured in one process so every figure is a ratio taken in
//! the same sitting (the machines are shared and noisy).
//!
//! Shapes are BitNet b1.58 2B4T's (n × k): attention/FFN projections and the LM head for GEMV
//! (batch 1), the projections for GEMM at batch 512. Each figure is the best of repeated calls
//! after a warm-up (the copy figure too, STREAM convention: read + write bytes counted): on a
//! shared machine the best call is the one least disturbed by other processes, and ternary and
//! f32 are measured alike. The medians are reported beside them (`*_median`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde_json::{json, Value};
use tritter_kernels::{
    available_isas, best_isa, gemv_with, ternary_matmul, HugeBuf, Isa, TernaryMatrix,
};

/// What to measure; [`kernels_report`] uses [`ReportConfig::full`].
struct ReportConfig {
    /// Bytes in each of the copy benchmark's two buffers.
    copy_bytes: usize,
    /// Copy passes; the best counts.
    copy_passes: usize,
    /// GEMV shapes (n, k).
    gemv: Vec<(usize, usize)>,
    /// GEMM shapes (n, k).
    gemm: Vec<(usize, usize)>,
    /// GEMM batch (tokens).
    batch: usize,
    /// Minimum measuring time per figure.
    min_time: Duration,
    /// Bytes of packed weights the memory-resident GEMV paths cycle through (several times the
    /// last-level cache, so each call reads its matrix from memory, as decode does).
    stream_bytes: usize,
}

impl ReportConfig {
    /// The published configuration: 1 GiB copy, the 2B4T shapes, batch 512.
    fn full() -> Self {
        Self {
            copy_bytes: 1 << 30,
            copy_passes: 5,
            gemv: vec![(2560, 2560), (6912, 2560), (2560, 6912), (128_256, 2560)],
            gemm: vec![(2560, 2560), (6912, 2560), (2560, 6912)],
            batch: 512,
            min_time: Duration::from_millis(500),
            stream_bytes: 256 << 20,
        }
    }
}

/// Runs the kernel benchmarks on a rayon pool of `threads` threads (candle's CPU matmul runs
/// inside the same pool) and returns one JSON object: `isa`, `threads`, `copy_gbps` (small
/// pages, the bound), `copy_gbps_huge_pages`, `gemv`
/// (`shape`, `ternary_us`, `f32_us`, `ternary_gbps`, `speedup_vs_f32`, `ternary_vs_copy`,
/// `ternary_us_median`, `f32_us_median`) and `gemm` (`shape`, `batch`, `ternary_gflops`,
/// `f32_gflops`, `speedup_vs_f32`, `ternary_gflops_median`, `f32_gflops_median`).
pub fn kernels_report(threads: usize) -> Result<Value> {
    report(threads, &ReportConfig::full())
}

fn report(threads: usize, cfg: &ReportConfig) -> Result<Value> {
    anyhow::ensure!(threads >= 1, "threads must be at least 1, got {threads}");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("building the benchmark thread pool")?;
    pool.install(|| {
        let (copy_gbps, copy_gbps_huge) = copy_bandwidth(cfg.copy_bytes, cfg.copy_passes)?;
        let mut gemv = Vec::new();
        for &(n, k) in &cfg.gemv {
            let w = random_ternary(n, k)?;
            let x = activations(k);
            let mut y = vec![0f32; n];
            let (ternary_us, ternary_med) =
                time_us(cfg.min_time, || ternary_matmul(&w, 1.0, &x, 1, &mut y))?;
            let (f32_us, f32_med) = candle_matmul_us(1, n, k, cfg.min_time)?;
            let ternary_gbps = w.packed_bytes() as f64 / ternary_us / 1e3;
            gemv.push(json!({
                "shape": [n, k],
                "ternary_us": ternary_us,
                "f32_us": f32_us,
                "ternary_gbps": ternary_gbps,
                "speedup_vs_f32": f32_us / ternary_us,
                "ternary_vs_copy": ternary_gbps / copy_gbps,
                "ternary_us_median": ternary_med,
                "f32_us_median": f32_med,
            }));
        }
        let mut gemm = Vec::new();
        for &(n, k) in &cfg.gemm {
            let m = cfg.batch;
            let w = random_ternary(n, k)?;
            let x = activations(m * k);
            let mut y = vec![0f32; m * n];
            let (ternary_us, ternary_med) =
                time_us(cfg.min_time, || ternary_matmul(&w, 1.0, &x, m, &mut y))?;
            let (f32_us, f32_med) = candle_matmul_us(m, n, k, cfg.min_time)?;
            let flop = 2.0 * (m * n * k) as f64;
            gemm.push(json!({
                "shape": [n, k],
                "batch": m,
                "ternary_gflops": flop / ternary_us / 1e3,
                "f32_gflops": flop / f32_us / 1e3,
                "speedup_vs_f32": f32_us / ternary_us,
                "ternary_gflops_median": flop / ternary_med / 1e3,
                "f32_gflops_median": flop / f32_med / 1e3,
            }));
        }
        Ok(json!({
            "isa": format!("{:?}", best_isa()),
            "threads": threads,
            "copy_gbps": copy_gbps,
            "copy_gbps_huge_pages": copy_gbps_huge,
            "gemv": gemv,
            "gemm": gemm,
            "gemv_paths": gemv_paths(cfg)?,
        }))
    })
}

/// The integer GEMV on every instruction-set path this CPU has (the scalar specification, the
/// portable path the compiler vectorises, the SIMD tiles) at the projection shapes, with each
/// path's speed relative to the AVX2 tile (`vs_avx2`, when present) and to the scalar one. Two
/// residences: `us` with the matrix in cache (one matrix, called again and again: the kernels'
/// compute speed), `us_memory` / `vs_avx2_memory` with each call reading a different copy out of
/// [`ReportConfig::stream_bytes`] of them (the weights from memory, as in decode).
fn gemv_paths(cfg: &ReportConfig) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for &(n, k) in cfg.gemm.iter() {
        let w = random_ternary(n, k)?;
        let copies = (cfg.stream_bytes / w.packed_bytes().max(1)).max(2);
        let ws = (0..copies).map(|_| w.clone()).collect::<Vec<_>>();
        let x: Vec<i8> = (0..k)
            .map(|i| ((i * 7919 % 255) as i32 - 127) as i8)
            .collect();
        let mut y = vec![0i32; n];
        let mut us = Vec::new();
        for &isa in available_isas() {
            let (best, _) = time_us(cfg.min_time, || gemv_with(isa, &w, &x, &mut y))?;
            let mut next = 0;
            let (mem, _) = time_us(cfg.min_time, || {
                next = (next + 1) % copies;
                gemv_with(isa, &ws[next], &x, &mut y)
            })?;
            us.push((isa, best, mem));
        }
        let of = |want: Isa| us.iter().find(|u| u.0 == want).map(|u| (u.1, u.2));
        for &(isa, t, mem) in &us {
            rows.push(json!({
                "shape": [n, k],
                "isa": format!("{isa:?}"),
                "us": t,
                "vs_avx2": of(Isa::Avx2).map(|a| a.0 / t),
                "vs_scalar": of(Isa::Scalar).map(|a| a.0 / t),
                "us_memory": mem,
                "vs_avx2_memory": of(Isa::Avx2).map(|a| a.1 / mem),
                "copies": copies,
            }));
        }
    }
    Ok(rows)
}

/// STREAM-style copy bandwidth in GB/s (10^9 bytes/s, read + write counted), best of `passes`,
/// split over the current rayon pool's threads: `(small, huge)` for ordinary small-page buffers
/// (the bound's yardstick in every report so far) and for buffers on transparent huge pages
/// where the OS gives them, as the packed weights and the LM heads are (`tritter_kernels::huge`;
/// on the hosts measured a faster copy, so the stricter yardstick). Passes alternate the two.
fn copy_bandwidth(bytes: usize, passes: usize) -> Result<(f64, f64)> {
    let src_h = HugeBuf::filled(1u8, bytes)?;
    let mut dst_h = HugeBuf::filled(0u8, bytes)?;
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let chunk = bytes.div_ceil(rayon::current_num_threads() * 8).max(1);
    let once = |d: &mut [u8], s: &[u8]| {
        let start = Instant::now();
        d.par_chunks_mut(chunk)
            .zip(s.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        let t = start.elapsed().as_secs_f64();
        std::hint::black_box(&d);
        t
    };
    let (mut huge, mut small) = (f64::INFINITY, f64::INFINITY);
    // Each kind goes first in every other pass, so neither always follows the other.
    for pass in 0..2 * passes.max(1) {
        if pass % 2 == 0 {
            huge = huge.min(once(&mut dst_h, &src_h));
            small = small.min(once(&mut dst, &src));
        } else {
            small = small.min(once(&mut dst, &src));
            huge = huge.min(once(&mut dst_h, &src_h));
        }
    }
    Ok((
        2.0 * bytes as f64 / small / 1e9,
        2.0 * bytes as f64 / huge / 1e9,
    ))
}

/// Best and median wall time of `f` in µs: one warm-up call, then calls until `min_time` has
/// passed (at least 5).
fn time_us<E>(min_time: Duration, mut f: impl FnMut() -> Result<(), E>) -> Result<(f64, f64)>
where
    E: std::error::Error + Send + Sync + 'static,
{
    f()?;
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || start.elapsed() < min_time {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    Ok((samples[0], samples[samples.len() / 2]))
}

/// Best and median time of candle's CPU f32 matmul `[m, k] × [k, n]` in µs.
fn candle_matmul_us(m: usize, n: usize, k: usize, min_time: Duration) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let a = Tensor::rand(-1f32, 1f32, (m, k), &dev)?;
    let b = Tensor::rand(-1f32, 1f32, (k, n), &dev)?;
    time_us(min_time, || {
        a.matmul(&b).map(|c| drop(std::hint::black_box(c)))
    })
}

/// Deterministic pseudo-random ternary weights, built from Hugging Face packed bytes.
pub(crate) fn random_ternary(n: usize, k: usize) -> Result<TernaryMatrix> {
    let mut s = 0x2545_F491_4F6C_DD1Du64 ^ (n * k) as u64;
    let packed: Vec<u8> = (0..n / 4 * k)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (0..4).fold(0u8, |b, i| b | ((((s >> (8 * i)) % 3) as u8) << (2 * i)))
        })
        .collect();
    Ok(TernaryMatrix::from_hf_packed(&packed, n, k)?)
}

/// Deterministic activations with a spread of magnitudes.
fn activations(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_report_is_consistent() {
        let cfg = ReportConfig {
            copy_bytes: 1 << 20,
            copy_passes: 2,
            gemv: vec![(64, 48), (20, 100)],
            gemm: vec![(32, 40)],
            batch: 9,
            min_time: Duration::from_millis(1),
            stream_bytes: 1 << 16,
        };
        let r = report(1, &cfg).unwrap();
        assert_eq!(r["threads"], 1);
        assert!(r["copy_gbps"].as_f64().unwrap() > 0.0);
        let gemv = r["gemv"].as_array().unwrap();
        assert_eq!(gemv.len(), 2);
        assert_eq!(gemv[1]["shape"], json!([20, 100]));
        for g in gemv {
            let (t, f) = (
                g["ternary_us"].as_f64().unwrap(),
                g["f32_us"].as_f64().unwrap(),
            );
            assert!(t > 0.0 && f > 0.0);
            assert!(g["ternary_us_median"].as_f64().unwrap() >= t);
            assert!(g["f32_us_median"].as_f64().unwrap() >= f);
            assert!((g["speedup_vs_f32"].as_f64().unwrap() - f / t).abs() < 1e-9 * (f / t));
        }
        // 20 rows pad to 2 panels of 16; 100 columns to 7 blocks of 16: 14 blocks of 64 bytes.
        let bytes = 14.0 * 64.0;
        let g = &gemv[1];
        let want = bytes / g["ternary_us"].as_f64().unwrap() / 1e3;
        assert!((g["ternary_gbps"].as_f64().unwrap() - want).abs() < 1e-9 * want);
        assert_eq!(r["gemm"][0]["batch"], 9);
        assert!(r["gemm"][0]["ternary_gflops"].as_f64().unwrap() > 0.0);
        // One GEMV row per instruction-set path for each GEMM shape; the scalar path is 1× itself.
        let paths = r["gemv_paths"].as_array().unwrap();
        assert_eq!(paths.len(), tritter_kernels::available_isas().len());
        assert!(paths.iter().any(|p| p["isa"] == "Portable"));
        let scalar = paths.iter().find(|p| p["isa"] == "Scalar").unwrap();
        assert!((scalar["vs_scalar"].as_f64().unwrap() - 1.0).abs() < 1e-12);
        // 32 × 40 packs to 2 panels of 3 blocks (384 bytes): 170 copies fill 64 KiB.
        assert!(paths.iter().all(|p| p["copies"] == 170));
        assert!(paths.iter().all(|p| p["us_memory"].as_f64().unwrap() > 0.0));
        if let Some(a) = paths.iter().find(|p| p["isa"] == "Avx2") {
            assert!((a["vs_avx2_memory"].as_f64().unwrap() - 1.0).abs() < 1e-12);
        }
    }

    /// The published measurement, until `tritter bench kernels --json` is wired:
    /// `cargo test --release --bin tritter full_report -- --ignored --nocapture`
    /// (threads from `TRITTER_BENCH_THREADS`, default 1 and 2).
    #[test]
    #[ignore = "a benchmark: minutes, 2.5 GiB of memory"]
    fn full_report() {
        let threads: Vec<usize> = match std::env::var("TRITTER_BENCH_THREADS") {
            Ok(s) => s.split(',').map(|t| t.trim().parse().unwrap()).collect(),
            Err(_) => vec![1, 2],
        };
        for t in threads {
            let r = kernels_report(t).unwrap();
            println!("{r}");
            assert_eq!(r["gemv"].as_array().unwrap().len(), 4);
            assert_eq!(r["gemm"].as_array().unwrap().len(), 3);
        }
    }

    #[test]
    fn zero_threads_is_an_error() {
        assert!(kernels_report(0).is_err());
    }
}
