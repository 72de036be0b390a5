//! `tritter --train CONFIG` with `task = "image_text"`: trains a multimodal model on JSONL
//! records `{"image": PATH, "prompt": TEXT, "text": ANSWER}` (paths relative to the JSONL file).
//! A byte-level BPE is trained on the records' text; each record becomes the exact sequence the
//! chat engine builds at inference (Tritter's chat format, `<img></img>` before the prompt, the
//! image's rows between them) with the answer and `<|end|>` as the loss span. The model is
//! written to `RUN/final/` (text checkpoint + `vision/`); with `data.test`, held-out exact-match
//! accuracy is measured through the chat engine itself, beside the same model given a blank
//! image, and written to `RUN/eval.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Deserialize;
use tokenizers::Tokenizer;
use tritter_model::data::config::TokenizerConfig;
use tritter_model::train::image_text::{
    train_image_text, ImageStep, ImageTextConfig, ImageTextExample, ImageTextModel,
};

use tritter_model::multimodal::VqPart;

use crate::engine::chat_format::ChatFormat;
use crate::engine::model::ModelEngine;
use crate::engine::{ChatMessage, Engine, GenEvent, GenRequest, MediaData, Role, Sampling};

/// One JSONL record.
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub image: PathBuf,
    #[serde(default = "default_prompt")]
    pub prompt: String,
    pub text: String,
}

fn default_prompt() -> String {
    "what is in this picture?".into()
}

/// Reads the records: a JSONL file (image paths relative to its folder), or a folder of pairs
/// (`NAME.png`/`.jpg`/`.jpeg` with `NAME.txt` holding the answer; the default prompt).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    if path.is_dir() {
        return read_pairs(path);
    }
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
                "{}:{}: not a {{image, prompt, text}} record",
                path.display(),
                i + 1
            )
        })?;
        if r.image.is_relative() {
            r.image = base.join(&r.image);
        }
        out.push(r);
    }
    if out.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(out)
}

/// A folder of picture + `.txt` pairs, in name order; a picture without its text is an error.
fn read_pairs(dir: &Path) -> Result<Vec<Record>> {
    let mut pics: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| {
                ["png", "jpg", "jpeg"].contains(&x.to_string_lossy().to_lowercase().as_str())
            })
        })
        .collect();
    pics.sort();
    let mut out = Vec::with_capacity(pics.len());
    for image in pics {
        let txt = image.with_extension("txt");
        let text = std::fs::read_to_string(&txt).with_context(|| {
            format!(
                "{}: no answer text beside it ({})",
                image.display(),
                txt.display()
            )
        })?;
        out.push(Record {
            image,
            prompt: default_prompt(),
            text: text.trim().to_string(),
        });
    }
    if out.is_empty() {
        bail!("{}: no PNG or JPEG pictures", dir.display());
    }
    Ok(out)
}

/// Loads the config: TOML with `--set` overrides, paths relative to the file.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<ImageTextConfig> {
    let (mut cfg, fix): (ImageTextConfig, _) = crate::cli::train::read_config(path, overrides)?;
    cfg.run.dir = fix(&cfg.run.dir);
    cfg.data.train = fix(&cfg.data.train);
    cfg.data.test = cfg.data.test.as_deref().map(&fix);
    cfg.vision.init = cfg.vision.init.as_deref().map(&fix);
    cfg.vision.vq = cfg.vision.vq.as_deref().map(&fix);
    if cfg.train.batch_size == 0 || cfg.train.steps == 0 {
        bail!(
            "{}: train.steps and train.batch_size must be > 0",
            path.display()
        );
    }
    Ok(cfg)
}

/// The user message of a record, with its image attached (decoded, with limits).
fn message(r: &Record) -> Result<(ChatMessage, Arc<MediaData>)> {
    let (a, _) = crate::attach::load_image(&r.image)?;
    let data = a.data.clone().context("the image decoded to nothing")?;
    let mut m = ChatMessage::new(Role::User, r.prompt.clone());
    m.attachments.push(a);
    Ok((m, data))
}

/// Trains the text part of the vocabulary on the (prompt, answer) pairs as the chat format
/// writes them; the image range holds `image_codes` ids (a VQ tokenizer's codebook, or none),
/// the audio range `audio_codes` (a codec's codebooks the model sees, or none).
pub(crate) fn train_tokenizer(
    pairs: &[(&str, &str)],
    vocab_size: usize,
    image_codes: u32,
    audio_codes: u32,
) -> Result<(Tokenizer, tritter_model::vocab::VocabLayout)> {
    let mut docs: Vec<String> = pairs
        .iter()
        .map(|(prompt, text)| format!("<|user|>\n{prompt}<|end|>\n<|assistant|>\n{text}<|end|>\n"))
        .collect();
    docs.sort();
    docs.dedup();
    let tcfg = TokenizerConfig {
        vocab_size,
        min_frequency: 1,
        image_codes: 0,
        audio_codes: 0,
        ..TokenizerConfig::default()
    };
    let mut tk = tritter_model::data::tokenizer::train_bpe(docs.into_iter(), &tcfg)?;
    let layout = tritter_model::data::tokenizer::attach_layout(&mut tk, image_codes, audio_codes)?;
    Ok((tk, layout))
}

