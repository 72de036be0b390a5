//! `tritter -p PROMPT`: one prompt, no TUI. The reply streams to stdout as it is generated (or, with
//! `--json`, one JSON object at the end, with latent mode's rounded thoughts and the engine's
//! notices); without `--json`, notices and thoughts go to stderr as `tritter: ` lines. Errors go
//! to stderr as one line with a non-zero exit (the caller prints them). `-p -` reads stdin up to
//! 16 bytes per token of the context budget, never a huge stream whole, and cuts it by lines to
//! the budget; every cut is noted on stderr. Started inside a project, the prompt carries the
//! repo map of the current folder (`repo_map_tokens`; `--json` reports its size). `--raw` sends the
//! prompt as it stands, to be continued: no chat template, no repo map, no latent mode.

use std::io::{Read, Write};
use std::sync::atomic::AtomicBool;

use std::path::PathBuf;

use crate::config::Config;
use crate::engine::factory::{self, EngineOptions};
use crate::engine::prompt::Extra;
use crate::engine::{
    thought_text, AttachmentKind, ChatMessage, EngineInfo, GenEvent, GenRequest, LatentMode, Role,
    Sampling, TokenCounter,
};
use crate::files::human_bytes;
use crate::repomap::build::build;
use crate::repomap::render::snippet;

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
    /// `--latent`: overrides the config's latent mode.
    pub latent: Option<LatentMode>,
    /// `--raw`: continue the prompt's text without the chat template.
    pub raw: bool,
}

/// What the repo map put into a prompt: its size and how long the map took to build.
#[derive(Debug, Clone, serde::Serialize)]
struct MapReport {
    files: usize,
    definitions: usize,
    tokens: usize,
    build_ms: f64,
}

pub fn run(opts: HeadlessOptions) -> anyhow::Result<()> {
    let prompt_arg = opts.prompt.as_str();
    let config = match crate::config::config_dir() {
        Ok(dir) => Config::load(&dir)?,
        Err(_) => Config::default(),
    };
    if prompt_arg != "-" && prompt_arg.trim().is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    let mut engine = factory::load(&EngineOptions {
        model_dir: opts.model_dir.clone().or(config.model.clone()),
        device: opts.device.clone().or(config.device.clone()),
    })?;
    let info = engine.info();
    let budget = info.context_limit.saturating_sub(config.max_new_tokens);
    let prompt = if prompt_arg == "-" {
        stdin_prompt(
            &mut std::io::stdin().lock(),
            &engine.token_counter(),
            budget,
        )?
    } else {
        prompt_arg.to_string()
    };
    if prompt.trim().is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    if opts.raw && !(opts.images.is_empty() && opts.audio.is_empty()) {
        anyhow::bail!("--raw continues text only; it takes no --img or --audio");
    }
    // A completion continues the text exactly where it ends, trailing newline included.
    let text = if opts.raw {
        prompt.as_str()
    } else {
        prompt.trim_end()
    };
    let msg = message(&opts, text, &info)?;
    let count = engine.token_counter();
    let tokens = if opts.raw { 0 } else { config.repo_map_tokens };
    let (messages, map) = fit_with_map(msg, &count, budget, tokens)?;
    let req = GenRequest {
        messages,
        latent: opts.latent.unwrap_or(config.latent),
        latent_min_cosine: config.latent_min_cosine,
        raw: opts.raw,
        max_new_tokens: config.max_new_tokens,
        sampling: Sampling {
            temperature: config.temperature,
            top_p: config.top_p,
            top_k: config.top_k,
            seed: 0,
        },
    };
    answer(engine.as_mut(), &req, &info, opts.json, map)
}

