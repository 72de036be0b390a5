//! A multimodal Tritter checkpoint: the text model's directory (`config.json`,
//! `model.safetensors`, `tokenizer.json`) plus, optionally, a `vision/` folder holding the image
//! path the language model reads (early fusion by embeddings):
//!
//! - `vision/config.json` — the SigLIP tower (`SiglipVisionConfig`, HF keys);
//! - `vision/preprocessor_config.json` — its image processor (`SiglipImageProcessor`);
//! - `vision/connector.json` — `{"scale_factor": 4, "text_hidden_size": C}`;
//! - `vision/model.safetensors` — `vision_model.*` (HF `SiglipVisionModel` names) and
//!   `connector.modality_projection.proj.weight` (Idefics3's connector).
//!
//! and, optionally, a `vqvae/` folder: a Chameleon VQ-VAE (`config.json` + `model.safetensors`,
//! HF `ChameleonVQVAE` names, [`crate::vqvae`]) whose codes are ids of the unified vocabulary's
//! image range (Chameleon-style early fusion by tokens).
//!
//! With `vision/`, an image becomes `tokens_per_image` rows of the text model's width, placed
//! between the `<img>` and `</img>` tokens of the prompt ([`crate::Segment::Embeds`]); with only
//! `vqvae/`, it becomes its code ids there ([`crate::Segment::Tokens`]). A directory with
//! neither is a text-only model. Writing is atomic per folder (temporary folder, fsync,
//! rename), like the text checkpoint.

use crate::checkpoint::{write_dir_atomically, write_file_synced};
use crate::error::{Error, Result};
use crate::vision::{preprocess, Connector, ProcessorConfig, SiglipVision, VisionConfig};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The folder of a checkpoint that holds the image path.
pub const VISION_DIR: &str = "vision";
/// The folder of a checkpoint that holds the VQ image tokenizer.
pub const VQ_DIR: &str = "vqvae";

/// `vision/connector.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Pixel-shuffle factor: `scale²` patches become one token.
    pub scale_factor: usize,
    /// Width of the text model the projection feeds.
    pub text_hidden_size: usize,
}

/// The image path of a multimodal checkpoint: processor, tower, connector.
#[derive(Debug, Clone)]
pub struct VisionPart {
    pub processor: ProcessorConfig,
    pub tower: SiglipVision,
    pub connector: Connector,
    pub connector_cfg: ConnectorConfig,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::ConfigJson {
        path: path.to_path_buf(),
        cause: e,
    })
}

impl VisionPart {
    /// Whether the checkpoint `dir` has an image path.
    pub fn present(dir: &Path) -> bool {
        dir.join(VISION_DIR).join("config.json").is_file()
    }

    /// The image path of checkpoint `dir` for a text model of `text_hidden` channels, or `None`
    /// when it has none.
    pub fn load(dir: &Path, text_hidden: usize, device: &Device) -> Result<Option<Self>> {
        if !Self::present(dir) {
            return Ok(None);
        }
        let vdir = dir.join(VISION_DIR);
        let processor = ProcessorConfig::from_file(&vdir.join("preprocessor_config.json"))?;
        let connector_cfg: ConnectorConfig = read_json(&vdir.join("connector.json"))?;
        if connector_cfg.text_hidden_size != text_hidden {
            return Err(Error::config(
                "text_hidden_size",
                format!(
                    "{}: the connector feeds {} channels, the text model has {text_hidden}",
                    vdir.join("connector.json").display(),
                    connector_cfg.text_hidden_size
                ),
            ));
        }
        let tower = SiglipVision::load(&vdir, device)?;
        let connector = Connector::load(
            &vdir.join("model.safetensors"),
            connector_cfg.scale_factor,
            tower.config().hidden_size,
            text_hidden,
            device,
        )?;
        let part = Self {
            processor,
            tower,
            connector,
            connector_cfg,
        };
        part.tokens_per_image()?;
        Ok(Some(part))
    }

    /// Rows one image takes in the sequence (patches / scale²).
    pub fn tokens_per_image(&self) -> Result<usize> {
        self.connector.tokens_for(self.tower.config().num_patches())
    }

    /// Parameters of tower and connector.
    pub fn param_count(&self) -> usize {
        self.tower.param_count() + self.connector.param_count()
    }

    /// `pixel_values` `[1, 3, H, W]` of an image, as the checkpoint's processor makes them.
    pub fn pixel_values(&self, img: &image::DynamicImage, device: &Device) -> Result<Tensor> {
        preprocess(img, &self.processor, device)
    }

