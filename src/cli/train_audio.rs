//! `tritter --train CONFIG` with `task = "audio_text"`: trains a text model to answer about clips
//! given as JSONL records `{"audio": PATH, "prompt": TEXT, "text": ANSWER}` (paths relative to the
//! JSONL file). The codec (`[audio] codec`) is fixed; each clip is decoded, resampled to its rate
//! and encoded once. A byte-level BPE is trained on the records' text; each record becomes the
//! exact sequence the chat engine builds at inference (Tritter's chat format, `<audio></audio>`
//! before the prompt, the clip's code ids between them) with the answer and `<|end|>` as the
//! loss span. The model is written to `RUN/final/` (text checkpoint + `audio/`); with
//! `data.test`, held-out exact-match accuracy is measured through the chat engine itself,
//! beside the same model given a silenced clip of the same length, and written to
//! `RUN/eval.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::Deserialize;
use tokenizers::Tokenizer;
use tritter_model::audio::{AudioPart, AudioTokens, Codec};
use tritter_model::train::audio_text::{train_audio_text, AudioTextConfig, AudioTextModel};
use tritter_model::train::image_text::ImageTextExample;

use crate::cli::train_vision::{reply, train_tokenizer, StepLog};
use crate::engine::chat_format::ChatFormat;
use crate::engine::model::ModelEngine;
use crate::engine::{ChatMessage, MediaData, Role};

/// One JSONL record.
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub audio: PathBuf,
    #[serde(default = "default_prompt")]
    pub prompt: String,
    pub text: String,
}

fn default_prompt() -> String {
    "what was said?".into()
}

/// Reads a JSONL file of records (audio paths relative to its folder).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut r: Record = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: not an {{audio, prompt, text}} record",
                path.display(),
                i + 1
            )
        })?;
        if r.audio.is_relative() {
            r.audio = base.join(&r.audio);
        }
        out.push(r);
    }
    if out.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(out)
}

/// Loads the config: TOML with `--set` overrides, paths relative to the file.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<AudioTextConfig> {
    let (mut cfg, fix): (AudioTextConfig, _) = crate::cli::train::read_config(path, overrides)?;
    cfg.run.dir = fix(&cfg.run.dir);
    cfg.data.train = fix(&cfg.data.train);
    cfg.data.test = cfg.data.test.as_deref().map(&fix);
    cfg.audio.codec = fix(&cfg.audio.codec);
    if cfg.train.batch_size == 0 || cfg.train.steps == 0 {
        bail!(
            "{}: train.steps and train.batch_size must be > 0",
            path.display()
        );
    }
    Ok(cfg)
}

/// The user message of a record, with its clip attached (decoded, with limits).
fn message(r: &Record) -> Result<(ChatMessage, Arc<MediaData>)> {
    let a = crate::attach::load_audio(&r.audio)?;
    let data = a.data.clone().context("the clip decoded to nothing")?;
    let mut m = ChatMessage::new(Role::User, r.prompt.clone());
    m.attachments.push(a);
    Ok((m, data))
}

/// The training sequence of a record, built as the engine builds a prompt.
fn example(r: &Record, tk: &Tokenizer, part: &AudioPart) -> Result<ImageTextExample> {
    let (msg, data) = message(r)?;
    let text = ChatFormat::tritter().render(&[msg])?;
    let enc = |s: &str| -> Result<Vec<u32>> {
        Ok(tk
            .encode(s, false)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?
            .get_ids()
            .to_vec())
    };
    let ids = enc(&text)?;
    let start = tk.token_to_id("<audio>").context("no <audio> token")?;
    let end = tk.token_to_id("</audio>").context("no </audio> token")?;
    let pairs = crate::engine::media::marker_pairs(&ids, start, end);
    let [at] = pairs[..] else {
        bail!(
            "{}: the prompt has {} audio markers, expected 1",
            r.audio.display(),
            pairs.len()
        );
    };
    let MediaData::Mono {
        sample_rate,
        samples,
    } = &*data
    else {
        bail!("{}: not a clip", r.audio.display());
    };
    let x = crate::audio_in::resample(samples, *sample_rate, part.codec.sample_rate())?;
    let codes = part
        .clip_ids(&x)
        .with_context(|| format!("encoding {}", r.audio.display()))?;
    let mut ids = crate::engine::media::splice_tokens(&ids, &[at], vec![codes]);
    let prompt_len = ids.len();
    ids.extend(enc(&format!("{}<|end|>", r.text))?);
    Ok(ImageTextExample {
        pixels: None,
        ids: ids.clone(),
        slot: 0,
        answer: prompt_len..ids.len(),
    })
}

