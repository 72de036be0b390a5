//! `tritter bench train [--threads N] [--json]`: one training step of `tritter-tiny` (batch 8 ×
//! 256 random tokens, ternary STE, AdamW), timed by phase — building the model from the master
//! weights (the ternary and activation quantisers' setup), forward + loss, backward, gradient
//! collection + clipping, the AdamW update — and the whole step's tokens/s, median over the
//! timed steps after two warm-up steps. The same shapes as `scripts/torch_train_bench.py`'s
//! defaults (hidden 256, FFN 688, 4 layers, 4 heads, 2 KV heads, vocabulary 8014), so the two
//! runs give the ratio issue #17 measures. Figures name the CPU they ran on.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::Serialize;
use tritter_model::train::optim::{self, AdamW, AdamWParams};
use tritter_model::weights::Params;
use tritter_model::{Config, Transformer};

/// Median milliseconds of each phase of a step.
#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    pub build_model: f64,
    pub forward_loss: f64,
    pub backward: f64,
    pub grads_clip: f64,
    pub adamw: f64,
    pub step: f64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub cpu: String,
    pub preset: String,
    pub threads: usize,
    pub batch: usize,
    pub seq: usize,
    pub params: usize,
    pub steps_timed: usize,
    pub tokens_per_s: f64,
    pub phases_ms: Phases,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The model of the benchmark: a preset (`tritter-tiny` or `tritter-small`) with the PyTorch
/// script's vocabulary.
pub fn bench_config(preset: &str) -> Result<Config> {
    anyhow::ensure!(
        matches!(preset, "tritter-tiny" | "tritter-small"),
        "bench train --preset {preset}: expected tritter-tiny or tritter-small"
    );
    let mut cfg = Config::preset(preset)?;
    cfg.vocab_size = 8014;
    Ok(cfg)
}

/// Times `steps` training steps (after two warm-up steps) of batch × seq random tokens.
pub fn train_report(
    preset: &str,
    threads: usize,
    batch: usize,
    seq: usize,
    steps: usize,
) -> Result<TrainReport> {
    let dev = Device::Cpu;
    let cfg = bench_config(preset)?;
    let params = Params::init(&cfg, 0, 0.02, &dev)?;
    let hp = AdamWParams {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut adam = AdamW::new(&params, hp, optim::default_decay)?;
    let n: usize = params.iter().map(|(_, v)| v.as_tensor().elem_count()).sum();
    let ids: Vec<u32> = (0..batch * seq)
        .map(|i| ((i as u64 * 2_654_435_761 + 17) % cfg.vocab_size as u64) as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (batch, seq), &dev)?;
    let mut rec: [Vec<f64>; 6] = Default::default();
    for s in 0..steps + 2 {
        let t0 = Instant::now();
        let model = Transformer::load(&cfg, &mut &params, &dev)?;
        let t1 = Instant::now();
        let loss = model.loss(&ids)?;
        let lv = loss.to_scalar::<f32>()?;
        anyhow::ensure!(lv.is_finite(), "the benchmark's loss became {lv}");
        let t2 = Instant::now();
        let grads = loss.backward()?;
        let t3 = Instant::now();
        let mut g = optim::collect_grads(&params, &grads)?;
        optim::clip_grad_norm(&mut g, 1.0)?;
        let t4 = Instant::now();
        adam.step(&params, &g, 1e-3, true)?;
        let t5 = Instant::now();
        if s >= 2 {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            for (i, v) in [
                ms(t0, t1),
                ms(t1, t2),
                ms(t2, t3),
                ms(t3, t4),
                ms(t4, t5),
                ms(t0, t5),
            ]
            .into_iter()
            .enumerate()
            {
                rec[i].push(v);
            }
        }
    }
    let [b, f, bw, g, a, st] = rec.map(median);
    Ok(TrainReport {
        cpu: crate::bench::host::CpuKey::current().name,
        preset: preset.to_string(),
        threads,
        batch,
        seq,
        params: n,
        steps_timed: steps,
        tokens_per_s: (batch * seq) as f64 / (st / 1e3),
        phases_ms: Phases {
            build_model: b,
            forward_loss: f,
            backward: bw,
            grads_clip: g,
            adamw: a,
            step: st,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phases_make_up_the_step() {
        let cfg = bench_config("tritter-tiny").unwrap();
        let r = train_report("tritter-tiny", 1, 2, 16, 3).unwrap();
        let p = &r.phases_ms;
        let parts = p.build_model + p.forward_loss + p.backward + p.grads_clip + p.adamw;
        // Medians of the parts need not sum to the median step exactly, but to its size.
        assert!(parts > 0.5 * p.step && parts < 2.0 * p.step, "{p:?}");
        assert!(r.tokens_per_s > 0.0);
        let want: usize = tritter_model::weights::param_shapes(&cfg)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(r.params, want);
        assert!(bench_config("tritter-7b").is_err());
    }
}
