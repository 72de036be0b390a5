//! `tritter --train CONFIG` with `task = "vqvae"`: trains a Chameleon-layout VQ-VAE image
//! tokenizer on a folder of pictures (or the images of an `{image, ...}` JSONL) with the
//! reconstruction + codebook + commitment losses, and writes it to `RUN/final/` (`config.json`
//! and `model.safetensors`, HF `ChameleonVQVAE` names plus the `decoder.*`), ready to be a
//! checkpoint's `vqvae/` folder. `RUN/metrics.jsonl` holds the losses; the closing line reports
//! the reconstruction error on held-out pictures when `data.test` is given.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tritter_model::multimodal::vq_pixel_values;
use tritter_model::vqvae::{train_vqvae, VqTrainOptions, VqVaeConfig};

/// The `task = "vqvae"` config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqConfig {
    pub task: String,
    #[serde(default)]
    pub run: tritter_model::train::config::RunSection,
    /// The tokenizer's architecture (HF `ChameleonVQVAEConfig` keys).
    pub model: VqVaeConfig,
    #[serde(default)]
    pub train: VqTrain,
    pub data: VqData,
}

/// `[train]` of a VQ-VAE run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VqTrain {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
}

impl Default for VqTrain {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 8,
            lr: 1e-3,
        }
    }
}

/// `[data]`: training pictures (a folder of PNG/JPEG files or a JSONL of `{image}` records) and
/// optional held-out ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqData {
    pub train: PathBuf,
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// Use at most this many training pictures (all by default).
    #[serde(default)]
    pub max_images: Option<usize>,
}

fn image_paths(p: &Path) -> Result<Vec<PathBuf>> {
    if p.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|q| {
                q.extension().is_some_and(|x| {
                    ["png", "jpg", "jpeg"].contains(&x.to_string_lossy().to_lowercase().as_str())
                })
            })
            .collect();
        v.sort();
        return Ok(v);
    }
    Ok(crate::cli::train_vision::read_records(p)?
        .into_iter()
        .map(|r| r.image)
        .collect())
}

fn load_pixels(paths: &[PathBuf], side: usize) -> Result<Vec<Tensor>> {
    paths
        .iter()
        .map(|p| {
            let (_, img) = crate::attach::load_image(p)?;
            Ok(vq_pixel_values(&img, side, &Device::Cpu)?)
        })
        .collect()
}

pub fn load_config(path: &Path, overrides: &[String]) -> Result<VqConfig> {
    let (mut cfg, fix): (VqConfig, _) = crate::cli::train::read_config(path, overrides)?;
    cfg.run.dir = fix(&cfg.run.dir);
    cfg.data.train = fix(&cfg.data.train);
    cfg.data.test = cfg.data.test.as_deref().map(&fix);
    cfg.model.validate()?;
    Ok(cfg)
}

/// `tritter --train` for `task = "vqvae"`.
pub fn train(config: &Path, overrides: &[String], device: Option<&str>) -> Result<()> {
    let cfg = load_config(config, overrides)?;
    let dev = match device {
        Some(name) => {
            tritter_model::train::trainer::open_device(name, &format!("--device {name}"))?
        }
        None => Device::Cpu,
    };
    let mut paths = image_paths(&cfg.data.train)?;
    if let Some(n) = cfg.data.max_images {
        paths.truncate(n);
    }
    if paths.is_empty() {
        bail!("{}: no PNG or JPEG pictures", cfg.data.train.display());
    }
    let side = cfg.model.resolution;
    eprintln!("loading {} pictures at {side}×{side}", paths.len());
    let images = load_pixels(&paths, side)?;
    let opts = VqTrainOptions {
        model: cfg.model.clone(),
        steps: cfg.train.steps,
        batch_size: cfg.train.batch_size,
        lr: cfg.train.lr,
        seed: cfg.run.seed,
        device: dev,
        ..VqTrainOptions::default()
    };
    std::fs::create_dir_all(&cfg.run.dir)?;
    let mut log = String::new();
    let (model, _) = train_vqvae(&images, &opts, |step, l| {
        if let Ok([recon, codebook, commitment, total]) = l.values() {
            log.push_str(&format!(
                "{{\"step\":{step},\"recon\":{recon},\"codebook\":{codebook},\"commitment\":{commitment},\"loss\":{total}}}\n"
            ));
            if step % 50 == 0 {
                eprintln!("step {step}: loss {total:.4} (reconstruction {recon:.4})");
            }
        }
    })?;
    std::fs::write(cfg.run.dir.join("metrics.jsonl"), log)?;
    let out = cfg.run.dir.join("final");
    model.save(&out)?;
    if let Some(test) = &cfg.data.test {
        let held = load_pixels(&image_paths(test)?, side)?;
        let mut se = 0f64;
        for px in &held {
            let px = px.to_device(model.device())?;
            let r = model.decode(&model.encode(&px)?, model.grid(side, side)?)?;
            se += (r - &px)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
        }
        eprintln!(
            "held-out reconstruction MSE {:.5} over {} pictures (pixels in [-1, 1])",
            se / held.len().max(1) as f64,
            held.len()
        );
    }
    eprintln!(
        "tokenizer: {} (copy it to a checkpoint's vqvae/)",
        out.display()
    );
    Ok(())
}