/// `tritter --train` for `task = "audio_text"`.
pub fn train(config: &Path, overrides: &[String], device: Option<&str>) -> Result<()> {
    let cfg = load_config(config, overrides)?;
    let dev = match device {
        Some(name) => {
            tritter_model::train::trainer::open_device(name, &format!("--device {name}"))?
        }
        None => Device::Cpu,
    };
    let records = read_records(&cfg.data.train)?;
    std::fs::create_dir_all(&cfg.run.dir)
        .with_context(|| format!("creating {}", cfg.run.dir.display()))?;
    let codec = Codec::load(&cfg.audio.codec, &Device::Cpu)
        .with_context(|| format!("[audio] codec: {}", cfg.audio.codec.display()))?;
    let tokens = AudioTokens {
        codebooks: cfg.audio.codebooks,
        codebook_size: codec.codebook_size(),
    };
    let audio_ids = u32::try_from(tokens.ids_needed()).context("too many audio codes")?;
    let pairs: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.prompt.as_str(), r.text.as_str()))
        .collect();
    let (tk, layout) = train_tokenizer(&pairs, cfg.data.vocab_size, 0, audio_ids)?;
    tokens.check(codec.num_quantizers(), &layout)?;
    let part = AudioPart::new(codec, tokens, layout, Device::Cpu);
    let tk_dir = cfg.run.dir.join("tokenizer");
    std::fs::create_dir_all(&tk_dir)?;
    tk.save(tk_dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("saving the tokenizer: {e}"))?;
    let mut text_cfg = cfg.model.preset_config()?;
    // Text ids, the specials, then the audio codes: the layout's whole table.
    text_cfg.vocab_size = (layout.total() as usize).max(tk.get_vocab_size(true));
    text_cfg.max_position_embeddings = text_cfg.max_position_embeddings.min(1024);
    let mut model = AudioTextModel::new(
        text_cfg,
        &cfg.audio.codec,
        tokens,
        cfg.run.seed,
        cfg.model.init_std,
        &dev,
    )?;
    eprintln!("encoding {} clips", records.len());
    let examples = records
        .iter()
        .map(|r| example(r, &tk, &part))
        .collect::<Result<Vec<_>>>()?;
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    if longest > model.text_cfg.max_position_embeddings {
        bail!(
            "the longest example is {longest} tokens, over the model's {} positions: use fewer codebooks or shorter clips",
            model.text_cfg.max_position_embeddings
        );
    }
    let stop = AtomicBool::new(false);
    let mut steps = StepLog::new(cfg.train.steps, cfg.train.log_every);
    let losses = train_audio_text(&mut model, &cfg, &examples, &stop, |s| steps.step(s))?;
    steps.finish(&cfg.run.dir.join("metrics.jsonl"))?;
    let final_dir = cfg.run.dir.join("final");
    model.save(&final_dir, &tk_dir)?;
    eprintln!(
        "{} steps, last loss {:.4}; model: {}",
        losses.len(),
        losses.last().copied().unwrap_or(f64::NAN),
        final_dir.display()
    );
    if let Some(test) = &cfg.data.test {
        let report = evaluate(&final_dir, &read_records(test)?)?;
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(cfg.run.dir.join("eval.json"), &json)?;
        println!("{json}");
    }
    Ok(())
}

/// Exact-match accuracy of a checkpoint on `records`, with each clip and with the clip silenced
/// (zeros of the same length and rate: the clip carries no information).
pub fn evaluate(model_dir: &Path, records: &[Record]) -> Result<serde_json::Value> {
    let mut eng = ModelEngine::load_dir(model_dir, &Device::Cpu, "cpu")?;
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let (mut hit, mut hit_silent) = (0usize, 0usize);
    for r in records {
        *answers.entry(r.text.clone()).or_default() += 1;
        let (msg, data) = message(r)?;
        if reply(&mut eng, msg.clone())?.trim() == r.text.trim() {
            hit += 1;
        }
        let mut silent = msg;
        if let MediaData::Mono {
            sample_rate,
            samples,
        } = &*data
        {
            silent.attachments[0].data = Some(Arc::new(MediaData::Mono {
                sample_rate: *sample_rate,
                samples: vec![0.0; samples.len()],
            }));
        }
        if reply(&mut eng, silent)?.trim() == r.text.trim() {
            hit_silent += 1;
        }
    }
    let n = records.len();
    let majority = answers.values().copied().max().unwrap_or(0);
    Ok(serde_json::json!({
        "held_out": n,
        "accuracy": hit as f64 / n as f64,
        "silenced_clip_accuracy": hit_silent as f64 / n as f64,
        "distinct_answers": answers.len(),
        "majority_answer_rate": majority as f64 / n as f64,
    }))
}
