//! `tritter -p PROMPT`: one prompt, no TUI. The reply streams to stdout as it is generated (or, with
//! `--json`, one JSON object at the end); errors go to stderr as one line with a non-zero exit
//! (the caller prints them).

use std::io::{Read, Write};
use std::sync::atomic::AtomicBool;

use std::path::PathBuf;

use crate::config::Config;
use crate::engine::factory::{self, EngineOptions};
use crate::engine::{AttachmentKind, ChatMessage, GenEvent, GenRequest, Role, Sampling};

/// What `-p` runs: the prompt (`-` reads stdin), the model and device flags, attachments.
#[derive(Debug, Clone, Default)]
pub struct HeadlessOptions {
    pub model_dir: Option<PathBuf>,
    pub device: Option<String>,
    pub prompt: String,
    /// Print one JSON object at the end instead of streaming text.
    pub json: bool,
    pub images: Vec<PathBuf>,
    pub audio: Vec<PathBuf>,
}

pub fn run(opts: HeadlessOptions) -> anyhow::Result<()> {
    let prompt_arg = opts.prompt.as_str();
    let config = match crate::config::config_dir() {
        Ok(dir) => Config::load(&dir)?,
        Err(_) => Config::default(),
    };
    let prompt = if prompt_arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| anyhow::anyhow!("cannot read the prompt from stdin: {e}"))?;
        s
    } else {
        prompt_arg.to_string()
    };
    if prompt.trim().is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    let mut engine = factory::load(&EngineOptions {
        model_dir: opts.model_dir.clone().or(config.model.clone()),
        device: opts.device.clone().or(config.device.clone()),
    })?;
    let info = engine.info();
    let mut msg = ChatMessage::new(Role::User, prompt.trim_end());
    for p in &opts.images {
        let (a, _) = crate::attach::load_image(p)?;
        msg.attachments.push(a);
    }
    for p in &opts.audio {
        msg.attachments.push(crate::attach::load_audio(p)?);
    }
    for a in &msg.attachments {
        let refused = match a.kind {
            AttachmentKind::Image { .. } => (!info.accepts_images).then_some("image"),
            AttachmentKind::Audio { .. } => (!info.accepts_audio).then_some("audio"),
        };
        if let Some(kind) = refused {
            anyhow::bail!(
                "this model ({}) takes no {kind} input; {} was not sent",
                info.model_name,
                a.path.display()
            );
        }
    }
    let budget = info.context_limit.saturating_sub(config.max_new_tokens);
    let (messages, _notes) = crate::engine::prompt::fit(&[msg], &engine.token_counter(), budget)
        .map_err(anyhow::Error::msg)?;
    let req = GenRequest {
        messages,
        latent: config.latent,
        max_new_tokens: config.max_new_tokens,
        sampling: Sampling {
            temperature: config.temperature,
            top_p: config.top_p,
            top_k: config.top_k,
            seed: 0,
        },
    };
    let cancel = AtomicBool::new(false);
    let mut reply = String::new();
    let mut stats = None;
    let mut error = None;
    let mut out = std::io::stdout().lock();
    let mut write_err = None;
    engine.generate(&req, &cancel, &mut |ev| match ev {
        GenEvent::Prompt { .. } => {}
        GenEvent::Token { text } => {
            if !opts.json && write_err.is_none() {
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                    write_err = Some(e);
                }
            }
            reply.push_str(&text);
        }
        GenEvent::Done {
            tokens,
            tok_per_s,
            first_token_ms,
            ..
        } => stats = Some((tokens, tok_per_s, first_token_ms)),
        GenEvent::Error(e) => error = Some(e),
    })?;
    if let Some(e) = error {
        anyhow::bail!("generation failed: {e}");
    }
    if let Some(e) = write_err {
        anyhow::bail!("cannot write to stdout: {e}");
    }
    let (tokens, tok_per_s, first_token_ms) = stats.unwrap_or((0, 0.0, 0.0));
    if opts.json {
        let obj = serde_json::json!({
            "reply": reply,
            "tokens": tokens,
            "tok_per_s": tok_per_s,
            "first_token_ms": first_token_ms,
            "model": info.model_name,
        });
        writeln!(out, "{obj}")?;
    } else if !reply.ends_with('\n') {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}