/// The training sequence of a record, built as the engine builds a prompt.
fn example(
    r: &Record,
    tk: &Tokenizer,
    model: &ImageTextModel,
    vq: Option<&VqPart>,
) -> Result<ImageTextExample> {
    let (msg, data) = message(r)?;
    let text = ChatFormat::tritter().render(&[msg])?;
    let enc = |s: &str| -> Result<Vec<u32>> {
        Ok(tk
            .encode(s, false)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?
            .get_ids()
            .to_vec())
    };
    let mut ids = enc(&text)?;
    let start = tk.token_to_id("<img>").context("no <img> token")?;
    let end = tk.token_to_id("</img>").context("no </img> token")?;
    let pairs = crate::engine::media::marker_pairs(&ids, start, end);
    let [at] = pairs[..] else {
        bail!(
            "{}: the prompt has {} image markers, expected 1",
            r.image.display(),
            pairs.len()
        );
    };
    let img = crate::engine::media::to_image(&data).context("bad pixels")?;
    let pixels = match vq {
        Some(q) => {
            let codes = q.image_ids(&img)?;
            ids = crate::engine::media::splice_tokens(&ids, &[at], vec![codes]);
            None
        }
        None => Some(model.processor_pixels(&img)?),
    };
    let prompt_len = ids.len();
    ids.extend(enc(&format!("{}<|end|>", r.text))?);
    Ok(ImageTextExample {
        pixels,
        ids: ids.clone(),
        slot: at + 1,
        answer: prompt_len..ids.len(),
    })
}

