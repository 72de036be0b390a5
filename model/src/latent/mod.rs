//! Coconut latent mode (Hao et al. 2024, "Training Large Language Models to Reason in a
//! Continuous Latent Space"; reference: facebookresearch/coconut) at inference: after `<bot>` the
//! last position's final hidden state is fed back as the next input embedding for `k` steps
//! ("continuous thoughts": the KV cache grows by one position per thought and no token is
//! sampled), then `<eot>` is fed and decoding continues as usual ([`generate_latent`]; [`generate_latent_gated`]
//! lets the caller decline to answer once the chain is done).
//!
//! The state fed back is the final hidden state *after the final norm, before the LM head*: the
//! reference feeds `outputs.hidden_states[-1]` of a HF GPT-2, whose last entry is taken after the
//! final layer norm `ln_f`. The training path (`train::latent`) feeds the same state.
//!
//! Must match: with `k = 0` it equals token mode on the prompt followed by `<bot>` and `<eot>`
//! bit for bit; one latent step equals the full (non-cached) candle forward over the prompt's
//! embeddings with the fed state appended as one more row (tests below). [`round`] turns a
//! thought into its nearest token embeddings so a person can see what it holds.

pub mod round;

use crate::decoder::Decoder;
use crate::error::{Error, Result};
use crate::generation::{self, GenerateOptions, GenerationStats, Segment, StopReason};
use crate::vocab::{Special, VocabLayout};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub use round::{nearest_tokens, ThoughtRounder};

/// The file in a checkpoint directory that declares it latent-trained.
pub const SPEC_FILE: &str = "latent.json";

/// How a checkpoint was latent-trained (`latent.json` beside `config.json`): thoughts per
/// replaced step `c` and the last curriculum stage `S`. A checkpoint without the file was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentSpec {
    pub thoughts_per_step: usize,
    pub stages: usize,
}

impl LatentSpec {
    /// Thoughts for a problem of `steps` written steps, as the last stage was trained:
    /// `min(steps, S) · c`.
    pub fn thoughts_for(&self, steps: usize) -> usize {
        steps.min(self.stages) * self.thoughts_per_step
    }

    /// The most thoughts the last stage trained: `S · c`.
    pub fn max_thoughts(&self) -> usize {
        self.stages * self.thoughts_per_step
    }

    /// The spec of the checkpoint in `dir`, or `None` when it has no `latent.json`.
    pub fn load(dir: &std::path::Path) -> Result<Option<Self>> {
        let path = dir.join(SPEC_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// Writes `latent.json` into `dir` (a temporary file renamed over it).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        let path = dir.join(SPEC_FILE);
        let tmp = dir.join(format!("{SPEC_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("latent spec: {e}")))?;
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }
}

/// How many thoughts to think, and the ids that open and close them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatentOptions {
    /// Continuous thoughts fed back after `<bot>` (`k`; 0 runs `<bot><eot>` as plain tokens).
    pub thoughts: usize,
    /// The id of `<bot>`.
    pub bot: u32,
    /// The id of `<eot>`.
    pub eot: u32,
}

impl LatentOptions {
    /// `thoughts` thoughts between the `<bot>` and `<eot>` of `layout`.
    pub fn new(layout: &VocabLayout, thoughts: usize) -> Self {
        Self {
            thoughts,
            bot: layout.special_id(Special::BeginThought),
            eot: layout.special_id(Special::EndThought),
        }
    }
}

/// What a latent generation produced: the usual stats (the prompt's positions include `<bot>`,
/// the thoughts and `<eot>`; `generated` holds only sampled tokens) and every thought's vector,
/// `[C]` each, in the order they were fed.
#[derive(Debug, Clone)]
pub struct LatentGeneration {
    pub stats: GenerationStats,
    pub thoughts: Vec<Vec<f32>>,
}

/// Generates a continuation of `prompt` in latent mode on `model` (restarted first): the prompt's
/// segments, then `<bot>`, then `latent.thoughts` continuous thoughts, then `<eot>`, then tokens
/// sampled as [`generation::generate_segments`] samples them. `on_thought` sees each thought's
/// vector as it is fed; `on_token` each sampled token (`Break` stops).
pub fn generate_latent(
    model: &mut dyn Decoder,
    prompt: &[Segment],
    latent: &LatentOptions,
    opts: &GenerateOptions,
    cancel: &AtomicBool,
    on_thought: impl FnMut(&[f32]),
    on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<LatentGeneration> {
    generate_latent_gated(
        model,
        prompt,
        latent,
        opts,
        cancel,
        on_thought,
        |_| ControlFlow::Continue(()),
        on_token,
    )
}

/// [`generate_latent`] with a gate between the chain and the answer: once every thought is fed
/// and `<eot>` has given the logits `[V]` of the first answer token, `gate` sees them and
/// decides whether to answer. `Break` ends the generation there, before any token is sampled:
/// `stop` is then [`StopReason::Callback`] with nothing generated (the caller can answer another
/// way, e.g. in token mode, when its confidence signal says the chain degraded).
#[allow(clippy::too_many_arguments)]
pub fn generate_latent_gated(
    model: &mut dyn Decoder,
    prompt: &[Segment],
    latent: &LatentOptions,
    opts: &GenerateOptions,
    cancel: &AtomicBool,
    mut on_thought: impl FnMut(&[f32]),
    mut gate: impl FnMut(&[f32]) -> ControlFlow<()>,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<LatentGeneration> {
    model.start()?;
    let cfg = model.config();
    let (hidden, limit) = (cfg.hidden_size, cfg.max_position_embeddings);
    let len = generation::segments_len(prompt, hidden) + latent.thoughts + 2;
    if len > limit {
        return Err(Error::TooLong { len, limit });
    }
    let mut out = LatentGeneration {
        stats: GenerationStats::new(len),
        thoughts: Vec::with_capacity(latent.thoughts),
    };
    let t0 = Instant::now();
    let mut seen = vec![];
    generation::prefill(model, prompt, &mut seen)?;
    seen.push(latent.bot);
    let mut h = model.step_hidden(&[latent.bot])?;
    for _ in 0..latent.thoughts {
        if cancel.load(Ordering::Relaxed) {
            out.stats.stop = StopReason::Cancelled;
            out.stats.prefill_s = t0.elapsed().as_secs_f64();
            return Ok(out);
        }
        on_thought(&h);
        let next = model.step_embeds_hidden(h.clone())?;
        out.thoughts.push(std::mem::replace(&mut h, next));
    }
    seen.push(latent.eot);
    let logits = model.step(&[latent.eot])?;
    out.stats.prefill_s = t0.elapsed().as_secs_f64();
    if gate(&logits).is_break() {
        out.stats.stop = StopReason::Callback;
        return Ok(out);
    }
    generation::decode(
        model,
        logits,
        seen,
        opts,
        cancel,
        &mut on_token,
        &mut out.stats,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests;
