//! Encode timing of EnCodec at `facebook/encodec_24khz`'s shapes with random weights: a 10 s
//! clip at 24 kHz encoded with 8 codebooks (6 kbps), on the fast path. Compare with
//! `scripts/bench_encodec_torch.py` (transformers' `EncodecModel`, same config and clip) in the
//! same sitting.

use super::config::EncodecConfig;
use super::model::Encodec;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// Timings of one encode.
#[derive(Debug, Clone, Serialize)]
pub struct EncodeReport {
    pub model: &'static str,
    pub device: String,
    pub seconds_of_audio: f64,
    pub codebooks: usize,
    pub frames: usize,
    pub params: usize,
    pub threads: usize,
    pub runs: usize,
    pub ms_median: f64,
    pub ms_min: f64,
    /// Real-time factor: median encode time / audio duration (below 1 is faster than real time).
    pub rtf: f64,
}

/// A random `facebook/encodec_24khz`-shaped model on `device`, loaded the way a checkpoint is
/// (so the fast path has its cached weights).
pub fn random_24khz(device: &Device) -> Result<Encodec> {
    let cfg = EncodecConfig::encodec_24khz();
    let map = VarMap::new();
    let fresh = Encodec::new(
        &cfg,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )?;
    let tensors: HashMap<String, Tensor> = fresh.named_tensors().into_iter().collect();
    Encodec::from_tensors(&cfg, tensors, device)
}

/// Times `runs` encodes (after two warm-up runs) of a 10 s clip with 8 codebooks.
pub fn encode_report(runs: usize, device: &Device) -> Result<EncodeReport> {
    let model = random_24khz(device)?;
    let secs = 10.0;
    let n = (secs * model.sample_rate() as f64) as usize;
    let t: Vec<f32> = (0..n)
        .map(|i| {
            let s = i as f32 / model.sample_rate() as f32;
            0.3 * (2.0 * std::f32::consts::PI * 220.0 * s).sin()
                + 0.1 * (2.0 * std::f32::consts::PI * 1330.0 * s).sin()
        })
        .collect();
    let x = Tensor::from_vec(t, (1, 1, n), device)?;
    let n_q = model.config().num_quantizers_for_bandwidth(6.0)?;
    let mut times = vec![];
    let mut frames = 0;
    for i in 0..runs.max(1) + 2 {
        let t0 = Instant::now();
        let codes = model.encode(&x, n_q)?;
        device.synchronize()?;
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        frames = codes.dim(2)?;
        if codes.dims() != [1, n_q, n.div_ceil(model.hop_length())] {
            return Err(Error::Invalid(format!("codes of shape {:?}", codes.dims())));
        }
        if i >= 2 {
            times.push(dt);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(EncodeReport {
        model: "encodec_24khz (random weights), 10 s mono, 6 kbps = 8 codebooks",
        device: format!("{device:?}"),
        seconds_of_audio: secs,
        codebooks: n_q,
        frames,
        params: model.param_count(),
        threads: candle_core::utils::get_num_threads(),
        runs: times.len(),
        ms_median: median,
        ms_min: times[0],
        rtf: median / (secs * 1e3),
    })
}
