//! The curriculum loop of `task = "latent"` (see `latent.rs` for the sequences and the loss):
//! stages `0..=S` in order, each a run of AdamW steps over batches drawn in a seeded permutation
//! per epoch; at the start of every stage after the first the optimiser's moments are reset when
//! `[latent] reset_optimizer` is set (the reference resets them at every stage), and the learning
//! rate schedule restarts with them. With `mix_prob` an example of stage `s > 0` is built at a
//! stage drawn uniformly from `0..s` instead. Works with ternary QAT (straight-through) like the
//! other answer-trained tasks: `[train] qat = "full_precision"` trains full-precision linears,
//! anything else the ternary forward.
//!
//! Must match: a curriculum run equals its stages run one after another from the same weights,
//! each with a fresh optimiser (test), so the stage switch is exactly a reset. The data order and
//! the mixing of a stage are a pure function of (seed, stage, step), so a run resumed from a
//! checkpoint of its weights and moments after any step ([`LatentRun::train_from`]) equals the
//! run never stopped, inside a stage and across a stage switch (test).

use super::config::QatMode;
use super::latent::{
    latent_loss, stage_sequence, text_model, LatentConfig, LatentIds, LatentProblem, StageSequence,
};
use super::optim::{self, AdamW, AdamWParams};
use super::TrainError;
use crate::config::Config;
use crate::weights::Params;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};

/// One logged step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatentStep {
    pub stage: usize,
    /// Step within the stage, from 1.
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Tokens in the step's batch (thought slots included).
    pub tokens: u64,
}

/// What a curriculum run trains: the text model's config and parameters, the run's config, the
/// tokenised problems and the marker ids.
pub struct LatentRun<'a> {
    pub text_cfg: &'a Config,
    pub params: &'a Params,
    pub cfg: &'a LatentConfig,
    pub problems: &'a [LatentProblem],
    pub ids: LatentIds,
}

