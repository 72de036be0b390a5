//! Training Coconut latent mode (`task = "latent"`; Hao et al. 2024, facebookresearch/coconut):
//! a curriculum over problems `{question, steps, answer}` in which stage `s` replaces the first
//! `s` written reasoning steps with `s × c` continuous thoughts.
//!
//! A stage-`s` sequence is `question <bot> [thought slot × s·c] <eot> steps[s..] answer`, as the
//! reference builds it (its `<bot>`/`<eot>` stand at stage 0 too, around no thought). The loss is
//! the next-token cross-entropy of the remaining written steps and the answer only; the question,
//! the markers and the thoughts carry none. Thought `i` is the final hidden state (after the final
//! norm, before the LM head — the state the inference loop in `crate::latent` feeds) at the
//! position before its slot, computed by a forward pass over everything before it; so a chain of
//! `k` thoughts costs `k` sequential passes and one more for the rest, and gradients flow through
//! every one of them (nothing is detached). As in the reference, the passes share a KV cache
//! ([`TensorKvCache`], differentiable: its keys and values stay in the graph), so each pass runs
//! only its new rows.
//!
//! Must match: the loss equals the same chain computed by hand with full (non-cached) forward
//! passes, and its gradient equals finite differences through a 2-thought chain (tests).
//! The curriculum loop (optimiser reset per stage, mixing earlier stages) is in `latent_loop.rs`.

use super::config::{CheckpointSection, ModelSection, OptimSection, RunSection, ScheduleSection};
use super::image_text::{ImageDataSection, ImageTrainSection};
use super::{FullPrecision, TrainError};
use crate::config::Config;
use crate::transformer::{cross_entropy, TensorKvCache, Transformer};
use crate::vocab::{Special, VocabLayout};
use crate::weights::Params;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::Path;

/// `[latent]`: the curriculum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatentSection {
    /// Continuous thoughts per replaced step (`c`). Default 1 (the reference's ProsQA setting).
    pub thoughts_per_step: usize,
    /// Last stage `S`: stages `0..=S` run in order; stage `s` replaces `min(s, steps)` written
    /// steps. Default 4.
    pub stages: usize,
    /// Epochs per stage; when 0, each stage runs `train.steps` optimiser steps. Default 0.
    pub epochs_per_stage: usize,
    /// Fresh AdamW moments at the start of every stage (the reference's `reset_optimizer`).
    /// Default true.
    pub reset_optimizer: bool,
    /// Probability that an example of stage `s > 0` is built at an earlier stage instead, drawn
    /// uniformly from `0..s`. Default 0.
    pub mix_prob: f64,
}

impl Default for LatentSection {
    fn default() -> Self {
        Self {
            thoughts_per_step: 1,
            stages: 4,
            epochs_per_stage: 0,
            reset_optimizer: true,
            mix_prob: 0.0,
        }
    }
}

/// The whole `task = "latent"` config. `[train] steps` is the optimiser steps of each stage
/// (unless `[latent] epochs_per_stage` is set); `[data]` names JSONL files of
/// `{question, steps, answer}` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentConfig {
    pub task: String,
    #[serde(default)]
    pub run: RunSection,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub train: ImageTrainSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub schedule: ScheduleSection,
    #[serde(default)]
    pub data: ImageDataSection,
    #[serde(default)]
    pub latent: LatentSection,
    /// `[checkpoint]`: resumable state under `RUN/checkpoints/` every `every` steps (counted
    /// over all stages) and at the end of every stage.
    #[serde(default)]
    pub checkpoint: CheckpointSection,
}

impl LatentConfig {
    /// Checks what the curriculum needs.
    pub fn validate(&self) -> Result<(), TrainError> {
        let l = &self.latent;
        if l.thoughts_per_step == 0 {
            return Err(TrainError::Config(
                "[latent] thoughts_per_step must be > 0".into(),
            ));
        }
        if !(0.0..=1.0).contains(&l.mix_prob) {
            return Err(TrainError::Config(format!(
                "[latent] mix_prob {} is not a probability",
                l.mix_prob
            )));
        }
        if self.train.batch_size == 0 || (self.train.steps == 0 && l.epochs_per_stage == 0) {
            return Err(TrainError::Config(
                "train.batch_size and train.steps (or latent.epochs_per_stage) must be > 0".into(),
            ));
        }
        if self.checkpoint.keep == 0 {
            return Err(TrainError::Config(
                "checkpoint.keep must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// One record of the data: the question, the written reasoning steps, the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentRecord {
    pub question: String,
    pub steps: Vec<String>,
    pub answer: String,
}

/// Reads a JSONL file of [`LatentRecord`]s (blank lines skipped).
pub fn read_records(path: &Path) -> Result<Vec<LatentRecord>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r = serde_json::from_str(line).map_err(|e| {
            TrainError::Config(format!(
                "{}:{}: not a {{question, steps, answer}} record: {e}",
                path.display(),
                i + 1
            ))
        })?;
        out.push(r);
    }
    if out.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: no records",
            path.display()
        )));
    }
    Ok(out)
}

