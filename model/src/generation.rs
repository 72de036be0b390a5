//! Autoregressive generation over any [`Decoder`] (the CPU inference path or the GPU model):
//! prefill the prompt into the KV cache, then decode token by token, streaming each token to a
//! callback, until a stop token, the token limit, the context limit, a cancellation flag or the
//! callback asks to stop.

pub use crate::decoder::Decoder;
use crate::error::Result;
use crate::infer::CpuModel;
use crate::sampling::{Sampler, SamplingParams};
use crate::transformer::Transformer;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Options of one generation.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Token ids that end the reply (not emitted).
    pub stop_tokens: Vec<u32>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    StopToken,
    MaxTokens,
    ContextFull,
    Cancelled,
    Callback,
}

/// Counts and timings of one generation.
#[derive(Debug, Clone)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated: Vec<u32>,
    pub stop: StopReason,
    pub prefill_s: f64,
    pub decode_s: f64,
}

impl GenerationStats {
    /// Stats of a generation whose prompt takes `prompt_tokens` positions, before it runs.
    pub(crate) fn new(prompt_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            generated: vec![],
            stop: StopReason::MaxTokens,
            prefill_s: 0.0,
            decode_s: 0.0,
        }
    }

    /// Decode speed (tokens after the first / decode time).
    pub fn decode_tokens_per_s(&self) -> f64 {
        if self.decode_s > 0.0 {
            self.generated.len().saturating_sub(1) as f64 / self.decode_s
        } else {
            0.0
        }
    }
}

/// Generates a continuation of `prompt` on the CPU inference path (the config's cache, f32
/// head); see [`generate_with`].
pub fn generate(
    model: &Transformer,
    prompt: &[u32],
    opts: &GenerateOptions,
    cancel: &AtomicBool,
    on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<GenerationStats> {
    generate_with(&mut CpuModel::new(model)?, prompt, opts, cancel, on_token)
}

/// Generates a continuation of `prompt` on `model` (restarted first). `on_token` receives each
/// new token; returning `ControlFlow::Break` stops.
pub fn generate_with(
    model: &mut dyn Decoder,
    prompt: &[u32],
    opts: &GenerateOptions,
    cancel: &AtomicBool,
    on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<GenerationStats> {
    let prompt = [Segment::Tokens(prompt.to_vec())];
    generate_segments(model, &prompt, opts, cancel, on_token)
}

/// A piece of a prompt: token ids, or input embeddings that stand between them (an image's
/// projected features between `<img>` and `</img>`).
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Tokens(Vec<u32>),
    /// `[T, C]` rows of the model's hidden size.
    Embeds(Vec<f32>),
}

/// Positions a prompt of `segments` takes in a model of `hidden` channels.
pub fn segments_len(segments: &[Segment], hidden: usize) -> usize {
    segments
        .iter()
        .map(|s| match s {
            Segment::Tokens(ids) => ids.len(),
            Segment::Embeds(x) => x.len() / hidden.max(1),
        })
        .sum()
}

/// [`generate_with`] for a prompt of token and embedding segments, prefilled in order; the
/// repetition penalty sees the prompt's tokens only.
pub fn generate_segments(
    model: &mut dyn Decoder,
    prompt: &[Segment],
    opts: &GenerateOptions,
    cancel: &AtomicBool,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<GenerationStats> {
    model.start()?;
    let hidden = model.config().hidden_size;
    let mut seen: Vec<u32> = vec![];
    let mut stats = GenerationStats::new(segments_len(prompt, hidden));
    let t0 = Instant::now();
    let logits = prefill(model, prompt, &mut seen)?;
    let Some(logits) = logits else {
        return Err(crate::error::Error::Invalid("the prompt is empty".into()));
    };
    stats.prefill_s = t0.elapsed().as_secs_f64();
    decode(model, logits, seen, opts, cancel, &mut on_token, &mut stats)?;
    Ok(stats)
}

/// Runs the prompt's segments in order (appending their token ids to `seen`) and returns the
/// logits of the last position, or `None` for an empty prompt.
pub(crate) fn prefill(
    model: &mut dyn Decoder,
    prompt: &[Segment],
    seen: &mut Vec<u32>,
) -> Result<Option<Vec<f32>>> {
    let mut logits = None;
    for seg in prompt {
        logits = Some(match seg {
            Segment::Tokens(ids) if ids.is_empty() => continue,
            Segment::Tokens(ids) => {
                seen.extend_from_slice(ids);
                model.step(ids)?
            }
            Segment::Embeds(x) => model.step_embeds(x.clone())?,
        });
    }
    Ok(logits)
}

/// The decode loop from the logits of the last position so far: samples, streams and appends
/// tokens until a stop; the repetition penalty sees `seen`. Fills `stats`' tokens, stop reason
/// and decode time.
pub(crate) fn decode(
    model: &mut dyn Decoder,
    mut logits: Vec<f32>,
    mut seen: Vec<u32>,
    opts: &GenerateOptions,
    cancel: &AtomicBool,
    on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    stats: &mut GenerationStats,
) -> Result<()> {
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let limit = model.config().max_position_embeddings;
    let t1 = Instant::now();
    for _ in 0..opts.max_new_tokens {
        if cancel.load(Ordering::Relaxed) {
            stats.stop = StopReason::Cancelled;
            break;
        }
        let next = sampler.sample(&logits, &seen)?;
        if opts.stop_tokens.contains(&next) {
            stats.stop = StopReason::StopToken;
            break;
        }
        stats.generated.push(next);
        seen.push(next);
        if on_token(next).is_break() {
            stats.stop = StopReason::Callback;
            break;
        }
        if model.len() + 1 > limit {
            stats.stop = StopReason::ContextFull;
            break;
        }
        if stats.generated.len() == opts.max_new_tokens {
            break;
        }
        logits = model.step(&[next])?;
    }
    stats.decode_s = t1.elapsed().as_secs_f64();
    Ok(())
}
