//! The built-in default model, embedded in the binary: `tritter-tiny` as trained by
//! `scripts/train-default.sh` (files in `assets/default-model/`, corpus sources and licences in
//! `assets/default-model/SOURCES.md`). It is small and honest about it: a code-continuation model
//! of a few million parameters, not an assistant.

use crate::engine::chat_format::ChatFormat;
use crate::engine::model::ModelEngine;
use anyhow::{anyhow, Context, Result};
use candle_core::Device;
use tokenizers::Tokenizer;

const CONFIG: &str = include_str!("../../assets/default-model/config.json");
const WEIGHTS: &[u8] = include_bytes!("../../assets/default-model/model.safetensors");
const TOKENIZER: &[u8] = include_bytes!("../../assets/default-model/tokenizer.json");
const EVAL: &str = include_str!("../../assets/default-model/eval.json");

/// What the UI says about the built-in model.
pub fn description() -> String {
    let ppl = serde_json::from_str::<serde_json::Value>(EVAL)
        .ok()
        .and_then(|v| v["val_ppl"].as_f64())
        .map(|p| format!(", held-out perplexity {p:.0}"))
        .unwrap_or_default();
    format!(
        "tritter-tiny, built in: a tiny ternary model (4 layers, hidden 256) trained on this \
         project's machine for minutes on Python standard-library and Rust sources{ppl}. It \
         continues code in a rough way; it does not follow instructions. Use --model DIR for a \
         real checkpoint."
    )
}

/// The embedded model and its tokenizer.
pub fn parts(device: &Device) -> Result<(tritter_model::Transformer, Tokenizer)> {
    let ck = tritter_model::load_model_from_bytes(CONFIG, WEIGHTS, device)
        .context("loading the built-in model")?;
    let tokenizer =
        Tokenizer::from_bytes(TOKENIZER).map_err(|e| anyhow!("built-in tokenizer: {e}"))?;
    Ok((ck.model, tokenizer))
}

/// Loads the embedded model.
pub fn load(device: &Device, device_name: &str) -> Result<ModelEngine> {
    let (model, tokenizer) = parts(device)?;
    Ok(ModelEngine::new(
        model,
        tokenizer,
        ChatFormat::tritter(),
        "tritter-tiny".into(),
        description(),
        device_name,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ChatMessage, Engine, GenEvent, GenRequest, Role, Sampling};
    use std::sync::atomic::AtomicBool;

    #[test]
    fn built_in_model_loads_and_generates() {
        let mut eng = load(&Device::Cpu, "cpu").unwrap();
        assert_eq!(eng.info().model_name, "tritter-tiny");
        assert!(eng
            .info()
            .description
            .contains("does not follow instructions"));
        let req = GenRequest {
            messages: vec![ChatMessage::new(Role::User, "def add(a, b):")],
            latent: crate::engine::LatentMode::Off,
            latent_min_cosine: 0.0,
            raw: false,
            max_new_tokens: 16,
            sampling: Sampling {
                temperature: 0.0,
                ..Sampling::default()
            },
        };
        let mut text = String::new();
        let mut done = None;
        eng.generate(&req, &AtomicBool::new(false), &mut |e| match e {
            GenEvent::Token { text: t } => text.push_str(&t),
            GenEvent::Done { tokens, .. } => done = Some(tokens),
            _ => {}
        })
        .unwrap();
        let tokens = done.expect("Done event");
        assert!(tokens > 0 && tokens <= 16);
        assert!(!text.is_empty());
    }

    #[test]
    fn latent_auto_with_the_built_in_model_falls_back_with_a_notice() {
        let mut eng = load(&Device::Cpu, "cpu").unwrap();
        assert_eq!(eng.info().latent, None);
        let req = GenRequest {
            messages: vec![ChatMessage::new(Role::User, "def add(a, b):")],
            latent: crate::engine::LatentMode::Auto,
            latent_min_cosine: 0.2,
            raw: false,
            max_new_tokens: 4,
            sampling: Sampling {
                temperature: 0.0,
                ..Sampling::default()
            },
        };
        let mut notices = vec![];
        let mut done = None;
        eng.generate(&req, &AtomicBool::new(false), &mut |e| match e {
            GenEvent::Notice(n) => notices.push(n),
            GenEvent::Thought { .. } => panic!("no thoughts in token mode"),
            GenEvent::Done {
                tokens, thoughts, ..
            } => done = Some((tokens, thoughts)),
            _ => {}
        })
        .unwrap();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(notices[0].contains("tritter-tiny was not latent-trained"));
        let (tokens, thoughts) = done.expect("Done event");
        assert!(tokens > 0);
        assert_eq!(thoughts, 0);
    }
}
