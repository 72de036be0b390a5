//! Training on audio–text pairs (`task = "audio_text"`): the ternary text model learns to
//! continue a prompt that holds a clip — its codec codes as tokens of the unified vocabulary's
//! audio range between `<audio>` and `</audio>` (early fusion by tokens) — with its answer.
//!
//! The codec is fixed (a `task = "codec"` run's `final/`, or any Hugging Face EnCodec / Mimi
//! directory); its codes are computed once per clip before training. The loss is the next-token
//! cross-entropy of the answer span only, through the loop every answer-trained task shares
//! ([`super::image_text::train_answers`]). The checkpoint is the text model plus `audio/`.

use super::config::{ModelSection, OptimSection, QatMode, RunSection, ScheduleSection};
use super::image_text::{
    answer_loss, train_answers, AnswerLoop, ImageDataSection, ImageStep, ImageTextExample,
    ImageTrainSection,
};
use super::TrainError;
use crate::audio::AudioTokens;
use crate::config::Config;
use crate::weights::Params;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// `[audio]`: the codec and how many of its codebooks the language model sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioSection {
    /// The codec's directory (`config.json` + `model.safetensors`, HF `EncodecModel` or
    /// `MimiModel` layout).
    pub codec: PathBuf,
    /// Codebooks per frame the language model sees: 1 = the first (Mimi's semantic one).
    pub codebooks: usize,
}

impl Default for AudioSection {
    fn default() -> Self {
        Self {
            codec: PathBuf::from("codec"),
            codebooks: 1,
        }
    }
}

/// The whole `task = "audio_text"` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioTextConfig {
    pub task: String,
    #[serde(default)]
    pub run: RunSection,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub audio: AudioSection,
    #[serde(default)]
    pub train: ImageTrainSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub schedule: ScheduleSection,
    /// `train` / `test`: JSONL of `{"audio", "prompt", "text"}`; `vocab_size`: the text BPE's.
    #[serde(default)]
    pub data: ImageDataSection,
}

/// The trainable text model of an audio–text run and the codec it reads clips with.
pub struct AudioTextModel {
    pub text_cfg: Config,
    pub params: Params,
    pub tokens: AudioTokens,
    codec_dir: PathBuf,
}

impl AudioTextModel {
    /// A random text model of `text_cfg` reading codes of the codec in `codec_dir`.
    pub fn new(
        text_cfg: Config,
        codec_dir: &Path,
        tokens: AudioTokens,
        seed: u64,
        init_std: f32,
        device: &Device,
    ) -> Result<Self, TrainError> {
        Ok(Self {
            params: Params::init(&text_cfg, seed, init_std, device)?,
            text_cfg,
            tokens,
            codec_dir: codec_dir.to_path_buf(),
        })
    }

    /// Mean answer-token cross-entropy of a batch (differentiable); the clips are already
    /// tokens in each example's ids.
    pub fn loss(&self, batch: &[&ImageTextExample], ternary: bool) -> Result<Tensor, TrainError> {
        if batch.iter().any(|e| e.pixels.is_some()) {
            return Err(TrainError::Config(
                "an audio–text example carries pixels".into(),
            ));
        }
        answer_loss(&self.text_cfg, &self.params, None, batch, ternary)
    }

    /// Writes the inference checkpoint: the packed ternary text model with the tokenizer files
    /// of `tokenizer_dir`, then `audio/` (codec + `tokens.json`), each folder atomically.
    pub fn save(&self, dir: &Path, tokenizer_dir: &Path) -> Result<(), TrainError> {
        crate::checkpoint::save_checkpoint(dir, &self.text_cfg, &self.params, Some(tokenizer_dir))?;
        crate::audio::save_audio(dir, &self.codec_dir, &self.tokens)?;
        Ok(())
    }
}

/// Trains `model` on `examples` for `cfg.train.steps` steps; `on_step` sees every step; `stop`
/// ends the run early. Returns the losses.
pub fn train_audio_text(
    model: &mut AudioTextModel,
    cfg: &AudioTextConfig,
    examples: &[ImageTextExample],
    stop: &AtomicBool,
    on_step: impl FnMut(&ImageStep),
) -> Result<Vec<f64>, TrainError> {
    let mut trainable = Params::new();
    for (k, v) in model.params.iter() {
        trainable.insert_var(k, v.clone());
    }
    let settings = AnswerLoop {
        seed: cfg.run.seed,
        train: &cfg.train,
        optim: &cfg.optim,
        schedule: &cfg.schedule,
    };
    let ternary = cfg.train.qat != QatMode::FullPrecision;
    train_answers(
        &trainable,
        &settings,
        examples,
        |batch| model.loss(batch, ternary),
        stop,
        on_step,
    )
}