/// A record as token ids: the prompt (everything before `<bot>`), each step, the answer (with
/// whatever ends the reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatentProblem {
    pub question: Vec<u32>,
    pub steps: Vec<Vec<u32>>,
    pub answer: Vec<u32>,
}

/// The ids of `<bot>`, `<eot>` and `<latent>` (the placeholder in a thought's slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatentIds {
    pub bot: u32,
    pub eot: u32,
    pub latent: u32,
}

impl LatentIds {
    pub fn new(layout: &VocabLayout) -> Self {
        Self {
            bot: layout.special_id(Special::BeginThought),
            eot: layout.special_id(Special::EndThought),
            latent: layout.special_id(Special::Latent),
        }
    }
}

/// One training sequence of a stage: `ids` with `<latent>` in the thought slots
/// `bot + 1 .. bot + 1 + thoughts`, and the positions of `ids` the loss covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSequence {
    pub ids: Vec<u32>,
    /// Position of `<bot>`.
    pub bot: usize,
    pub thoughts: usize,
    pub labels: Range<usize>,
}

/// The sequence of `p` at `stage` with `c` thoughts per replaced step.
pub fn stage_sequence(p: &LatentProblem, stage: usize, c: usize, ids: &LatentIds) -> StageSequence {
    let skip = stage.min(p.steps.len());
    let thoughts = skip * c;
    let mut seq = p.question.clone();
    let bot = seq.len();
    seq.push(ids.bot);
    seq.extend(std::iter::repeat_n(ids.latent, thoughts));
    seq.push(ids.eot);
    let start = seq.len();
    for s in &p.steps[skip..] {
        seq.extend_from_slice(s);
    }
    seq.extend_from_slice(&p.answer);
    let end = seq.len();
    StageSequence {
        ids: seq,
        bot,
        thoughts,
        labels: start..end,
    }
}

/// The text model of `params` for a loss: ternary (QAT, straight-through) or full precision.
pub fn text_model(cfg: &Config, params: &Params, ternary: bool) -> Result<Transformer, TrainError> {
    let device = match params.iter().next() {
        Some((_, v)) => v.as_tensor().device().clone(),
        None => return Err(TrainError::Config("the model has no parameters".into())),
    };
    Ok(if ternary {
        Transformer::load(cfg, &mut &*params, &device)?
    } else {
        Transformer::load(cfg, &mut FullPrecision(params), &device)?
    })
}

/// Mean cross-entropy over the labelled positions of `batch` (differentiable), each sequence's
/// thoughts computed by sequential forward passes as the module docs say.
pub fn latent_loss(text: &Transformer, batch: &[&StageSequence]) -> Result<Tensor, TrainError> {
    chain_loss(text, batch, false)
}

/// [`latent_loss`]; `detach` cuts the gradient at every thought (only to show, in tests, that
/// the chain's gradient matters).
pub(crate) fn chain_loss(
    text: &Transformer,
    batch: &[&StageSequence],
    detach: bool,
) -> Result<Tensor, TrainError> {
    let device = text.device().clone();
    let (mut rows, mut targets) = (vec![], vec![]);
    for s in batch {
        let t = s.ids.len();
        let rest = s.bot + 1 + s.thoughts;
        if s.labels.start < 1 || s.labels.start < rest || s.labels.end > t || rest > t {
            return Err(TrainError::Config(format!(
                "a latent sequence of {t} ids has labels {:?} and thoughts up to {rest}",
                s.labels
            )));
        }
        if s.labels.is_empty() {
            continue;
        }
        let ids = Tensor::from_slice(&s.ids, (1, t), &device)?;
        let emb = text.embed(&ids)?;
        // Rows not yet run: the question and `<bot>`, then each thought in turn, then the
        // thought before `<eot>` with everything after it; the cache holds the rest (its keys
        // and values stay in the graph, so gradients reach every earlier pass).
        let mut cache = TensorKvCache::new(text.config().num_layers);
        let mut pending = emb.narrow(1, 0, s.bot + 1)?;
        for _ in 0..s.thoughts {
            let h = text.hidden_tensor_cache(&pending, &mut cache)?;
            let last = h.narrow(1, h.dim(1)? - 1, 1)?.to_dtype(emb.dtype())?;
            pending = if detach { last.detach() } else { last };
        }
        if rest < t {
            pending = Tensor::cat(&[&pending, &emb.narrow(1, rest, t - rest)?], 1)?;
        }
        let from = cache.len();
        let h = text.hidden_tensor_cache(&pending, &mut cache)?;
        let n = s.labels.len();
        let logits = text.logits_from_hidden(&h.narrow(1, s.labels.start - 1 - from, n)?)?;
        rows.push(logits.squeeze(0)?);
        targets.extend_from_slice(&s.ids[s.labels.clone()]);
    }
    if rows.is_empty() {
        return Err(TrainError::Config(
            "a latent batch with nothing to predict".into(),
        ));
    }
    let logits = Tensor::cat(&rows, 0)?;
    let tg = Tensor::from_slice(&targets, targets.len(), &device)?;
    Ok(cross_entropy(&logits.contiguous()?, &tg)?)
}

#[cfg(test)]
mod tests;
