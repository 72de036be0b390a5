//! Training on image–text pairs (`task = "image_text"`): the SigLIP tower (trained or frozen
//! per `[vision] train_tower`), the Idefics3 connector and the ternary text model learn together
//! to continue a prompt that holds an image with its answer.
//!
//! One example is a token sequence with an image slot: the tower's pixel-shuffled, projected rows
//! are inserted before `ids[slot]` (right after `<img>`), and the loss is the next-token
//! cross-entropy of the answer span only — the same sequence the inference path builds
//! (`Segment::Embeds` between `<img>` and `</img>`). Sequences of a batch are right-padded with
//! zero rows, which causal attention never lets an answer position see.

use super::config::{ModelSection, OptimSection, QatMode, ScheduleSection};
use super::optim::{self, AdamW, AdamWParams};
use super::{FullPrecision, TrainError};
use crate::config::Config;
use crate::multimodal::ConnectorConfig;
use crate::transformer::{cross_entropy, Transformer};
use crate::vision::{Connector, ProcessorConfig, SiglipVision, VisionConfig, VisionPath};
use crate::weights::Params;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// `[vision]`: the tower to build (or load) and how it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisionSection {
    /// Start from this SigLIP directory (`config.json` + `model.safetensors`, HF layout)
    /// instead of a random tower of the sizes below.
    pub init: Option<PathBuf>,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    /// Pixel-shuffle factor of the connector. Default 4.
    pub scale_factor: usize,
    /// Train the tower (`false` freezes it: only the connector and the text model learn).
    pub train_tower: bool,
    /// Feed images as the VQ codes of this tokenizer (a `task = "vqvae"` run's `final/`) in the
    /// vocabulary's image range, instead of tower rows: the text model alone learns, and the
    /// checkpoint gets `vqvae/` instead of `vision/` (the tower sizes above are then unused).
    pub vq: Option<PathBuf>,
}

impl Default for VisionSection {
    fn default() -> Self {
        Self {
            init: None,
            image_size: 64,
            patch_size: 8,
            hidden_size: 64,
            num_layers: 2,
            num_heads: 4,
            intermediate_size: 128,
            scale_factor: 4,
            train_tower: true,
            vq: None,
        }
    }
}

impl VisionSection {
    /// The tower's config for a random start.
    pub fn tower_config(&self) -> VisionConfig {
        let mut c = VisionConfig::siglip_base_patch16_224();
        c.image_size = self.image_size;
        c.patch_size = self.patch_size;
        c.hidden_size = self.hidden_size;
        c.num_hidden_layers = self.num_layers;
        c.num_attention_heads = self.num_heads;
        c.intermediate_size = self.intermediate_size;
        c
    }
}

/// `[data]` of an image–text run: JSONL files of `{"image", "prompt", "text"}` records, or
/// folders of `NAME.png` + `NAME.txt` pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageDataSection {
    /// Training pairs.
    pub train: PathBuf,
    /// Held-out pairs: exact-match accuracy at the end, with and without the image.
    pub test: Option<PathBuf>,
    /// Text vocabulary of the BPE trained on the records' text. Default 320.
    pub vocab_size: usize,
}

impl Default for ImageDataSection {
    fn default() -> Self {
        Self {
            train: PathBuf::from("train.jsonl"),
            test: None,
            vocab_size: 320,
        }
    }
}

/// The steps of an image–text run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageTrainSection {
    pub steps: u64,
    pub batch_size: usize,
    pub grad_clip: f64,
    /// `ternary` (QAT from the start) or `full_precision` (exported ternary all the same).
    pub qat: QatMode,
    /// Log a record every this many steps.
    pub log_every: u64,
}

impl Default for ImageTrainSection {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 16,
            grad_clip: 1.0,
            qat: QatMode::Ternary,
            log_every: 50,
        }
    }
}

/// The whole `task = "image_text"` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTextConfig {
    pub task: String,
    #[serde(default)]
    pub run: super::config::RunSection,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub vision: VisionSection,
    #[serde(default)]
    pub train: ImageTrainSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub schedule: ScheduleSection,
    #[serde(default)]
    pub data: ImageDataSection,
}

/// One training sequence: the tower's rows of `pixels` `[1, 3, H, W]` go before `ids[slot]`
/// (`None`: the image is already in `ids`, as VQ code tokens); the loss covers `ids[answer]`.
#[derive(Debug, Clone)]
pub struct ImageTextExample {
    pub pixels: Option<Tensor>,
    pub ids: Vec<u32>,
    pub slot: usize,
    pub answer: Range<usize>,
}

/// The trainable parts of a multimodal model.
pub struct ImageTextModel {
    pub text_cfg: Config,
    pub params: Params,
    pub tower: SiglipVision,
    pub connector: Connector,
    pub connector_cfg: ConnectorConfig,
    pub processor: ProcessorConfig,
    vision_vars: VarMap,
    device: Device,
    /// Images come as VQ codes from this tokenizer directory: no tower in the loss or the
    /// checkpoint.
    vq: Option<PathBuf>,
}

