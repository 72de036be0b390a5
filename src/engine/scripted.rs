//! A scripted test engine: it is not a language model. It answers every request with a fixed
//! markdown reply that quotes the last user message and holds one fenced Rust code block, streamed
//! word by word; with `/latent on` it first sends two fixed, made-up thoughts (it has no hidden
//! states to round). The binary runs it only when `TRITTER_TEST_ENGINE=echo` is set, so the
//! snapshot and terminal tests have deterministic output; its name and description say plainly
//! what it is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{
    Engine, EngineInfo, GenEvent, GenRequest, LatentMode, Role, ThoughtToken, TokenCounter,
};

/// Per-token delay in milliseconds for the scripted engine (makes streaming visible in tests).
pub const DELAY_VAR: &str = "TRITTER_TEST_DELAY_MS";
/// Repeats the reply's code section this many times (long replies for latency measurements).
pub const REPEAT_VAR: &str = "TRITTER_TEST_REPEAT";

pub struct ScriptedEngine {
    delay: Duration,
    repeat: usize,
}

impl ScriptedEngine {
    #[cfg(test)]
    pub fn new(delay: Duration) -> Self {
        Self { delay, repeat: 1 }
    }

    pub fn from_env() -> Self {
        let ms = std::env::var(DELAY_VAR)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let repeat = std::env::var(REPEAT_VAR)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .clamp(1, 10_000);
        Self {
            delay: Duration::from_millis(ms),
            repeat,
        }
    }

    /// The full reply for a request.
    #[cfg(test)]
    pub fn reply_for(req: &GenRequest) -> String {
        Self::reply_repeated(req, 1)
    }

    /// The reply with its code section `repeat` times.
    pub fn reply_repeated(req: &GenRequest, repeat: usize) -> String {
        let last = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let first_line = last.lines().next().unwrap_or("");
        if req.raw {
            return format!("[raw] {first_line} …\n");
        }
        let mut s = format!("You said: **{first_line}**\n\n");
        for _ in 0..repeat.max(1) {
            s.push_str("Here is some code:\n\n");
            s.push_str("```rust\nfn main() {\n    let answer = 42; // the answer\n    println!(\"{answer}\");\n}\n```\n");
        }
        if req.latent != LatentMode::Off {
            s.push_str(&format!("\n(latent mode was {})\n", req.latent.name()));
        }
        s
    }

    /// The fixed thoughts sent with `/latent on`: made up, not rounded from anything.
    pub fn thoughts() -> Vec<Vec<ThoughtToken>> {
        let t = |token: &str, id, score| ThoughtToken {
            token: token.to_string(),
            id,
            score,
        };
        vec![
            vec![
                t("echo", 1, 0.82),
                t("scripted", 2, 0.41),
                t("every", 3, 0.30),
            ],
            vec![t("reply", 4, 0.77), t("code", 5, 0.52), t("fn", 6, 0.25)],
        ]
    }

    /// Splits a reply into word-sized pieces, each keeping its trailing whitespace.
    pub fn pieces(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut in_space = false;
        for c in text.chars() {
            let space = c.is_whitespace();
            if !space && in_space && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            in_space = space;
            cur.push(c);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

/// A rough count (one token per 4 bytes, rounded up) — the scripted engine has no tokenizer.
fn approx_tokens(text: &str) -> usize {
    text.len().div_ceil(4)
}

impl Engine for ScriptedEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            model_name: "scripted-echo".to_string(),
            device: "cpu".to_string(),
            context_limit: 2048,
            accepts_images: false,
            accepts_audio: false,
            description:
                "a scripted test engine that echoes the prompt; it is not a language model"
                    .to_string(),
            latent: None,
            gpu_fit: None,
        }
    }

    fn token_counter(&self) -> TokenCounter {
        Arc::new(approx_tokens)
    }

    fn generate(
        &mut self,
        req: &GenRequest,
        cancel: &AtomicBool,
        sink: &mut dyn FnMut(GenEvent),
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let prompt: usize = req
            .messages
            .iter()
            .map(|m| {
                approx_tokens(&m.content)
                    + m.context
                        .iter()
                        .map(|c| approx_tokens(&c.text))
                        .sum::<usize>()
            })
            .sum();
        sink(GenEvent::Prompt { tokens: prompt });
        let thoughts = if req.latent == LatentMode::On {
            Self::thoughts()
        } else {
            vec![]
        };
        for (index, candidates) in thoughts.iter().cloned().enumerate() {
            sink(GenEvent::Thought { index, candidates });
        }
        let mut first_token_ms = 0.0;
        let mut n = 0;
        let mut cancelled = false;
        for piece in Self::pieces(&Self::reply_repeated(req, self.repeat))
            .into_iter()
            .take(req.max_new_tokens)
        {
            if cancel.load(Ordering::Relaxed) {
                cancelled = true;
                break;
            }
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
            if n == 0 {
                first_token_ms = start.elapsed().as_secs_f64() * 1e3;
            }
            n += 1;
            sink(GenEvent::Token { text: piece });
        }
        let secs = start.elapsed().as_secs_f64();
        sink(GenEvent::Done {
            tokens: n,
            tok_per_s: if secs > 0.0 { n as f64 / secs } else { 0.0 },
            first_token_ms,
            cancelled,
            thoughts: thoughts.len(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ChatMessage, Sampling};

    fn req(text: &str, max: usize) -> GenRequest {
        GenRequest {
            messages: vec![ChatMessage::new(Role::User, text)],
            latent: LatentMode::Off,
            latent_min_cosine: 0.0,
            raw: false,
            max_new_tokens: max,
            sampling: Sampling::default(),
        }
    }

    #[test]
    fn pieces_concatenate_back_to_the_text() {
        let text = "a  b\n\nc d ";
        let p = ScriptedEngine::pieces(text);
        assert_eq!(p.concat(), text);
        assert_eq!(p, vec!["a  ", "b\n\n", "c ", "d "]);
    }

    #[test]
    fn streams_the_reply_and_respects_max_tokens() {
        let mut e = ScriptedEngine::new(Duration::ZERO);
        let cancel = AtomicBool::new(false);
        let mut text = String::new();
        let mut done = None;
        e.generate(&req("hello", 10_000), &cancel, &mut |ev| match ev {
            GenEvent::Token { text: t } => text.push_str(&t),
            GenEvent::Done { tokens, .. } => done = Some(tokens),
            _ => {}
        })
        .unwrap();
        assert_eq!(text, ScriptedEngine::reply_for(&req("hello", 1)));
        assert_eq!(done, Some(ScriptedEngine::pieces(&text).len()));

        let mut n = 0;
        e.generate(&req("hello", 3), &cancel, &mut |ev| {
            if let GenEvent::Token { .. } = ev {
                n += 1
            }
        })
        .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn a_set_cancel_flag_stops_before_any_token() {
        let mut e = ScriptedEngine::new(Duration::ZERO);
        let cancel = AtomicBool::new(true);
        let mut events = Vec::new();
        e.generate(&req("x", 100), &cancel, &mut |ev| events.push(ev))
            .unwrap();
        assert!(matches!(
            events.last(),
            Some(GenEvent::Done {
                tokens: 0,
                cancelled: true,
                ..
            })
        ));
    }
}