impl LatentRun<'_> {
    /// A fresh AdamW over every parameter (norms and embeddings not decayed).
    pub fn optimizer(&self) -> Result<AdamW, TrainError> {
        let o = &self.cfg.optim;
        let hp = AdamWParams {
            beta1: o.betas[0],
            beta2: o.betas[1],
            eps: o.eps,
            weight_decay: o.weight_decay,
        };
        AdamW::new(self.params, hp, optim::default_decay)
    }

    /// Optimiser steps of one stage: `[train] steps`, or `epochs_per_stage` epochs of batches.
    pub fn stage_steps(&self) -> u64 {
        let l = &self.cfg.latent;
        if l.epochs_per_stage == 0 {
            return self.cfg.train.steps;
        }
        let bs = self.cfg.train.batch_size.max(1);
        (l.epochs_per_stage * self.problems.len()).div_ceil(bs) as u64
    }

    /// Runs every stage in order; `on_step` sees every step; `stop` ends the run early.
    /// Returns the losses of all stages.
    pub fn train(
        &self,
        stop: &AtomicBool,
        mut on_step: impl FnMut(&LatentStep),
    ) -> Result<Vec<f64>, TrainError> {
        let mut adam = self.optimizer()?;
        self.train_from(&mut adam, 0, stop, &mut |s, _| {
            on_step(s);
            Ok(())
        })
    }

    /// Where the run is after `done` optimiser steps over all stages: `(stage, steps done in
    /// it)`; past the last stage when the run is complete.
    pub fn place(&self, done: u64) -> (usize, u64) {
        let per = self.stage_steps().max(1);
        ((done / per) as usize, done % per)
    }

    /// Optimiser steps in `AdamW`'s count after `done` steps over all stages: those of the
    /// current stage when every stage resets the moments, else all of them.
    pub fn adam_steps(&self, done: u64) -> u64 {
        if self.cfg.latent.reset_optimizer {
            self.place(done).1
        } else {
            done
        }
    }

    /// Runs the curriculum from `done` steps completed (0 for a fresh run; a resumed run passes
    /// its checkpoint's count and an `adam` restored to [`adam_steps`](Self::adam_steps)).
    /// `on_step` sees every step with the optimiser after it (to checkpoint) and may fail the
    /// run. Returns the losses of the steps run.
    pub fn train_from(
        &self,
        adam: &mut AdamW,
        done: u64,
        stop: &AtomicBool,
        on_step: &mut dyn FnMut(&LatentStep, &AdamW) -> Result<(), TrainError>,
    ) -> Result<Vec<f64>, TrainError> {
        self.cfg.validate()?;
        let (first, from) = self.place(done);
        let mut losses = vec![];
        for stage in first..=self.cfg.latent.stages {
            let from = if stage == first { from } else { 0 };
            if stage > 0 && from == 0 && self.cfg.latent.reset_optimizer {
                *adam = self.optimizer()?;
            }
            losses.extend(self.train_stage_from(stage, from, adam, stop, on_step)?);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        Ok(losses)
    }

    /// The sequences of one step's batch at `stage`: the batch of `step` in the stage's seeded
    /// order, each built at its own stage (`stage`, or an earlier one with `mix_prob`).
    pub fn batch(&self, stage: usize, step: u64) -> Vec<StageSequence> {
        let n = self.problems.len();
        let bs = self.cfg.train.batch_size.max(1);
        let per_epoch = n.div_ceil(bs) as u64;
        let epoch = step / per_epoch;
        let seed = self.cfg.run.seed
            ^ (stage as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let first = (step % per_epoch) as usize * bs;
        let picked = &order[first..(first + bs).min(n)];
        // The mixing draws come after the permutation, one per example of the epoch, so a batch
        // depends on (seed, stage, step) only.
        let mix: Vec<usize> = (0..n)
            .map(|_| {
                let p: f64 = rng.random();
                if stage > 0 && p < self.cfg.latent.mix_prob {
                    rng.random_range(0..stage)
                } else {
                    stage
                }
            })
            .collect();
        let c = self.cfg.latent.thoughts_per_step;
        picked
            .iter()
            .map(|&i| stage_sequence(&self.problems[i], mix[i], c, &self.ids))
            .collect()
    }

    /// One stage's steps with `adam` (which the caller resets or not); returns its losses.
    pub fn train_stage(
        &self,
        stage: usize,
        adam: &mut AdamW,
        stop: &AtomicBool,
        on_step: &mut dyn FnMut(&LatentStep),
    ) -> Result<Vec<f64>, TrainError> {
        self.train_stage_from(stage, 0, adam, stop, &mut |s, _| {
            on_step(s);
            Ok(())
        })
    }

    /// The steps `from..` of one stage (see [`train_from`](Self::train_from)).
    pub fn train_stage_from(
        &self,
        stage: usize,
        from: u64,
        adam: &mut AdamW,
        stop: &AtomicBool,
        on_step: &mut dyn FnMut(&LatentStep, &AdamW) -> Result<(), TrainError>,
    ) -> Result<Vec<f64>, TrainError> {
        if self.problems.is_empty() {
            return Err(TrainError::Config("[data] train: no problems".into()));
        }
        let steps = self.stage_steps();
        let ternary = self.cfg.train.qat != QatMode::FullPrecision;
        let mut losses = vec![];
        for step in from..steps {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let seqs = self.batch(stage, step);
            let refs: Vec<&StageSequence> = seqs.iter().collect();
            let (lr, decay_on) = optim::lr_at(&self.cfg.schedule, self.cfg.optim.lr, step, steps);
            let text = text_model(self.text_cfg, self.params, ternary)?;
            let l = latent_loss(&text, &refs)?;
            let lv = l.to_scalar::<f32>()? as f64;
            let tokens = seqs.iter().map(|s| s.ids.len() as u64).sum();
            if !lv.is_finite() {
                return Err(TrainError::Config(format!(
                    "loss became {lv} at stage {stage}, step {step}"
                )));
            }
            let grads = l.backward()?;
            let mut g = optim::collect_grads(self.params, &grads)?;
            let grad_norm = optim::clip_grad_norm(&mut g, self.cfg.train.grad_clip)?;
            adam.step(self.params, &g, lr, decay_on)?;
            losses.push(lv);
            on_step(
                &LatentStep {
                    stage,
                    step: step + 1,
                    loss: lv,
                    lr,
                    grad_norm,
                    tokens,
                },
                adam,
            )?;
        }
        Ok(losses)
    }
}