/// `msg` fitted to `budget` with the current folder's repo map (when `map_tokens` > 0 and the
/// folder has `.py`/`.rs` files); notes about cuts go to stderr. A map that cannot be built is
/// left out with a note: it never stops the prompt.
fn fit_with_map(
    msg: ChatMessage,
    count: &TokenCounter,
    budget: usize,
    map_tokens: usize,
) -> anyhow::Result<(Vec<ChatMessage>, Option<MapReport>)> {
    let tags = match map_tokens {
        0 => None,
        _ => match std::env::current_dir()
            .map_err(|e| e.to_string())
            .and_then(|d| build(&d, None).map_err(|e| e.to_string()))
        {
            Ok((tags, stats)) => (stats.files > 0).then_some((tags, stats)),
            Err(e) => {
                eprintln!("tritter: note: no repo map: {e}");
                None
            }
        },
    };
    let make = |n: usize| {
        tags.as_ref()
            .and_then(|(t, _)| snippet(t, &msg.content, &**count, n))
    };
    let extra = Extra {
        max_tokens: map_tokens,
        make: &make,
    };
    let (messages, notes) = crate::engine::prompt::fit_with(
        std::slice::from_ref(&msg),
        count,
        budget,
        tags.as_ref().map(|_| &extra),
    )
    .map_err(anyhow::Error::msg)?;
    for n in notes {
        eprintln!("tritter: note: {n}");
    }
    let map = tags.as_ref().map(|(t, stats)| {
        let sent = messages.last().and_then(|m| {
            m.context
                .iter()
                .find(|c| c.label.starts_with("Repository map"))
        });
        MapReport {
            files: t.files.len(),
            definitions: sent.map_or(0, |c| {
                c.text.lines().filter(|l| l.starts_with("  ")).count()
            }),
            tokens: sent.map_or(0, |c| count(&c.text)),
            build_ms: stats.total_ms,
        }
    });
    Ok((messages, map))
}

