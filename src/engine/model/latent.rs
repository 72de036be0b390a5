//! Coconut latent mode in the chat engine: which mode a reply gets (`/latent on|off|auto` against
//! the checkpoint's `latent.json`), the latent answer itself
//! (`tritter_model::latent::generate_latent_gated` with the spec's `S·c` thoughts, on the CPU
//! path or on the GPU decoder, which returns the final hidden state too), each thought rounded
//! to its 3 nearest token embeddings by cosine and sent as a `GenEvent::Thought`, and the
//! confidence signal that decides whether the chain is trusted.
//!
//! **The confidence signal** is the top-1 cosine of the chain's weakest thought: every thought is
//! rounded to the token embeddings nearest to it by cosine similarity (what the UI shows), and
//! the chain counts as degraded when any thought's nearest token is less similar than
//! `latent_min_cosine` (config; a thought with no direction, a zero or non-finite vector, counts
//! as cosine 0). Coconut's thoughts on its reasoning task sit near the tokens of the concepts
//! they hold (the frontier of the search); a thought near no token at all is one the rounding
//! cannot read, and the chain is then not trusted. It is decided once every thought is fed and
//! before any answer token is sampled: `auto` then answers in token mode instead, with a notice
//! that names the thought and its score; `on` answers in latent mode anyway with the same
//! notice. The default threshold is not calibrated on a latent-trained model (none is committed
//! yet); 0 turns the check off, and a value above 1 makes every chain count as degraded.

use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tritter_model::latent::{
    generate_latent_gated, LatentOptions, LatentSpec, ThoughtRounder, SPEC_FILE,
};
use tritter_model::{segments_len, CpuModel, Decoder, StopReason};

use super::stream::TextStream;
use super::ModelEngine;
use crate::engine::{GenEvent, GenRequest, LatentMode, ThoughtToken};

/// Candidates shown per thought.
pub const CANDIDATES: usize = 3;

/// What the engine keeps for latent mode.
#[derive(Default)]
pub(super) struct LatentState {
    /// The checkpoint's `latent.json`; `None` when it was not latent-trained.
    pub spec: Option<LatentSpec>,
    /// The embedding table with its norms, built on the first latent reply.
    rounder: Option<ThoughtRounder>,
    /// `auto` has said once why it answers in token mode.
    auto_noticed: bool,
}

impl ModelEngine {
    /// Declares the model latent-trained as `spec` says.
    pub fn with_latent(mut self, spec: LatentSpec) -> Self {
        self.latent.spec = Some(spec);
        self.info.latent = Some(spec);
        self.info.description.push_str(&format!(
            "; latent-trained ({} thoughts per step, {} stages: {} thoughts per reply)",
            spec.thoughts_per_step,
            spec.stages,
            spec.max_thoughts()
        ));
        self
    }

    /// The ids of `<bot>` and `<eot>`, when the tokenizer has them.
    pub(super) fn thought_ids(&self) -> Option<(u32, u32)> {
        Some((
            self.tokenizer.token_to_id("<bot>")?,
            self.tokenizer.token_to_id("<eot>")?,
        ))
    }

    /// How many continuous thoughts a reply in `mode` gets, `None` for token mode; an error when
    /// `on` cannot be honoured. `auto` says once (a notice) why it answers in token mode.
    pub(super) fn latent_plan(
        &mut self,
        mode: LatentMode,
        sink: &mut dyn FnMut(GenEvent),
    ) -> Result<Option<usize>> {
        let name = &self.info.model_name;
        let why_not = match self.latent.spec {
            Some(s) => {
                if self.thought_ids().is_none() {
                    bail!("{name} has a {SPEC_FILE} but its tokenizer has no <bot>/<eot> tokens");
                }
                return Ok((mode != LatentMode::Off).then_some(s.max_thoughts()));
            }
            None => format!("{name} was not latent-trained (it has no {SPEC_FILE})"),
        };
        match mode {
            LatentMode::Off => Ok(None),
            LatentMode::On => {
                bail!(
                    "latent reasoning mode: {why_not}; use /latent off or auto (-p: --latent off)"
                )
            }
            LatentMode::Auto => {
                if !self.latent.auto_noticed {
                    self.latent.auto_noticed = true;
                    sink(GenEvent::Notice(format!(
                        "latent auto: {why_not}, so it answers in token mode"
                    )));
                }
                Ok(None)
            }
        }
    }

