//! AdamW with torch's decoupled weight decay, global-norm gradient clipping and the learning-rate
//! schedules of `[schedule]`.
//!
//! Must match `torch.optim.AdamW` (foreach=False): `p ← p·(1 − lr·wd)`, then
//! `p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)`; the golden fixtures'
//! `adamw_losses` check it.

use super::config::{DecayKind, ScheduleSection};
use super::TrainError;
use crate::weights::Params;
use candle_core::{backprop::GradStore, Tensor};
use std::collections::BTreeMap;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// First and second moments of one parameter.
#[derive(Debug, Clone)]
pub struct Moments {
    pub m: Tensor,
    pub v: Tensor,
}

/// AdamW over named parameters.
#[derive(Debug)]
pub struct AdamW {
    hp: AdamWParams,
    /// Steps taken so far (the `t` of the bias corrections).
    step: u64,
    moments: BTreeMap<String, Moments>,
    decay: BTreeMap<String, bool>,
}

/// Whether a parameter gets weight decay under the trainer's rule: not norms, not embeddings.
pub fn default_decay(name: &str) -> bool {
    // Recurrent layers' decay rates, skip and time-step biases, and conv biases are not decayed
    // (as transformers' Mamba / Granite training leaves `A_log` and `D` alone).
    let recurrent = [".A_log", ".D", ".dt_bias", ".bias"]
        .iter()
        .any(|s| name.ends_with(s));
    !(name.contains("norm") || name.contains("embed_tokens") || recurrent)
}