impl ImageTextModel {
    /// A random text model of `text_cfg` and a tower from `vision` (random, or its `init`).
    pub fn new(
        text_cfg: Config,
        vision: &VisionSection,
        seed: u64,
        init_std: f32,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let params = Params::init(&text_cfg, seed, init_std, device)?;
        let mut vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
        let tower_cfg = match &vision.init {
            Some(dir) => VisionConfig::from_file(&dir.join("config.json"))?,
            None => vision.tower_config(),
        };
        tower_cfg.validate()?;
        let tower = SiglipVision::new(tower_cfg.clone(), vb.pp("vision_model"))?
            .with_path(VisionPath::Differentiable);
        if let Some(dir) = &vision.init {
            let file = dir.join("model.safetensors");
            vars.load(&file).map_err(|e| {
                TrainError::Config(format!("[vision] init: {}: {e}", file.display()))
            })?;
        }
        let connector = Connector::new(
            vision.scale_factor,
            tower_cfg.hidden_size,
            text_cfg.hidden_size,
            vb.pp("connector"),
        )?;
        connector.tokens_for(tower_cfg.num_patches())?;
        let connector_cfg = ConnectorConfig {
            scale_factor: vision.scale_factor,
            text_hidden_size: text_cfg.hidden_size,
        };
        let processor = ProcessorConfig::for_vision(&tower_cfg);
        Ok(Self {
            text_cfg,
            params,
            tower,
            connector,
            connector_cfg,
            processor,
            vision_vars: vars,
            device: device.clone(),
            vq: vision.vq.clone(),
        })
    }

    /// `pixel_values` `[1, 3, H, W]` of an image on the model's device (its processor).
    pub fn processor_pixels(&self, img: &image::DynamicImage) -> Result<Tensor, TrainError> {
        Ok(crate::vision::preprocess(
            img,
            &self.processor,
            &self.device,
        )?)
    }

    /// Writes the inference checkpoint: the packed ternary text model with the tokenizer files
    /// of `tokenizer_dir`, then `vision/` (each folder atomically).
    pub fn save(
        &self,
        dir: &std::path::Path,
        tokenizer_dir: &std::path::Path,
    ) -> Result<(), TrainError> {
        crate::checkpoint::save_checkpoint(dir, &self.text_cfg, &self.params, Some(tokenizer_dir))?;
        if let Some(vq) = &self.vq {
            crate::vqvae::VqVae::load(vq, &self.device)?
                .save(&dir.join(crate::multimodal::VQ_DIR))?;
            return Ok(());
        }
        crate::multimodal::save_vision(
            dir,
            self.tower.config(),
            &self.processor,
            &self.connector_cfg,
            &self.vision_tensors(),
        )?;
        Ok(())
    }

