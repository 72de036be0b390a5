//! The app's view of a language model: the `Engine` trait the TUI and the headless mode drive, and
//! the typed messages and events that cross the worker-thread channel. The app never formats
//! prompts or samples tokens itself. Beside this file: `factory` (picks the engine for a run),
//! `model` (the model-backed engine: tokenizer, streaming detokenisation, stop tokens),
//! `chat_format` (chat templates), `default_model` (the embedded model), `scripted` (the test
//! engine), `worker` (the generation thread), `prompt` (fitting a conversation to the context).
//! This file uses none of them: they all implement or carry what it states.

pub mod chat_format;
pub mod default_model;
pub mod factory;
pub mod media;
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

/// One request for a reply.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRequest {
    pub messages: Vec<ChatMessage>,
    /// Coconut latent-reasoning mode.
    pub latent: bool,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
}

/// What a running generation reports.
#[derive(Clone, Debug, PartialEq)]
pub enum GenEvent {
    /// The prompt after formatting was this many tokens (sent once, before the first token).
    Prompt {
        tokens: usize,
    },
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
