//! The app's view of a language model: the `Engine` trait the TUI and the headless mode drive, and
//! the typed messages and events that cross the worker-thread channel. The app never formats
//! prompts or samples tokens itself. Beside this file: `factory` (picks the engine for a run),
//! `model` (the model-backed engine: tokenizer, streaming detokenisation, stop tokens),
//! `chat_format` (chat templates) with `chat_guard` (refuses namespace cycles), `default_model`
//! (the embedded model), `scripted` (the test engine), `worker` (the generation thread), `prompt`
//! (fitting a conversation to the context).
//! This file uses none of them: they all implement or carry what it states.

pub mod chat_format;
mod chat_guard;
pub mod default_model;
pub mod factory;
pub mod media;
pub mod memory;
pub mod model;
pub mod prompt;
pub mod scripted;
pub mod worker;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// A piece of code (a file or one symbol of it) the user put into a message's context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextSnippet {
    /// What it is, e.g. `src/main.rs` or `src/main.rs: fn run (lines 10-42)`.
    pub label: String,
    /// The code itself (possibly truncated to the context budget; then it ends with a note).
    pub text: String,
}

/// The kind of media attached to a message, with what the UI shows about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AttachmentKind {
    Image { width: u32, height: u32 },
    Audio { seconds: f64, sample_rate: u32 },
}

/// Decoded media, kept in memory for the engine; not saved with sessions.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaData {
    /// 8-bit RGB, row-major, `width * height * 3` bytes.
    Rgb8 {
        width: u32,
        height: u32,
        pixels: Vec<u8>,
    },
    /// Mono samples in [-1, 1].
    Mono { sample_rate: u32, samples: Vec<f32> },
}

/// An image or audio file attached to a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub path: PathBuf,
    pub kind: AttachmentKind,
    /// The decoded data; `None` after a session is loaded from disk.
    #[serde(skip)]
    pub data: Option<Arc<MediaData>>,
}

/// One message of a conversation as the engine receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<ContextSnippet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            context: Vec::new(),
            attachments: Vec::new(),
        }
    }
}

/// Sampling settings for one reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            seed: 0,
        }
    }
}

/// Coconut latent-reasoning mode, as `/latent`, `--latent` and the config's `latent` set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LatentMode {
    /// Token mode: the model answers (and reasons, if it does) in written tokens.
    #[default]
    Off,
    /// Latent reasoning; an error when the model was not latent-trained.
    On,
    /// Latent reasoning where the model declares it was latent-trained (and the chain looks
    /// sound), else token mode with a notice.
    Auto,
}

impl LatentMode {
    pub const NAMES: [&str; 3] = ["on", "off", "auto"];

    pub fn name(self) -> &'static str {
        match self {
            LatentMode::Off => "off",
            LatentMode::On => "on",
            LatentMode::Auto => "auto",
        }
    }
}

impl std::str::FromStr for LatentMode {
    type Err = String;

    /// `on`, `off`, `auto` (and `true`/`false`, `1`/`0` for on and off).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" => Ok(LatentMode::On),
            "off" | "false" | "0" => Ok(LatentMode::Off),
            "auto" => Ok(LatentMode::Auto),
            other => Err(format!("latent mode is on, off or auto, not {other:?}")),
        }
    }
}

impl<'de> Deserialize<'de> for LatentMode {
    /// `"on"`, `"off"`, `"auto"`, or a bool (`true` is on), as older configs wrote it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(LatentMode::On),
            Raw::Bool(false) => Ok(LatentMode::Off),
            Raw::Name(n) => n.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// One token a continuous thought is near: its text, id and cosine similarity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThoughtToken {
    pub token: String,
    pub id: u32,
    pub score: f32,
}

impl ThoughtToken {
    /// The token's text for people: trimmed, or escaped when it is only whitespace.
    pub fn label(&self) -> String {
        let t = self.token.trim();
        if t.is_empty() {
            self.token.escape_debug().to_string()
        } else {
            t.to_string()
        }
    }
}

/// A thought's candidates as one line: `parent (0.82) · Zorp (0.41) · every (0.30)`.
pub fn thought_text(candidates: &[ThoughtToken]) -> String {
    if candidates.is_empty() {
        return "(no direction to round)".to_string();
    }
    candidates
        .iter()
        .map(|c| format!("{} ({:.2})", c.label(), c.score))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// One request for a reply.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRequest {
    pub messages: Vec<ChatMessage>,
    /// Coconut latent-reasoning mode.
    pub latent: LatentMode,
    /// The confidence signal's threshold: a latent chain whose weakest thought's nearest token
    /// has a lower cosine counts as degraded (see `engine::model::latent`).
    pub latent_min_cosine: f32,
    /// Completion mode (`-p --raw`, `/raw on`): the last message's text is continued as it
    /// stands, without the chat template, the history or latent mode; the reply ends at the
    /// model's end-of-text token or the length limit.
    pub raw: bool,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
}

/// What a running generation reports.
#[derive(Clone, Debug, PartialEq)]
pub enum GenEvent {
    /// The prompt after formatting was this many tokens (sent before the first token; again
    /// when the engine falls back from latent to token mode, which changes the prompt).
    Prompt {
        tokens: usize,
    },
    /// A continuous thought (latent mode), rounded to its nearest tokens (best first); sent as
    /// each thought is fed, before the reply's first token. `index` counts from 0.
    Thought {
        index: usize,
        candidates: Vec<ThoughtToken>,
    },
    /// Something the user should know about this reply (e.g. latent mode fell back to tokens).
    Notice(String),
    /// The next piece of the reply.
    Token {
        text: String,
    },
    /// The reply ended (stop token, length limit or cancellation).
    Done {
        tokens: usize,
        tok_per_s: f64,
        first_token_ms: f64,
        cancelled: bool,
        /// Continuous thoughts the reply was conditioned on (0: it was answered in token mode).
        thoughts: usize,
    },
    Error(String),
}

/// What the app shows about the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineInfo {
    pub model_name: String,
    pub device: String,
    pub context_limit: usize,
    pub accepts_images: bool,
    pub accepts_audio: bool,
    /// One honest sentence about what this model is.
    pub description: String,
    /// How the model was latent-trained (its `latent.json`), or `None` when it was not.
    pub latent: Option<tritter_model::latent::LatentSpec>,
    /// On a GPU: the KV kind, window and context chosen for the device's free memory.
    pub gpu_fit: Option<tritter_model::plan_gpu::GpuFit>,
}

/// Counts tokens the way the engine's tokenizer does; shared with the UI thread.
pub type TokenCounter = Arc<dyn Fn(&str) -> usize + Send + Sync>;

/// A language model the app can talk to. `generate` runs on the worker thread; it must poll
/// `cancel` between tokens and return soon after it turns true (still sending `Done`).
pub trait Engine: Send {
    fn info(&self) -> EngineInfo;
    fn token_counter(&self) -> TokenCounter;
    fn generate(
        &mut self,
        req: &GenRequest,
        cancel: &AtomicBool,
        sink: &mut dyn FnMut(GenEvent),
    ) -> anyhow::Result<()>;
}
