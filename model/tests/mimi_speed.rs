//! Speed of Mimi's encode on CPU (the kyutai/mimi shape, random weights, a 10 s clip at 24 kHz,
//! batch 1), on the checkpoint and clip `scripts/bench_mimi_torch.py --out DIR` writes after
//! timing transformers on them; also reports how many codes equal HF's and how far its decoding
//! of HF's codes is from HF's. Ignored by default:
//!
//! `MIMI_BENCH_DIR=DIR cargo test -p tritter-model --test mimi_speed -- --ignored --nocapture`
//!
//! In the dev profile dependencies (candle, candle-transformers, gemm) are built with opt-level 3,
//! which is where the time goes.

use candle_core::{Device, Tensor};
use std::path::PathBuf;
use std::time::Instant;
use tritter_model::audio::mimi::Mimi;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture and MIMI_BENCH_DIR"]
fn mimi_encode_10s_cpu_median() {
    let dir = PathBuf::from(std::env::var("MIMI_BENCH_DIR").expect("MIMI_BENCH_DIR"));
    let (runs, n_q) = (env_or("MIMI_BENCH_RUNS", 5), env_or("MIMI_BENCH_NQ", 8));
    let model = Mimi::load(&dir, &Device::Cpu).unwrap();
    let io =
        candle_core::safetensors::load(dir.join("bench_io.safetensors"), &Device::Cpu).unwrap();
    let x: &Tensor = &io["samples"];
    let codes = model.encode(x, n_q).unwrap();
    let want = io["audio_codes"]
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap();
    let got = codes.flatten_all().unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(got.len(), want.len());
    let equal = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    println!(
        "codes equal to HF's: {equal}/{} ({:.2}%)",
        want.len(),
        100.0 * equal as f64 / want.len() as f64
    );
    let audio = model.decode(&io["audio_codes"]).unwrap();
    let want = &io["audio_values"];
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let diff = (&audio - want).unwrap().abs().unwrap().max_all().unwrap();
    println!(
        "decode of HF's codes: max|Δ|/max|ref| {:.2e}",
        diff.to_scalar::<f32>().unwrap() / scale
    );
    let mut times = Vec::new();
    let mut frames = 0;
    for _ in 0..runs {
        let t0 = Instant::now();
        let codes = model.encode(x, n_q).unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        frames = codes.dim(2).unwrap();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "mimi encode 10 s @ 24 kHz, n_q {n_q}: median {:.1} ms, min {:.1} ms over {runs} runs, \
         {frames} frames, {} params, rayon threads {}",
        times[times.len() / 2],
        times[0],
        model.param_count(),
        rayon::current_num_threads()
    );
}