/// `tritter --train` for `task = "image_text"`.
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
    let vq = match &cfg.vision.vq {
        Some(dir) => Some(
            tritter_model::vqvae::VqVae::load(dir, &dev)
                .with_context(|| format!("[vision] vq: {}", dir.display()))?,
        ),
        None => None,
    };
    let codes = vq.as_ref().map_or(0, |q| q.config().num_embeddings as u32);
    let pairs: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.prompt.as_str(), r.text.as_str()))
        .collect();
    let (tk, layout) = train_tokenizer(&pairs, cfg.data.vocab_size, codes, 0)?;
    let vq = vq.map(|vq| VqPart { vq, layout });
    let tk_dir = cfg.run.dir.join("tokenizer");
    std::fs::create_dir_all(&tk_dir)?;
    tk.save(tk_dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("saving the tokenizer: {e}"))?;
    let text_cfg = text_config(&cfg, (layout.total() as usize).max(tk.get_vocab_size(true)))?;
    let mut model = ImageTextModel::new(
        text_cfg,
        &cfg.vision,
        cfg.run.seed,
        cfg.model.init_std,
        &dev,
    )?;
    eprintln!("building {} training sequences", records.len());
    let examples = records
        .par_iter()
        .map(|r| example(r, &tk, &model, vq.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let stop = AtomicBool::new(false);
    let mut steps = StepLog::new(cfg.train.steps, cfg.train.log_every);
    let losses = train_image_text(&mut model, &cfg, &examples, &stop, |s| steps.step(s))?;
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

/// The text model's config: the preset with `[model]`'s overrides and the tokenizer's size.
fn text_config(cfg: &ImageTextConfig, vocab: usize) -> Result<tritter_model::Config> {
    let mut c = cfg.model.preset_config()?;
    c.vocab_size = vocab;
    c.max_position_embeddings = c.max_position_embeddings.min(1024);
    Ok(c)
}

/// Exact-match accuracy of a checkpoint on `records`, with each image and with a blank one.
pub fn evaluate(model_dir: &Path, records: &[Record]) -> Result<serde_json::Value> {
    let mut eng = ModelEngine::load_dir(model_dir, &Device::Cpu, "cpu")?;
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let (mut hit, mut hit_blank) = (0usize, 0usize);
    for r in records {
        *answers.entry(r.text.clone()).or_default() += 1;
        let (msg, data) = message(r)?;
        if reply(&mut eng, msg.clone())?.trim() == r.text.trim() {
            hit += 1;
        }
        let mut blank = msg;
        blank.attachments[0].data = Some(Arc::new(blank_like(&data)));
        if reply(&mut eng, blank)?.trim() == r.text.trim() {
            hit_blank += 1;
        }
    }
    let n = records.len();
    let majority = answers.values().copied().max().unwrap_or(0);
    Ok(serde_json::json!({
        "held_out": n,
        "accuracy": hit as f64 / n as f64,
        "blank_image_accuracy": hit_blank as f64 / n as f64,
        "distinct_answers": answers.len(),
        "majority_answer_rate": majority as f64 / n as f64,
    }))
}

/// A uniform mid-grey picture of the same size: the image carries no information.
fn blank_like(data: &MediaData) -> MediaData {
    match data {
        MediaData::Rgb8 {
            width,
            height,
            pixels,
        } => MediaData::Rgb8 {
            width: *width,
            height: *height,
            pixels: vec![128; pixels.len()],
        },
        other => other.clone(),
    }
}

/// The greedy reply of the engine to one message.
pub(crate) fn reply(eng: &mut ModelEngine, msg: ChatMessage) -> Result<String> {
    let req = GenRequest {
        messages: vec![msg],
        latent: crate::engine::LatentMode::Off,
        latent_min_cosine: 0.0,
        raw: false,
        max_new_tokens: 24,
        sampling: Sampling {
            temperature: 0.0,
            ..Sampling::default()
        },
    };
    let mut out = String::new();
    let mut err = None;
    eng.generate(&req, &AtomicBool::new(false), &mut |e| match e {
        GenEvent::Token { text } => out.push_str(&text),
        GenEvent::Error(e) => err = Some(e),
        _ => {}
    })?;
    if let Some(e) = err {
        bail!("generation failed: {e}");
    }
    Ok(out)
}

/// The progress bar and `metrics.jsonl` lines of an answer-trained run: a record at step 1 and
/// every `every` steps, printed too when the bar is hidden (stderr not a terminal).
pub(crate) struct StepLog {
    bar: ProgressBar,
    every: u64,
    log: String,
}

impl StepLog {
    pub(crate) fn new(steps: u64, every: u64) -> Self {
        let bar = ProgressBar::new(steps).with_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self {
            bar,
            every: every.max(1),
            log: String::new(),
        }
    }

    pub(crate) fn step(&mut self, s: &ImageStep) {
        self.bar.set_position(s.step);
        self.bar
            .set_message(format!("loss {:.3} lr {:.2e}", s.loss, s.lr));
        if s.step.checked_rem(self.every) == Some(0) || s.step == 1 {
            if self.bar.is_hidden() {
                eprintln!("step {}: loss {:.4} lr {:.2e}", s.step, s.loss, s.lr);
            }
            self.log.push_str(&format!(
                "{{\"step\":{},\"loss\":{},\"lr\":{},\"grad_norm\":{}}}\n",
                s.step, s.loss, s.lr, s.grad_norm
            ));
        }
    }

    /// Continues the records of a resumed run: the rows of `path` up to step `done` are kept
    /// (later ones were logged after the checkpoint and will be logged again).
    pub(crate) fn resumed(mut self, path: &Path, done: u64) -> Result<Self> {
        if done == 0 {
            return Ok(self);
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let step = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64));
            if step.is_some_and(|s| s <= done) {
                self.log.push_str(line);
                self.log.push('\n');
            }
        }
        self.bar.set_position(done);
        Ok(self)
    }

    /// Writes the records so far to `path` (atomically: beside it, then renamed), so a run
    /// killed after a checkpoint keeps its rows up to it.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, &self.log)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Ends the bar and writes the records to `path`.
    pub(crate) fn finish(self, path: &Path) -> Result<()> {
        self.bar.finish();
        std::fs::write(path, self.log).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_from_jsonl_or_a_folder_of_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, text) in [("b", "a blue square\n"), ("a", "a red circle")] {
            image::RgbImage::new(4, 4)
                .save(d.join(format!("{name}.png")))
                .unwrap();
            std::fs::write(d.join(format!("{name}.txt")), text).unwrap();
        }
        let r = read_records(d).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].image.clone(), r[0].text.as_str()),
            (d.join("a.png"), "a red circle")
        );
        assert_eq!(r[1].text, "a blue square");
        assert_eq!(r[1].prompt, default_prompt());
        let jsonl = d.join("x.jsonl");
        std::fs::write(
            &jsonl,
            "{\"image\": \"a.png\", \"text\": \"t\", \"prompt\": \"q\"}\n\n",
        )
        .unwrap();
        let r = read_records(&jsonl).unwrap();
        assert_eq!(
            (r[0].image.clone(), r[0].prompt.as_str()),
            (d.join("a.png"), "q")
        );
        std::fs::write(&jsonl, "{\"text\": \"no image\"}\n").unwrap();
        let e = read_records(&jsonl).unwrap_err().to_string();
        assert!(e.contains("x.jsonl:1"), "{e}");
        std::fs::remove_file(d.join("b.txt")).unwrap();
        let e = format!("{:#}", read_records(d).unwrap_err());
        assert!(e.contains("b.png") && e.contains("no answer text"), "{e}");
    }
}
