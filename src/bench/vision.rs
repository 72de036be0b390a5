//! `tritter bench vision [--json]`: the SigLIP-B/16 tower (224 px, random weights, batch 1) on
//! the CPU (or, in a CUDA build with `--device cuda`, on the GPU through candle), fused
//! inference path: median and best of timed runs after warm-up. Compare with
//! `scripts/bench_siglip_torch.py` (transformers' `SiglipVisionModel`, same shapes) in the same
//! sitting; `scripts/bench_vision.sh` runs both and prints the ratio.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;
use std::time::Instant;
use tritter_model::vision::{SiglipVision, VisionConfig, VisionPath};

/// Timings of the tower.
#[derive(Debug, Serialize)]
pub struct VisionReport {
    pub model: &'static str,
    pub device: String,
    pub image_size: usize,
    pub tokens: usize,
    pub params: usize,
    pub threads: usize,
    pub runs: usize,
    pub ms_median: f64,
    pub ms_min: f64,
}

/// Times the tower on `device` (the CPU, or a CUDA device in a CUDA build).
pub fn vision_report(runs: usize, device: &Device) -> Result<VisionReport> {
    let cfg = VisionConfig::siglip_base_patch16_224();
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, device);
    let tower = SiglipVision::new(cfg.clone(), vb.pp("vision_model"))?.with_path(VisionPath::Fused);
    let px = Tensor::randn(0f32, 1.0, (1, 3, cfg.image_size, cfg.image_size), device)?;
    let mut times = vec![];
    for i in 0..runs + 2 {
        let t0 = Instant::now();
        let y = tower.forward(&px)?;
        device.synchronize()?;
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(
            y.dims() == [1, cfg.num_patches(), cfg.hidden_size],
            "tower output {:?}",
            y.dims()
        );
        if i >= 2 {
            times.push(dt);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(VisionReport {
        model: "siglip-base-patch16-224 (tower, no pooling head)",
        device: format!("{device:?}"),
        image_size: cfg.image_size,
        tokens: cfg.num_patches(),
        params: tower.param_count(),
        threads: candle_core::utils::get_num_threads(),
        runs,
        ms_median: times[times.len() / 2],
        ms_min: times[0],
    })
}