    /// The tower's and connector's tensors by their checkpoint names.
    pub fn vision_tensors(&self) -> HashMap<String, Tensor> {
        self.vision_vars
            .data()
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every trainable tensor: the text model's, the connector's and (when `train_tower`) the
    /// tower's, as one parameter set for AdamW.
    fn trainable(&self, train_tower: bool) -> Params {
        let mut p = Params::new();
        for (k, v) in self.params.iter() {
            p.insert_var(k, v.clone());
        }
        if self.vq.is_some() {
            return p;
        }
        if let Ok(m) = self.vision_vars.data().lock() {
            for (k, v) in m.iter() {
                if train_tower || k.starts_with("connector.") {
                    p.insert_var(k, v.clone());
                }
            }
        }
        p
    }

    /// Mean answer-token cross-entropy of a batch (differentiable).
    pub fn loss(&self, batch: &[&ImageTextExample], ternary: bool) -> Result<Tensor, TrainError> {
        let pixels: Vec<Tensor> = batch.iter().filter_map(|e| e.pixels.clone()).collect();
        let img = match pixels.len() {
            0 => None,
            k if k == batch.len() => Some(
                self.connector
                    .forward(&self.tower.forward(&Tensor::cat(&pixels, 0)?)?)?,
            ),
            _ => {
                return Err(TrainError::Config(
                    "a batch mixes images as pixels and as codes".into(),
                ))
            }
        };
        answer_loss(&self.text_cfg, &self.params, img.as_ref(), batch, ternary)
    }
}

/// Mean next-token cross-entropy over the answer spans of `batch` (differentiable): each
/// sequence's ids are embedded, `rows` `[B, n, C]` (when given) inserted before `ids[slot]`, the
/// batch right-padded with zero rows. Shared by every answer-trained task (image–text,
/// audio–text: the latter has no rows, its clips are tokens in `ids`).
pub fn answer_loss(
    text_cfg: &Config,
    params: &Params,
    rows: Option<&Tensor>,
    batch: &[&ImageTextExample],
    ternary: bool,
) -> Result<Tensor, TrainError> {
    let device = match params.iter().next() {
        Some((_, v)) => v.as_tensor().device().clone(),
        None => return Err(TrainError::Config("the model has no parameters".into())),
    };
    let text = if ternary {
        Transformer::load(text_cfg, &mut &*params, &device)?
    } else {
        Transformer::load(text_cfg, &mut FullPrecision(params), &device)?
    };
    let n = rows.map_or(Ok(0), |i| i.dim(1))?;
    let c = text_cfg.hidden_size;
    let len = batch.iter().map(|e| e.ids.len() + n).max().unwrap_or(0);
    let (mut seqs, mut picks, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for (b, e) in batch.iter().enumerate() {
        let ids = Tensor::from_slice(&e.ids, (1, e.ids.len()), &device)?;
        let emb = text.embed(&ids)?.squeeze(0)?.to_dtype(DType::F32)?;
        let mut parts = vec![];
        if e.slot > 0 {
            parts.push(emb.narrow(0, 0, e.slot)?);
        }
        if let Some(img) = rows {
            parts.push(img.get(b)?);
        }
        if e.slot < e.ids.len() {
            parts.push(emb.narrow(0, e.slot, e.ids.len() - e.slot)?);
        }
        let pad = len - e.ids.len() - n;
        if pad > 0 {
            parts.push(Tensor::zeros((pad, c), DType::F32, &device)?);
        }
        seqs.push(Tensor::cat(&parts, 0)?);
        for j in e.answer.clone() {
            // The token at ids[j] sits at j + n (j ≥ slot) and is predicted one row before.
            let pos = if j >= e.slot { j + n } else { j };
            picks.push((b * len + pos - 1) as u32);
            targets.push(e.ids[j]);
        }
    }
    let x = Tensor::stack(&seqs, 0)?;
    let logits = text.forward_embeds(&x)?;
    let v = text_cfg.vocab_size;
    let flat = logits.reshape((batch.len() * len, v))?;
    let idx = Tensor::from_slice(&picks, picks.len(), &device)?;
    let tg = Tensor::from_slice(&targets, targets.len(), &device)?;
    Ok(cross_entropy(&flat.index_select(&idx, 0)?, &tg)?)
}

/// One logged step.
#[derive(Debug, Clone, Copy)]
pub struct ImageStep {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// Trains `model` on `examples` for `cfg.train.steps` steps (batches drawn in a seeded
/// permutation per epoch); `on_step` sees every step; `stop` ends the run early.
pub fn train_image_text(
    model: &mut ImageTextModel,
    cfg: &ImageTextConfig,
    examples: &[ImageTextExample],
    stop: &AtomicBool,
    on_step: impl FnMut(&ImageStep),
) -> Result<Vec<f64>, TrainError> {
    let trainable = model.trainable(cfg.vision.train_tower);
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

/// What an answer-trained run's loop reads from its config.
pub struct AnswerLoop<'a> {
    pub seed: u64,
    pub train: &'a ImageTrainSection,
    pub optim: &'a OptimSection,
    pub schedule: &'a ScheduleSection,
}

/// The AdamW loop of every answer-trained task: `settings.train.steps` steps over batches drawn
/// in a seeded permutation per epoch, `loss` of each batch, gradients clipped, `trainable`
/// updated; `on_step` sees every step; `stop` ends the run early. Returns the losses.
pub fn train_answers(
    trainable: &Params,
    settings: &AnswerLoop,
    examples: &[ImageTextExample],
    mut loss: impl FnMut(&[&ImageTextExample]) -> Result<Tensor, TrainError>,
    stop: &AtomicBool,
    mut on_step: impl FnMut(&ImageStep),
) -> Result<Vec<f64>, TrainError> {
    if examples.is_empty() {
        return Err(TrainError::Config("[data] train: no examples".into()));
    }
    let hp = AdamWParams {
        beta1: settings.optim.betas[0],
        beta2: settings.optim.betas[1],
        eps: settings.optim.eps,
        weight_decay: settings.optim.weight_decay,
    };
    let mut adam = AdamW::new(trainable, hp, |n| {
        optim::default_decay(n) && !n.ends_with(".bias") && !n.contains("position_embedding")
    })?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(settings.seed);
    let mut order: Vec<usize> = vec![];
    let mut losses = vec![];
    let steps = settings.train.steps;
    let bs = settings.train.batch_size.max(1);
    for step in 0..steps {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if order.len() < bs {
            let mut all: Vec<usize> = (0..examples.len()).collect();
            all.shuffle(&mut rng);
            order.extend(all);
        }
        let batch: Vec<&ImageTextExample> = order
            .drain(..bs.min(order.len()))
            .map(|i| &examples[i])
            .collect();
        let (lr, decay_on) = optim::lr_at(settings.schedule, settings.optim.lr, step, steps);
        let l = loss(&batch)?;
        let lv = l.to_scalar::<f32>()? as f64;
        if !lv.is_finite() {
            return Err(TrainError::Config(format!(
                "loss became {lv} at step {step}"
            )));
        }
        let grads = l.backward()?;
        let mut g = optim::collect_grads(trainable, &grads)?;
        let grad_norm = optim::clip_grad_norm(&mut g, settings.train.grad_clip)?;
        adam.step(trainable, &g, lr, decay_on)?;
        losses.push(lv);
        on_step(&ImageStep {
            step: step + 1,
            loss: lv,
            lr,
            grad_norm,
        });
    }
    Ok(losses)
}