    /// The image's rows for the text model, `[T, C]` flattened, from its pixel values.
    pub fn embed_pixels(&self, pixel_values: &Tensor) -> Result<Vec<f32>> {
        let h = self.tower.forward(pixel_values)?;
        let p = self.connector.forward(&h)?;
        Ok(p.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The image's rows for the text model, `[T, C]` flattened.
    pub fn embed_image(&self, img: &image::DynamicImage) -> Result<Vec<f32>> {
        let device = Device::Cpu;
        self.embed_pixels(&self.pixel_values(img, &device)?)
    }
}

/// Parameters of a SigLIP-B/16 (224 px) tower and its pixel-shuffle ×4 connector into a text
/// model of `text_hidden` channels, counted from the tower's tensor list.
pub fn siglip_b16_params(text_hidden: usize) -> u64 {
    let cfg = crate::vision::VisionConfig::siglip_base_patch16_224();
    let tower: usize = crate::vision::siglip::tensor_shapes(&cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let scale = crate::vision::DEFAULT_SCALE;
    (tower + cfg.hidden_size * scale * scale * text_hidden) as u64
}

/// Writes `dir/vision/` from the tower's config, processor, connector config and tensors
/// (`vision_model.*`, `connector.*`), atomically (a temporary folder renamed into place).
pub fn save_vision(
    dir: &Path,
    tower: &VisionConfig,
    processor: &ProcessorConfig,
    connector: &ConnectorConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let json = |v: serde_json::Value| -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(&v).map_err(|e| Error::Invalid(format!("JSON: {e}")))
    };
    let files = [
        ("config.json", json(tower.to_hf_json()?)?),
        ("preprocessor_config.json", json(processor.to_hf_json()?)?),
        (
            "connector.json",
            json(serde_json::to_value(connector).map_err(|e| Error::Invalid(e.to_string()))?)?,
        ),
    ];
    write_dir_atomically(&dir.join(VISION_DIR), |tmp| {
        for (name, bytes) in &files {
            write_file_synced(&tmp.join(name), bytes)?;
        }
        let st = tmp.join("model.safetensors");
        candle_core::safetensors::save(tensors, &st).map_err(|e| Error::Safetensors {
            path: st.clone(),
            msg: e.to_string(),
        })?;
        std::fs::File::open(&st)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&st, e))
    })
}

/// The VQ image tokenizer of a checkpoint, with the vocabulary layout its codes map into.
#[derive(Debug)]
pub struct VqPart {
    pub vq: crate::vqvae::VqVae,
    pub layout: crate::vocab::VocabLayout,
}

impl VqPart {
    /// Whether the checkpoint `dir` has a VQ tokenizer.
    pub fn present(dir: &Path) -> bool {
        dir.join(VQ_DIR).join("config.json").is_file()
    }

    /// The VQ tokenizer of checkpoint `dir` (or `None`) whose codes take the image range of a
    /// vocabulary of `text_ids` text ids and `vocab` ids in all (audio codes after the image
    /// codes, as [`crate::vocab::VocabLayout`] orders them).
    pub fn load(dir: &Path, text_ids: u32, vocab: usize, device: &Device) -> Result<Option<Self>> {
        if !Self::present(dir) {
            return Ok(None);
        }
        let vq = crate::vqvae::VqVae::load(&dir.join(VQ_DIR), device)?;
        let codes = vq.config().num_embeddings as u32;
        let specials = crate::vocab::Special::ALL.len() as u32;
        let audio = (vocab as u64)
            .checked_sub(u64::from(text_ids) + u64::from(specials) + u64::from(codes))
            .ok_or_else(|| {
                Error::config(
                    "num_embeddings",
                    format!(
                        "{}: {codes} VQ codes do not fit a vocabulary of {vocab} ids with {text_ids} text ids",
                        dir.join(VQ_DIR).display()
                    ),
                )
            })?;
        let layout = crate::vocab::VocabLayout::new(text_ids, codes, audio as u32)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        crate::vqvae::check_codebook_fits(&layout, vq.config())?;
        Ok(Some(Self { vq, layout }))
    }

    /// Pixels in [-1, 1] at the tokenizer's resolution, `[1, 3, R, R]`.
    pub fn pixel_values(&self, img: &image::DynamicImage, device: &Device) -> Result<Tensor> {
        vq_pixel_values(img, self.vq.config().resolution, device)
    }

    /// The image's vocabulary ids (its codes in the image range), row-major.
    pub fn image_ids(&self, img: &image::DynamicImage) -> Result<Vec<u32>> {
        let px = self.pixel_values(img, self.vq.device())?;
        let codes = self.vq.encode(&px)?.flatten_all()?.to_vec1::<i64>()?;
        crate::vqvae::codes_to_ids(&self.layout, &codes)
    }
}

/// An image as a VQ tokenizer reads it: RGB, resized to `side`² (bilinear, antialiased),
/// scaled to [-1, 1], channels first, `[1, 3, side, side]`.
pub fn vq_pixel_values(img: &image::DynamicImage, side: usize, device: &Device) -> Result<Tensor> {
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Invalid("the image has no pixels".into()));
    }
    let s = u32::try_from(side).map_err(|_| Error::Invalid(format!("resolution {side}")))?;
    let rgb = img
        .resize_exact(s, s, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let mut v = vec![0f32; 3 * side * side];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            v[c * side * side + i] = f32::from(p.0[c]) / 127.5 - 1.0;
        }
    }
    Ok(Tensor::from_vec(v, (1, 3, side, side), device)?)
}