/// Runs `req` on `engine`: the reply streamed to stdout (with `json`, one object at the end),
/// notices and thoughts on stderr unless `json`.
fn answer(
    engine: &mut dyn crate::engine::Engine,
    req: &GenRequest,
    info: &EngineInfo,
    json: bool,
    map: Option<MapReport>,
) -> anyhow::Result<()> {
    let cancel = AtomicBool::new(false);
    let mut reply = String::new();
    let mut stats = None;
    let mut error = None;
    let mut thoughts = vec![];
    let mut notices = vec![];
    let mut out = std::io::stdout().lock();
    let mut write_err = None;
    let mut prompt_tokens = 0;
    engine.generate(req, &cancel, &mut |ev| match ev {
        GenEvent::Prompt { tokens } => prompt_tokens = tokens,
        GenEvent::Thought { index, candidates } => {
            if !json {
                eprintln!(
                    "tritter: thought {}: {}",
                    index + 1,
                    thought_text(&candidates)
                );
            }
            thoughts.push(candidates);
        }
        GenEvent::Notice(n) => {
            if !json {
                eprintln!("tritter: {n}");
            }
            notices.push(n);
        }
        GenEvent::Token { text } => {
            if !json && write_err.is_none() {
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
            thoughts,
            ..
        } => stats = Some((tokens, tok_per_s, first_token_ms, thoughts)),
        GenEvent::Error(e) => error = Some(e),
    })?;
    if let Some(e) = error {
        anyhow::bail!("generation failed: {e}");
    }
    if let Some(e) = write_err {
        anyhow::bail!("cannot write to stdout: {e}");
    }
    let (tokens, tok_per_s, first_token_ms, fed) = stats.unwrap_or((0, 0.0, 0.0, 0));
    if json {
        let obj = serde_json::json!({
            "reply": reply,
            "tokens": tokens,
            "tok_per_s": tok_per_s,
            "first_token_ms": first_token_ms,
            "model": info.model_name,
            "device": info.device,
            "context_limit": info.context_limit,
            "gpu_cache": info.gpu_fit,
            "mode": if fed > 0 { "latent" } else { "token" },
            "thoughts": thoughts,
            "notices": notices,
            "raw": req.raw,
            "prompt_tokens": prompt_tokens,
            "repo_map": map,
        });
        writeln!(out, "{obj}")?;
    } else if !reply.ends_with('\n') && !req.raw {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

/// The user message: `text` with the attachments of `opts`, refused when the model takes none
/// of their kind.
fn message(opts: &HeadlessOptions, text: &str, info: &EngineInfo) -> anyhow::Result<ChatMessage> {
    let mut msg = ChatMessage::new(Role::User, text);
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
    Ok(msg)
}

/// Bytes of stdin read per token of the context budget: byte-level BPE tokens are seldom longer,
/// so the text read still fills the context, and a huge stream is never read whole.
const STDIN_BYTES_PER_TOKEN: usize = 16;

/// The `-p -` prompt: at most `budget × 16` bytes of `input`, cut by whole lines to what fits
/// `budget` tokens, with a note on stderr for each cut.
fn stdin_prompt(
    input: &mut impl Read,
    count: &TokenCounter,
    budget: usize,
) -> anyhow::Result<String> {
    let cap = budget.max(1) * STDIN_BYTES_PER_TOKEN;
    let mut bytes = Vec::new();
    input
        .take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read the prompt from stdin: {e}"))?;
    let more = bytes.len() > cap;
    bytes.truncate(cap);
    let mut text = match String::from_utf8(bytes) {
        Ok(t) => t,
        // A character cut in two by the read limit: drop its first half.
        Err(e) if more && e.utf8_error().error_len().is_none() => {
            let n = e.utf8_error().valid_up_to();
            String::from_utf8_lossy(&e.into_bytes()[..n]).into_owned()
        }
        Err(e) => anyhow::bail!(
            "the prompt on stdin is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    };
    if more {
        // The last line read is probably partial.
        if let Some(i) = text.rfind('\n') {
            text.truncate(i + 1);
        }
        eprintln!(
            "tritter: note: stdin is longer than {}; only that much was read (the context \
             budget is {budget} tokens)",
            human_bytes(cap as u64)
        );
    }
    if let Some((kept, keep)) = crate::engine::prompt::truncate_message(&text, count, budget) {
        if keep == 0 {
            anyhow::bail!(
                "the first line of the prompt on stdin alone is more than the context budget of \
                 {budget} tokens"
            );
        }
        eprintln!(
            "tritter: note: the prompt on stdin was cut to its first {keep} of {} lines to fit \
             the context budget of {budget} tokens",
            text.lines().count()
        );
        text = kept;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// One token per byte (byte-level BPE's worst case), independent of any tokenizer.
    fn bytes() -> TokenCounter {
        Arc::new(|t: &str| t.len())
    }

    #[test]
    fn stdin_is_read_up_to_the_cap_and_cut_by_lines() {
        // 100 lines of 10 bytes; a budget of 58 tokens (50 for the text after the overhead).
        let text: String = (0..100).map(|i| format!("line {i:04}\n")).collect();
        let mut input = std::io::Cursor::new(text.as_bytes().to_vec());
        let got = stdin_prompt(&mut input, &bytes(), 58).unwrap();
        assert_eq!(got, "line 0000\nline 0001\nline 0002\nline 0003\nline 0004");
        // Read no further than 58 × 16 = 928 bytes (+1 to see there is more).
        assert_eq!(input.position(), 929);
        // Short input passes unchanged.
        let mut input = std::io::Cursor::new(b"hello\n".to_vec());
        assert_eq!(stdin_prompt(&mut input, &bytes(), 58).unwrap(), "hello\n");
        // A first line longer than the budget is a clear error.
        let long = "x".repeat(200);
        let e = stdin_prompt(&mut std::io::Cursor::new(long.into_bytes()), &bytes(), 58)
            .unwrap_err()
            .to_string();
        assert!(e.contains("first line"), "{e}");
        // Bad UTF-8 is named with its offset; a character cut by the cap is not an error.
        let e = stdin_prompt(&mut std::io::Cursor::new(b"ok\xff".to_vec()), &bytes(), 58)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offset 2"), "{e}");
        let mut cut = vec![b'a'; 927];
        cut.extend_from_slice("é and more".as_bytes());
        let got = stdin_prompt(&mut std::io::Cursor::new(cut), &bytes(), 5000).unwrap();
        assert_eq!(got.len(), 927 + "é and more".len());
        let mut cut = b"ab\n".to_vec();
        cut.extend(std::iter::repeat_n(b'a', 924));
        cut.extend_from_slice("é".as_bytes());
        let got = stdin_prompt(&mut std::io::Cursor::new(cut), &bytes(), 58).unwrap();
        assert_eq!(got, "ab\n");
    }
}
