//! Speed of the SigLIP B/16-224 tower on CPU (random weights, batch 1), to compare with
//! transformers (`scripts/bench_siglip_torch.py`, same shapes). Ignored by default:
//!
//! `cargo test --release -p tritter-model --test vision_speed -- --ignored --nocapture`
//!
//! Release: the fused path's CPU kernels are this crate's own (`vision/cpu.rs`), which the dev
//! profile builds at opt-level 1.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::time::Instant;
use tritter_model::vision::{SiglipVision, VisionConfig, VisionPath};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn siglip_b16_224_cpu_median() {
    let runs: usize = std::env::var("VISION_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let cfg = VisionConfig::siglip_base_patch16_224();
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let tower = SiglipVision::new(cfg, vb).unwrap();
    let px = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &Device::Cpu).unwrap();
    for path in [VisionPath::Fused, VisionPath::Differentiable] {
        let mut times = vec![];
        for i in 0..runs + 2 {
            let t0 = Instant::now();
            let y = tower.forward_with(&px, path).unwrap();
            let dt = t0.elapsed().as_secs_f64() * 1e3;
            assert_eq!(y.dims(), &[1, 196, 768]);
            if i >= 2 {
                times.push(dt);
            }
        }
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{{\"path\": \"{path:?}\", \"ms_median\": {:.2}, \"ms_min\": {min:.2}, \"threads\": {}, \"runs\": {runs}, \"params\": {}}}",
            median(times),
            candle_core::utils::get_num_threads(),
            tower.param_count()
        );
    }
}
