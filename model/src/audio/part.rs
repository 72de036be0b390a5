//! The audio part of a multimodal checkpoint: an `audio/` folder beside the text model holding
//!
//! - `audio/config.json` + `audio/model.safetensors` — the codec in Hugging Face's layout
//!   (`EncodecModel` or `MimiModel`, chosen by `model_type`; [`super::Codec`]);
//! - `audio/tokens.json` — [`AudioTokens`]: how many codebooks the language model sees.
//!
//! An attached clip (mono, resampled to the codec's rate) becomes its codes' vocabulary ids
//! ([`AudioTokens::codes_to_ids`]) between `<audio>` and `</audio>` — early fusion by tokens.
//! The audio range starts after the image range, whose size is the VQ tokenizer's codebook when
//! the checkpoint has `vqvae/` and zero otherwise. Writing is atomic per folder.

use super::{AudioTokens, Codec};
use crate::checkpoint::{write_dir_atomically, write_file_synced};
use crate::error::{Error, Result};
use crate::vocab::{Special, VocabLayout};
use candle_core::{Device, Tensor};
use std::path::Path;

/// The folder of a checkpoint that holds the audio codec.
pub const AUDIO_DIR: &str = "audio";
/// The file of `audio/` that says how the language model reads the codes.
pub const TOKENS_FILE: &str = "tokens.json";

/// A checkpoint's codec with the vocabulary layout its codes map into.
#[derive(Debug, Clone)]
pub struct AudioPart {
    pub codec: Codec,
    pub tokens: AudioTokens,
    pub layout: VocabLayout,
    device: Device,
}

/// Image codes of checkpoint `dir`: its VQ tokenizer's codebook size, or 0 without one.
fn image_codes(dir: &Path) -> Result<u32> {
    let vq = dir.join(crate::multimodal::VQ_DIR).join("config.json");
    if !vq.is_file() {
        return Ok(0);
    }
    let cfg = crate::vqvae::VqVaeConfig::from_file(&vq)?;
    u32::try_from(cfg.num_embeddings)
        .map_err(|_| Error::config("num_embeddings", "does not fit the vocabulary"))
}

impl AudioPart {
    /// A part from its pieces (a trainer that has just built the layout).
    pub fn new(codec: Codec, tokens: AudioTokens, layout: VocabLayout, device: Device) -> Self {
        Self {
            codec,
            tokens,
            layout,
            device,
        }
    }

    /// Whether checkpoint `dir` has an audio codec.
    pub fn present(dir: &Path) -> bool {
        dir.join(AUDIO_DIR).join("config.json").is_file()
    }

    /// The audio part of checkpoint `dir` (or `None`) for a vocabulary of `text_ids` text ids
    /// and `vocab` ids in all.
    pub fn load(dir: &Path, text_ids: u32, vocab: usize, device: &Device) -> Result<Option<Self>> {
        if !Self::present(dir) {
            return Ok(None);
        }
        let folder = dir.join(AUDIO_DIR);
        let codec = Codec::load(&folder, device)?;
        let path = folder.join(TOKENS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let tokens: AudioTokens =
            serde_json::from_str(&text).map_err(|e| Error::ConfigJson { path, cause: e })?;
        if tokens.codebook_size != codec.codebook_size() {
            return Err(Error::config(
                "codebook_size",
                format!(
                    "{}: tokens.json says {} but the codec's codebooks have {}",
                    folder.display(),
                    tokens.codebook_size,
                    codec.codebook_size()
                ),
            ));
        }
        let image = image_codes(dir)?;
        let specials = Special::ALL.len() as u64;
        let audio = (vocab as u64)
            .checked_sub(u64::from(text_ids) + specials + u64::from(image))
            .and_then(|a| u32::try_from(a).ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "a vocabulary of {vocab} ids has no room for audio after {text_ids} text ids and {image} image codes"
                ))
            })?;
        let layout =
            VocabLayout::new(text_ids, image, audio).map_err(|e| Error::Invalid(e.to_string()))?;
        tokens.check(codec.num_quantizers(), &layout)?;
        Ok(Some(Self {
            codec,
            tokens,
            layout,
            device: device.clone(),
        }))
    }

    /// The codes `[codebooks][T]` of a mono clip at the codec's rate.
    pub fn clip_codes(&self, samples: &[f32]) -> Result<Vec<Vec<i64>>> {
        if samples.is_empty() {
            return Err(Error::Invalid("the clip has no samples".into()));
        }
        let x = Tensor::from_slice(samples, (1, 1, samples.len()), &self.device)?;
        let codes = self.codec.encode(&x, self.tokens.codebooks)?;
        Ok(codes.squeeze(0)?.to_vec2::<i64>()?)
    }

    /// The vocabulary ids of a mono clip at the codec's rate (frame-major).
    pub fn clip_ids(&self, samples: &[f32]) -> Result<Vec<u32>> {
        let codes = self.clip_codes(samples)?;
        self.tokens.codes_to_ids(&self.layout, &codes)
    }

    /// Tokens a clip of `samples` samples (at the codec's rate) takes: frames × codebooks.
    pub fn tokens_for(&self, samples: usize) -> usize {
        let secs = samples as f64 / f64::from(self.codec.sample_rate().max(1));
        (secs * self.codec.frame_rate()).ceil() as usize * self.tokens.codebooks
    }
}

/// Writes `dir/audio/` atomically: the codec folder `codec_dir`'s `config.json` and
/// `model.safetensors`, and `tokens.json`.
pub fn save_audio(dir: &Path, codec_dir: &Path, tokens: &AudioTokens) -> Result<()> {
    let json =
        serde_json::to_vec_pretty(tokens).map_err(|e| Error::Invalid(format!("JSON: {e}")))?;
    let read = |name: &str| -> Result<Vec<u8>> {
        let p = codec_dir.join(name);
        std::fs::read(&p).map_err(|e| Error::io(&p, e))
    };
    let config = read("config.json")?;
    let weights = read("model.safetensors")?;
    write_dir_atomically(&dir.join(AUDIO_DIR), |tmp| {
        write_file_synced(&tmp.join("config.json"), &config)?;
        write_file_synced(&tmp.join("model.safetensors"), &weights)?;
        write_file_synced(&tmp.join(TOKENS_FILE), &json)
    })
}
