//! A reply's text as it streams: sampled ids decoded incrementally (byte-level BPE tokens can
//! split UTF-8 characters, so text is sent only once it decodes cleanly), the time to the first
//! token, and the `Done` event with the reply's statistics. Token and latent mode share it.

use std::ops::ControlFlow;
use std::time::Instant;

use anyhow::{anyhow, Result};
use tokenizers::Tokenizer;
use tritter_model::generation::GenerationStats;
use tritter_model::StopReason;

use crate::engine::GenEvent;

/// The ids sampled so far and how much of their text was sent.
pub(super) struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    t0: Instant,
    ids: Vec<u32>,
    /// Bytes of decoded text already sent.
    emitted: usize,
    first_token_ms: f64,
    error: Option<String>,
}

impl<'a> TextStream<'a> {
    /// A stream for a reply whose request arrived at `t0`.
    pub fn new(tokenizer: &'a Tokenizer, t0: Instant) -> Self {
        Self {
            tokenizer,
            t0,
            ids: vec![],
            emitted: 0,
            first_token_ms: 0.0,
            error: None,
        }
    }

    /// Takes the next sampled id; sends the text it completes. A tokenizer error stops the
    /// generation (`finish` reports it).
    pub fn push(&mut self, id: u32, sink: &mut dyn FnMut(GenEvent)) -> ControlFlow<()> {
        if self.ids.is_empty() {
            self.first_token_ms = self.t0.elapsed().as_secs_f64() * 1e3;
        }
        self.ids.push(id);
        match self.tokenizer.decode(&self.ids, true) {
            Ok(text) => {
                // Hold back an incomplete UTF-8 sequence (decoded as U+FFFD) until it completes.
                if !text.ends_with('\u{FFFD}')
                    && text.len() > self.emitted
                    && text.is_char_boundary(self.emitted)
                {
                    sink(GenEvent::Token {
                        text: text[self.emitted..].to_string(),
                    });
                    self.emitted = text.len();
                }
                ControlFlow::Continue(())
            }
            Err(e) => {
                self.error = Some(e.to_string());
                ControlFlow::Break(())
            }
        }
    }

    /// Ends the reply: the tokenizer's error if there was one, else `Done` with the statistics
    /// of `stats` and the `thoughts` the reply was conditioned on.
    pub fn finish(
        self,
        stats: &GenerationStats,
        thoughts: usize,
        sink: &mut dyn FnMut(GenEvent),
    ) -> Result<()> {
        if let Some(e) = self.error {
            return Err(anyhow!("tokenizer: {e}"));
        }
        let tokens = stats.generated.len();
        let elapsed = self.t0.elapsed().as_secs_f64();
        sink(GenEvent::Done {
            tokens,
            tok_per_s: if elapsed > 0.0 {
                tokens as f64 / elapsed
            } else {
                0.0
            },
            first_token_ms: self.first_token_ms,
            cancelled: stats.stop == StopReason::Cancelled,
            thoughts,
        });
        Ok(())
    }
}
