//! The command line (clap). `tritter` alone opens the TUI; `-p` runs one prompt headless.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "tritter",
    version,
    about = "Offline terminal coding assistant with an in-process ternary language model"
)]
pub struct Cli {
    /// Model directory (config.json, model.safetensors, tokenizer.json); default: the built-in model.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Compute device: cpu or cuda[:N].
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Reopen the most recent saved conversation.
    #[arg(long)]
    pub resume: bool,
    /// Run one prompt without the TUI and stream the reply to stdout; `-p -` reads it from stdin.
    #[arg(short = 'p', long = "prompt", value_name = "PROMPT")]
    pub prompt: Option<String>,
    /// With -p: print one JSON object {reply, tokens, tok_per_s, first_token_ms, model} instead.
    #[arg(long, requires = "prompt")]
    pub json: bool,
    /// With -p: attach an image (PNG/JPEG).
    #[arg(long, value_name = "FILE", requires = "prompt")]
    pub img: Vec<PathBuf>,
    /// With -p: attach audio (WAV/FLAC/MP3).
    #[arg(long, value_name = "FILE", requires = "prompt")]
    pub audio: Vec<PathBuf>,
    /// Colour theme (overrides config.toml).
    #[arg(long, value_name = "NAME")]
    pub theme: Option<String>,
}
