//! The entry points that read untrusted files, public for the fuzz targets (`fuzz/`) and the
//! fuzz regression tests: each calls the function the program itself calls on that input (the
//! same parsing, checks and limits) and returns only whether it was accepted. Every rejection
//! must be an `Err` with a clear message — never a panic, a hang or a huge allocation.
//!
//! The model crate's loaders (`config.json`, safetensors, sharded indexes) are public already and
//! are fuzzed through `tritter_model` directly.

use std::path::Path;

use anyhow::{bail, Result};

use crate::engine::chat_format::ChatFormat;
use crate::engine::{ChatMessage, ContextSnippet, Role};

/// The TUI's `config.toml` text, parsed and range-checked (`Config::parse`).
pub fn tui_config(text: &str) -> Result<()> {
    crate::config::Config::parse("config.toml", text).map(drop)
}

/// A colour theme file's text (`Theme::parse`).
pub fn theme(text: &str) -> Result<()> {
    crate::tui::theme::Theme::parse("fuzz", text).map(drop)
}

/// A `--train` config file, read as `--train` reads it before it touches data or a device: its
/// `task`, then that task's config loaded with `overrides` and checked.
pub fn train_config(path: &Path, overrides: &[String]) -> Result<()> {
    use crate::cli::{train, train_audio, train_codec, train_latent, train_vision, train_vqvae};
    match train::task_of(path)?.as_str() {
        "text" => drop(tritter_model::train::TrainConfig::load(path, overrides)?),
        "image_text" => drop(train_vision::load_config(path, overrides)?),
        "audio_text" => drop(train_audio::load_config(path, overrides)?),
        "codec" => drop(train_codec::load_config(path, overrides)?),
        "vqvae" => drop(train_vqvae::load_config(path, overrides)?),
        "latent" => drop(train_latent::load_config(path, overrides)?),
        other => bail!("{}: task = \"{other}\" is not a task", path.display()),
    }
    Ok(())
}

/// One fuzz input for the TOML readers, decoded as the `toml_configs` target and its regression
/// test both read it: the first byte picks the reader — 0 the TUI's `config.toml`, 1 a colour
/// theme, anything else a `--train` config of any task, written to `scratch/train.toml`, whose
/// lines `#--set KEY=VALUE` (comments to TOML) are also passed as `--set` overrides. Input that is
/// empty or not UTF-8 is no config at all (`Ok`).
pub fn toml_input(data: &[u8], scratch: &Path) -> Result<()> {
    let Some((&kind, rest)) = data.split_first() else {
        return Ok(());
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return Ok(());
    };
    match kind {
        0 => tui_config(text),
        1 => theme(text),
        _ => {
            let overrides: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("#--set "))
                .map(str::to_string)
                .collect();
            let path = scratch.join("train.toml");
            std::fs::write(&path, rest)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            train_config(&path, &overrides)
        }
    }
}

/// A saved session `name` in `data_dir` (`sessions/NAME.json`); returns its message count.
pub fn session(data_dir: &Path, name: &str) -> Result<usize> {
    crate::tui::session::load(data_dir, name).map(|m| m.len())
}

/// A checkpoint's `tokenizer_config.json` text: its chat template compiled and rendered for a
/// conversation with a system prompt, code context and two turns; returns the rendered prompt.
pub fn chat_template(tokenizer_config: &str) -> Result<String> {
    let format = ChatFormat::from_tokenizer_config(tokenizer_config)?;
    let mut user = ChatMessage::new(Role::User, "what does this do?");
    user.context.push(ContextSnippet {
        label: "src/main.rs".into(),
        text: "fn main() {}\n".into(),
    });
    format.render(&[
        ChatMessage::new(Role::System, "You are Tritter."),
        user,
        ChatMessage::new(Role::Assistant, "Nothing yet."),
        ChatMessage::new(Role::User, "and now?"),
    ])
}

/// A checkpoint's `tokenizer.json`, loaded as the engine loads it, then used to encode and
/// decode a line of code; returns the token count.
pub fn tokenizer(path: &Path) -> Result<usize> {
    let tk = crate::engine::model::load_tokenizer(path)?;
    let enc = tk
        .encode("fn main() { println!(\"hi\"); }", false)
        .map_err(|e| anyhow::anyhow!("encoding with {}: {e}", path.display()))?;
    tk.decode(enc.get_ids(), false)
        .map_err(|e| anyhow::anyhow!("decoding with {}: {e}", path.display()))?;
    Ok(enc.len())
}

/// An image attachment (`/img`, `--img`): PNG or JPEG through the size and pixel limits.
pub fn image(path: &Path) -> Result<(u32, u32)> {
    let (_, img) = crate::attach::load_image(path)?;
    Ok((img.width(), img.height()))
}

/// An audio attachment (`/audio`, `--audio`): WAV, FLAC, MP3 or Ogg Vorbis through the size,
/// length and channel limits; returns the mono sample count.
pub fn audio(path: &Path) -> Result<usize> {
    let a = crate::attach::load_audio(path)?;
    Ok(match a.data.as_deref() {
        Some(crate::engine::MediaData::Mono { samples, .. }) => samples.len(),
        _ => 0,
    })
}