    /// Answers in latent mode with `thoughts` thoughts; `false` (nothing streamed but the
    /// thoughts and a notice) when `auto`'s confidence signal declined the chain.
    pub(super) fn answer_latent(
        &mut self,
        req: &GenRequest,
        thoughts: usize,
        t0: Instant,
        cancel: &AtomicBool,
        sink: &mut dyn FnMut(GenEvent),
    ) -> Result<bool> {
        let (bot, eot) = self
            .thought_ids()
            .context("the tokenizer has no <bot>/<eot> tokens")?;
        let prompt = self.prompt_segments(req)?;
        let prompt_len = segments_len(&prompt, self.model.config().hidden_size) + thoughts + 2;
        sink(GenEvent::Prompt { tokens: prompt_len });
        let opts = self.options(req, self.info.context_limit.saturating_sub(prompt_len));
        // Built on the first latent reply and kept (an early error return only rebuilds it).
        let rounder = match self.latent.rounder.take() {
            Some(r) => r,
            None => ThoughtRounder::from_model(&self.model)?,
        };
        let mut cpu;
        let decoder: &mut dyn Decoder = match self.decoder.as_mut() {
            Some(d) => d.as_mut(),
            None => {
                cpu = CpuModel::new(&self.model)?;
                &mut cpu
            }
        };
        let tokenizer = &*self.tokenizer;
        let sink = RefCell::new(sink);
        let emit = |ev: GenEvent| {
            let mut f = sink.borrow_mut();
            (*f)(ev)
        };
        let weakest: Cell<Option<(usize, f32)>> = Cell::new(None);
        let declined = Cell::new(false);
        let mut index = 0;
        let on_thought = |h: &[f32]| {
            let candidates = round(&rounder, tokenizer, h);
            let top = candidates.first().map_or(0.0, |c| c.score);
            if weakest.get().is_none_or(|(_, s)| top < s) {
                weakest.set(Some((index, top)));
            }
            emit(GenEvent::Thought { index, candidates });
            index += 1;
        };
        let gate = |_: &[f32]| {
            let Some(why) = degraded(weakest.get(), req.latent_min_cosine) else {
                return ControlFlow::Continue(());
            };
            if req.latent == LatentMode::Auto {
                emit(GenEvent::Notice(format!(
                    "{why}; latent auto answers in token mode instead"
                )));
                declined.set(true);
                ControlFlow::Break(())
            } else {
                emit(GenEvent::Notice(format!(
                    "{why}; answering in latent mode anyway (/latent auto would fall back)"
                )));
                ControlFlow::Continue(())
            }
        };
        let mut text = TextStream::new(tokenizer, t0);
        let latent = LatentOptions { thoughts, bot, eot };
        let out = generate_latent_gated(
            decoder,
            &prompt,
            &latent,
            &opts,
            cancel,
            on_thought,
            gate,
            |id| text.push(id, &mut |ev| emit(ev)),
        )?;
        let declined = declined.get() && out.stats.stop == StopReason::Callback;
        if !declined {
            text.finish(&out.stats, out.thoughts.len(), &mut |ev| emit(ev))?;
        }
        self.latent.rounder = Some(rounder);
        Ok(!declined)
    }
}

/// A thought's nearest tokens with their text; none when it has no direction to round.
fn round(
    rounder: &ThoughtRounder,
    tokenizer: &tokenizers::Tokenizer,
    h: &[f32],
) -> Vec<ThoughtToken> {
    rounder
        .nearest(h, CANDIDATES)
        .unwrap_or_default()
        .into_iter()
        .map(|(id, score)| ThoughtToken {
            token: tokenizer
                .decode(&[id], false)
                .unwrap_or_else(|_| format!("#{id}")),
            id,
            score,
        })
        .collect()
}

/// Why the chain counts as degraded, given its weakest thought (index, top-1 cosine) and the
/// threshold; `None` when it does not (or the check is off: a threshold of 0 or below).
pub fn degraded(weakest: Option<(usize, f32)>, min_cosine: f32) -> Option<String> {
    let (i, s) = weakest?;
    (min_cosine > 0.0 && s < min_cosine).then(|| {
        format!(
            "latent chain looks degraded: thought {}'s nearest token has cosine {s:.2}, under latent_min_cosine {min_cosine:.2}",
            i + 1
        )
    })
}

#[cfg(test)]
mod tests;
