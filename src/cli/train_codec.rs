//! `tritter --train CONFIG` with `task = "codec"`: trains an EnCodec-architecture audio codec
//! (`[codec]` holds HF `EncodecConfig` keys) on clips — a JSONL of records with an `"audio"`
//! path (relative to the file; other keys ignored, so an audio–text JSONL serves), or a folder
//! of audio files. Clips are decoded, downmixed and resampled to the codec's rate. The codec is
//! written to `RUN/final/` in HF's `EncodecModel` layout (what `[audio] codec` of an
//! `audio_text` run and a checkpoint's `audio/` read); with `data.test`, the reconstruction SNR
//! and spectral loss on those clips go to `RUN/eval.json`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use tritter_model::train::codec::{
    reconstruction_report, train_codec, CodecRunConfig, CodecTrainer,
};

/// The audio files a data path names: the `"audio"` of each JSONL record, or a folder's audio
/// files in name order.
pub fn clip_paths(path: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    if path.is_dir() {
        for e in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            let p = e?.path();
            let ext = p
                .extension()
                .map(|x| x.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            if ["wav", "flac", "mp3", "ogg"].contains(&ext.as_str()) {
                out.push(p);
            }
        }
        out.sort();
    } else {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            let Some(a) = v.get("audio").and_then(|a| a.as_str()) else {
                bail!("{}:{}: no \"audio\" path", path.display(), i + 1);
            };
            let p = PathBuf::from(a);
            out.push(if p.is_relative() { base.join(p) } else { p });
        }
    }
    if out.is_empty() {
        bail!("{}: no clips", path.display());
    }
    Ok(out)
}

/// Every clip of `path`, mono at `rate`.
fn load_clips(path: &Path, rate: u32) -> Result<Vec<Vec<f32>>> {
    clip_paths(path)?
        .iter()
        .map(|p| crate::audio_in::load_mono_at(p, rate))
        .collect()
}

/// Loads the config: TOML with `--set` overrides, paths relative to the file.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<CodecRunConfig> {
    let (mut cfg, fix): (CodecRunConfig, _) = crate::cli::train::read_config(path, overrides)?;
    cfg.run.dir = fix(&cfg.run.dir);
    cfg.data.train = fix(&cfg.data.train);
    cfg.data.test = cfg.data.test.as_deref().map(&fix);
    if cfg.train.batch_size == 0 || cfg.train.steps == 0 {
        bail!(
            "{}: train.steps and train.batch_size must be > 0",
            path.display()
        );
    }
    Ok(cfg)
}

/// `tritter --train` for `task = "codec"`.
pub fn train(config: &Path, overrides: &[String], device: Option<&str>) -> Result<()> {
    let cfg = load_config(config, overrides)?;
    let dev = match device {
        Some(name) => {
            tritter_model::train::trainer::open_device(name, &format!("--device {name}"))?
        }
        None => Device::Cpu,
    };
    let rate = cfg.codec.sampling_rate;
    let clips = load_clips(&cfg.data.train, rate)?;
    std::fs::create_dir_all(&cfg.run.dir)
        .with_context(|| format!("creating {}", cfg.run.dir.display()))?;
    let trainer = CodecTrainer::new(&cfg.codec, cfg.run.seed, &dev)?;
    eprintln!(
        "codec: {} parameters, {} codebooks × {}, {:.1} frames/s; {} clips",
        trainer.model.param_count(),
        trainer.model.num_quantizers(),
        trainer.model.codebook_size(),
        trainer.model.frame_rate(),
        clips.len()
    );
    let bar = ProgressBar::new(cfg.train.steps).with_style(
        ProgressStyle::with_template("[{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let stop = AtomicBool::new(false);
    let mut log = String::new();
    let losses = train_codec(&trainer, &cfg, &clips, &stop, |s| {
        bar.set_position(s.step);
        bar.set_message(format!("loss {:.3} spectral {:.3}", s.loss, s.spectral));
        if s.step % cfg.train.log_every.max(1) == 0 || s.step == 1 {
            if bar.is_hidden() {
                eprintln!(
                    "step {}: loss {:.4} (time {:.4}, spectral {:.4}, commitment {:.4}, codebook {:.4}, semantic {:.4})",
                    s.step, s.loss, s.time, s.spectral, s.commitment, s.codebook, s.semantic
                );
            }
            log.push_str(&format!(
                "{{\"step\":{},\"loss\":{},\"time\":{},\"spectral\":{},\"commitment\":{},\"codebook\":{},\"semantic\":{},\"lr\":{}}}\n",
                s.step, s.loss, s.time, s.spectral, s.commitment, s.codebook, s.semantic, s.lr
            ));
        }
    })?;
    bar.finish();
    std::fs::write(cfg.run.dir.join("metrics.jsonl"), log)?;
    let final_dir = cfg.run.dir.join("final");
    trainer.model.save(&final_dir)?;
    eprintln!(
        "{} steps, last loss {:.4}; codec: {}",
        losses.len(),
        losses.last().copied().unwrap_or(f64::NAN),
        final_dir.display()
    );
    if let Some(test) = &cfg.data.test {
        let clips = load_clips(test, rate)?;
        let (snr, spectral) = reconstruction_report(&trainer.model, &clips, &cfg.loss.scales)?;
        let json = serde_json::to_string_pretty(&serde_json::json!({
            "held_out": clips.len(),
            "snr_db": snr,
            "spectral_loss": spectral,
            "codebooks": trainer.model.num_quantizers(),
            "frame_rate": trainer.model.frame_rate(),
        }))?;
        std::fs::write(cfg.run.dir.join("eval.json"), &json)?;
        println!("{json}");
    }
    Ok(())
}