impl AdamW {
    /// Zero moments for every parameter; `decay(name)` says which parameters are decayed.
    pub fn new(
        params: &Params,
        hp: AdamWParams,
        decay: impl Fn(&str) -> bool,
    ) -> Result<Self, TrainError> {
        let mut moments = BTreeMap::new();
        let mut dmap = BTreeMap::new();
        for (name, var) in params.iter() {
            // Two tensors, not one shared: the fused step rewrites each in place.
            let m = var.as_tensor().zeros_like()?;
            let v = var.as_tensor().zeros_like()?;
            moments.insert(name.clone(), Moments { m, v });
            dmap.insert(name.clone(), decay(name));
        }
        Ok(AdamW {
            hp,
            step: 0,
            moments,
            decay: dmap,
        })
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The moments by parameter name.
    pub fn moments(&self) -> &BTreeMap<String, Moments> {
        &self.moments
    }

    /// Restore moments and the step count (resume).
    pub fn restore(
        &mut self,
        step: u64,
        moments: BTreeMap<String, Moments>,
    ) -> Result<(), TrainError> {
        for (name, old) in &self.moments {
            let new = moments.get(name).ok_or_else(|| {
                TrainError::Checkpoint(format!("optimizer state has no moments for `{name}`"))
            })?;
            if new.m.dims() != old.m.dims() || new.v.dims() != old.v.dims() {
                return Err(TrainError::Checkpoint(format!(
                    "optimizer moments of `{name}` have shape {:?}, parameter has {:?}",
                    new.m.dims(),
                    old.m.dims()
                )));
            }
        }
        self.moments = moments;
        self.step = step;
        Ok(())
    }

    /// One update of every parameter that has a gradient in `grads`, at learning rate `lr`;
    /// `decay_on` = false switches weight decay off (two-stage schedule, stage 2). On the CPU in
    /// f32 each parameter is updated in one in-place pass (`optim_fused`), bit-identical to
    /// the composed candle ops used elsewhere; the moments' tensors are then rewritten in
    /// place, not replaced.
    pub fn step(
        &mut self,
        params: &Params,
        grads: &BTreeMap<String, Tensor>,
        lr: f64,
        decay_on: bool,
    ) -> Result<(), TrainError> {
        self.step_with(params, grads, lr, decay_on, true)
    }

    /// [`AdamW::step`] with the fused CPU pass allowed or not (`fused` = false: composed
    /// candle ops only, the reference of the fused pass).
    pub fn step_with(
        &mut self,
        params: &Params,
        grads: &BTreeMap<String, Tensor>,
        lr: f64,
        decay_on: bool,
        fused: bool,
    ) -> Result<(), TrainError> {
        self.step += 1;
        let t = self.step as i32;
        let AdamWParams {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.hp;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2 = 1.0 - beta2.powi(t);
        for (name, var) in params.iter() {
            let Some(g) = grads.get(name) else { continue };
            // Moments must not hold a graph (see `collect_grads`), whatever the caller passes.
            let g = &g.detach();
            let mo = self
                .moments
                .get_mut(name)
                .ok_or_else(|| TrainError::Checkpoint(format!("no moments for `{name}`")))?;
            let decayed =
                decay_on && weight_decay > 0.0 && self.decay.get(name).copied().unwrap_or(true);
            // The scalars as candle's `affine` rounds them (`Tensor * f64` is `affine(x, 0)`,
            // `Tensor / f64` is `affine(1 / x, 0)`, `Tensor + f64` is `affine(1, x)`).
            let k = super::optim_fused::Coeffs {
                beta1: beta1 as f32,
                one_minus_beta1: (1.0 - beta1) as f32,
                beta2: beta2 as f32,
                one_minus_beta2: (1.0 - beta2) as f32,
                decay: decayed.then_some((1.0 - lr * weight_decay) as f32),
                inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                eps: eps as f32,
                step: (lr / bc1) as f32,
            };
            if fused
                && super::optim_fused::update(var.as_tensor(), &mo.m, &mo.v, &g.contiguous()?, &k)?
            {
                continue;
            }
            let m = ((&mo.m * beta1)? + (g * (1.0 - beta1))?)?;
            let v = ((&mo.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let mut p = var.as_tensor().clone();
            if decayed {
                p = (p * (1.0 - lr * weight_decay))?;
            }
            let denom = ((v.sqrt()? / bc2.sqrt())? + eps)?;
            let upd = ((&m / denom)? * (lr / bc1))?;
            var.set(&(p - upd)?)?;
            mo.m = m;
            mo.v = v;
        }
        Ok(())
    }
}

/// Gradients of every parameter from a backward pass (zeros where a parameter got none),
/// detached: a weight's gradient is computed from the forward pass's activations, and kept
/// attached it would hold that step's whole graph alive through the optimiser's moments, one more
/// graph every step (a leak of the forward's size per step).
pub fn collect_grads(
    params: &Params,
    grads: &GradStore,
) -> Result<BTreeMap<String, Tensor>, TrainError> {
    let mut out = BTreeMap::new();
    for (name, var) in params.iter() {
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.detach(),
            None => var.as_tensor().zeros_like()?.detach(),
        };
        out.insert(name.clone(), g);
    }
    Ok(out)
}

/// Add `more` into `acc` (gradient accumulation).
pub fn accumulate(
    acc: &mut BTreeMap<String, Tensor>,
    more: BTreeMap<String, Tensor>,
) -> Result<(), TrainError> {
    for (name, g) in more {
        let sum = match acc.remove(&name) {
            Some(a) => (a + g)?,
            None => g,
        };
        acc.insert(name, sum);
    }
    Ok(())
}

/// The global L2 norm of all gradients; when `max_norm` > 0 and the norm exceeds it, every
/// gradient is scaled by `max_norm / (norm + 1e-6)` (torch's `clip_grad_norm_`). Returns the
/// norm before clipping.
pub fn clip_grad_norm(
    grads: &mut BTreeMap<String, Tensor>,
    max_norm: f64,
) -> Result<f64, TrainError> {
    let mut sq = 0f64;
    for g in grads.values() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

/// Learning rate at `step` (0-based) of `total` steps for peak `lr`, and whether weight decay is
/// on at that step.
pub fn lr_at(s: &ScheduleSection, lr: f64, step: u64, total: u64) -> (f64, bool) {
    if step < s.warmup {
        return (lr * (step + 1) as f64 / s.warmup as f64, true);
    }
    let min = lr * s.min_lr_ratio;
    let span = total.saturating_sub(s.warmup).max(1) as f64;
    let frac = ((step - s.warmup) as f64 / span).clamp(0.0, 1.0);
    match s.decay {
        DecayKind::Constant => (lr, true),
        DecayKind::Linear => (lr + (min - lr) * frac, true),
        DecayKind::Cosine => (
            min + 0.5 * (lr - min) * (1.0 + (std::f64::consts::PI * frac).cos()),
            true,
        ),
        DecayKind::TwoStage => {
            let split = s.stage2_at;
            if frac < split {
                // Stage 1: linear from the peak towards the stage-2 start.
                let end = lr * (s.stage2_ratio + 0.5 * (1.0 - s.stage2_ratio));
                (lr + (end - lr) * frac / split.max(1e-9), true)
            } else {
                let start = lr * s.stage2_ratio;
                let f2 = (frac - split) / (1.0 - split).max(1e-9);
                (start + (min - start) * f2, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// A weight's gradient is built from the forward's activations; the optimiser must not keep
    /// that graph (it did: one forward graph more per step, a codec run grew by 8 MB a step).
    #[test]
    fn gradients_and_moments_hold_no_graph() {
        let w = Var::from_vec(vec![0.5f32, -0.25, 1.0, 2.0], (2, 2), &Device::Cpu).unwrap();
        let mut params = Params::new();
        params.insert_var("w", w.clone());
        let x = Tensor::new(&[[1f32, 2.0], [3.0, -1.0]], &Device::Cpu).unwrap();
        let hidden = x.matmul(w.as_tensor()).unwrap().tanh().unwrap();
        let loss = hidden
            .matmul(w.as_tensor())
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let store = loss.backward().unwrap();
        assert!(
            store.get(w.as_tensor()).unwrap().track_op(),
            "candle's raw gradient carries the graph (the reason for detaching)"
        );
        let grads = collect_grads(&params, &store).unwrap();
        assert!(grads.values().all(|g| !g.track_op()));
        let hp = AdamWParams {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = AdamW::new(&params, hp, |_| true).unwrap();
        // Even gradients passed in attached leave the moments free of any graph.
        let attached: BTreeMap<String, Tensor> =
            [("w".to_string(), store.get(w.as_tensor()).unwrap().clone())].into();
        opt.step(&params, &attached, 0.1, true).unwrap();
        let mo = &opt.moments["w"];
        assert!(!mo.m.track_op() && !mo.v.track_op());
    }

    fn sched(decay: DecayKind) -> ScheduleSection {
        ScheduleSection {
            warmup: 10,
            decay,
            min_lr_ratio: 0.1,
            stage2_at: 0.5,
            stage2_ratio: 0.4,
        }
    }

    #[test]
    fn schedules_hit_their_endpoints() {
        for d in [DecayKind::Cosine, DecayKind::Linear] {
            let s = sched(d);
            assert!((lr_at(&s, 1.0, 0, 110).0 - 0.1).abs() < 1e-12);
            assert!((lr_at(&s, 1.0, 9, 110).0 - 1.0).abs() < 1e-12);
            assert!((lr_at(&s, 1.0, 10, 110).0 - 1.0).abs() < 1e-12);
            assert!((lr_at(&s, 1.0, 110, 110).0 - 0.1).abs() < 1e-12);
        }
        let s = sched(DecayKind::Cosine);
        // Midpoint of a cosine is the mean of the ends.
        assert!((lr_at(&s, 1.0, 60, 110).0 - 0.55).abs() < 1e-12);
        let s = sched(DecayKind::TwoStage);
        let (a, wa) = lr_at(&s, 1.0, 59, 110);
        let (b, wb) = lr_at(&s, 1.0, 60, 110);
        assert!(wa && !wb, "weight decay switches off in stage 2");
        assert!(a > b && (b - 0.4).abs() < 1e-12, "{a} {b}");
    }

    #[test]
    fn adamw_matches_scalar_statement() {
        let dev = Device::Cpu;
        let mut p = Params::new();
        p.insert("w", Tensor::new(&[0.5f32, -1.0, 2.0], &dev).unwrap())
            .unwrap();
        p.insert("norm.weight", Tensor::new(&[1.0f32], &dev).unwrap())
            .unwrap();
        let hp = AdamWParams {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(&p, hp, default_decay).unwrap();
        let gs = [[0.1f32, -0.2, 0.3], [0.05, 0.4, -0.1]];
        // Scalar reference.
        let mut w = [0.5f64, -1.0, 2.0];
        let (mut m, mut v) = ([0f64; 3], [0f64; 3]);
        let mut nw = 1.0f64;
        let (mut nm, mut nv) = (0f64, 0f64);
        for (t, g) in gs.iter().enumerate() {
            let lr = 0.01;
            let mut grads = BTreeMap::new();
            grads.insert("w".to_string(), Tensor::new(g, &dev).unwrap());
            grads.insert(
                "norm.weight".to_string(),
                Tensor::new(&[g[0]], &dev).unwrap(),
            );
            opt.step(&p, &grads, lr, true).unwrap();
            let tt = (t + 1) as i32;
            let (bc1, bc2) = (1.0 - 0.9f64.powi(tt), 1.0 - 0.95f64.powi(tt));
            for i in 0..3 {
                let gi = g[i] as f64;
                m[i] = 0.9 * m[i] + 0.1 * gi;
                v[i] = 0.95 * v[i] + 0.05 * gi * gi;
                w[i] *= 1.0 - lr * 0.1;
                w[i] -= lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + 1e-8);
            }
            let gi = g[0] as f64;
            nm = 0.9 * nm + 0.1 * gi;
            nv = 0.95 * nv + 0.05 * gi * gi;
            nw -= lr / bc1 * nm / (nv.sqrt() / bc2.sqrt() + 1e-8); // no decay on norms
        }
        let got = p.get("w").unwrap().as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..3 {
            assert!(
                (got[i] as f64 - w[i]).abs() < 1e-6,
                "{} vs {}",
                got[i],
                w[i]
            );
        }
        let gn = p
            .get("norm.weight")
            .unwrap()
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        assert!((gn[0] as f64 - nw).abs() < 1e-6);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let dev = Device::Cpu;
        let mut g = BTreeMap::new();
        g.insert("a".to_string(), Tensor::new(&[3f32, 0.0], &dev).unwrap());
        g.insert("b".to_string(), Tensor::new(&[4f32], &dev).unwrap());
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let n2 = clip_grad_norm(&mut g, 0.0).unwrap();
        assert!((n2 - 1.0).abs() < 1e-5, "{n2}");
    }
}
