//! The model-backed chat engine: a `tritter-model` checkpoint plus its tokenizer and chat format,
//! behind the app's [`Engine`] trait. Prompts are formatted with the checkpoint's chat template
//! (or Tritter's own format), generation streams text pieces decoded incrementally (byte-level BPE
//! tokens can split UTF-8 characters, so text is emitted only once it decodes cleanly: `stream`),
//! and the template's stop tokens end a reply. A latent-trained checkpoint (`latent.json`) can
//! also answer in Coconut latent mode (`latent`); `prompt_media` places attachments.

use crate::engine::chat_format::ChatFormat;
use crate::engine::{Engine, EngineInfo, GenEvent, GenRequest, TokenCounter};
use anyhow::{Context, Result};
use candle_core::Device;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tokenizers::Tokenizer;
use tritter_model::audio::AudioPart;
use tritter_model::multimodal::{VisionPart, VqPart};
use tritter_model::{
    generate_segments, segments_len, CpuModel, Decoder, GenerateOptions, Profile, SamplingParams,
    Segment, Transformer,
};

/// A loaded model ready to chat.
pub struct ModelEngine {
    model: Transformer,
    tokenizer: Arc<Tokenizer>,
    format: ChatFormat,
    stop_ids: Vec<u32>,
    /// The model's end-of-text ids: what ends a raw completion (`GenRequest::raw`).
    eos_ids: Vec<u32>,
    info: EngineInfo,
    /// The decoder for `--device` (the model uploaded to a GPU for `cuda`); generation runs
    /// there when set, else on the CPU inference path.
    decoder: Option<Box<dyn Decoder + Send>>,
    /// The image path (SigLIP tower + connector) of a multimodal checkpoint.
    vision: Option<VisionPart>,
    /// The VQ image tokenizer, used when there is no tower: images become code tokens.
    vq: Option<VqPart>,
    /// The audio codec: clips become code tokens between `<audio>` and `</audio>`.
    audio: Option<AudioPart>,
    /// Latent mode's state: the checkpoint's spec, the thought rounder, notices already given.
    latent: latent::LatentState,
}

mod latent;
mod prompt_media;
mod stream;
mod tokenizer;

pub use tokenizer::load_tokenizer;

impl ModelEngine {
    /// Assembles an engine from its parts; `name`/`description` are what the UI shows.
    pub fn new(
        model: Transformer,
        tokenizer: Tokenizer,
        format: ChatFormat,
        name: String,
        description: String,
        device: &str,
    ) -> Self {
        let cfg = model.config().clone();
        let mut stop_ids: Vec<u32> = format
            .stop_strings
            .iter()
            .filter_map(|s| tokenizer.token_to_id(s))
            .collect();
        if !format.has_template() {
            stop_ids.extend(cfg.eos_token_ids.iter().copied());
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let mut eos_ids: Vec<u32> = cfg.eos_token_ids.clone();
        eos_ids.extend(tokenizer.token_to_id(&format.eos_token()));
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let info = EngineInfo {
            model_name: name,
            device: device.to_string(),
            context_limit: cfg.max_position_embeddings,
            accepts_images: false,
            accepts_audio: false,
            description,
            latent: None,
            gpu_fit: None,
        };
        Self {
            model,
            tokenizer: Arc::new(tokenizer),
            format,
            stop_ids,
            eos_ids,
            info,
            decoder: None,
            vision: None,
            vq: None,
            audio: None,
            latent: latent::LatentState::default(),
        }
    }

    /// Gives the engine an image path: `/img` and `--img` attachments reach the model.
    pub fn with_vision(mut self, vision: VisionPart) -> Self {
        self.info.accepts_images = true;
        self.vision = Some(vision);
        self
    }

    /// Moves generation to `compute` (uploads the model for `Compute::Cuda`: INT4 KV cache with
    /// the config's window and the longest context the device's free memory holds, f16 LM
    /// head; refused when even the weights do not fit).
    pub fn on(mut self, compute: crate::device::Compute) -> Result<Self> {
        let d = tritter_model::decoder::open(&self.model, compute, Profile::Fast)
            .with_context(|| format!("putting the model on {}", compute.name()))?;
        if compute != crate::device::Compute::Cpu {
            self.info.device = d.device_name();
        }
        if let Some(fit) = d.gpu_fit() {
            // Without a window the cache holds `fit.context` tokens: prompts are fitted to it.
            if fit.window == 0 {
                self.info.context_limit = self.info.context_limit.min(fit.context);
            }
            self.info.gpu_fit = Some(fit.clone());
        }
        self.decoder = Some(d);
        Ok(self)
    }

    /// Gives the engine a VQ image tokenizer: images become code tokens when there is no tower.
    pub fn with_vq(mut self, vq: VqPart) -> Self {
        self.info.accepts_images = true;
        self.vq = Some(vq);
        self
    }

    /// Gives the engine an audio codec: `/audio` and `--audio` attachments reach the model.
    pub fn with_audio(mut self, audio: AudioPart) -> Self {
        self.info.accepts_audio = true;
        self.audio = Some(audio);
        self
    }

    /// Loads a checkpoint directory (config.json, model.safetensors, tokenizer.json, optional
    /// tokenizer_config.json with a chat template).
    pub fn load_dir(dir: &Path, device: &Device, device_name: &str) -> Result<Self> {
        crate::engine::memory::check(dir, crate::engine::memory::available())?;
        let ck = tritter_model::load_model(dir, device)?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        let format = ChatFormat::for_dir(dir)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| dir.display().to_string());
        let c = &ck.config;
        let vision = VisionPart::load(dir, c.hidden_size, &Device::Cpu)
            .with_context(|| format!("loading the image path of {}", dir.display()))?;
        let text_ids = tokenizer.get_vocab_size(false) as u32;
        let vq = VqPart::load(dir, text_ids, c.vocab_size, &Device::Cpu)
            .with_context(|| format!("loading the VQ image tokenizer of {}", dir.display()))?;
        let audio = AudioPart::load(dir, text_ids, c.vocab_size, &Device::Cpu)
            .with_context(|| format!("loading the audio codec of {}", dir.display()))?;
        let hearing = audio.as_ref().map_or(String::new(), |a| {
            format!(
                "; hears audio ({} codec, {} Hz, {} of {} codebooks, {:.1} frames/s)",
                a.codec.kind(),
                a.codec.sample_rate(),
                a.tokens.codebooks,
                a.codec.num_quantizers(),
                a.codec.frame_rate()
            )
        });
        let seeing = match (&vision, &vq) {
            (Some(v), _) => format!(
                "; sees images (SigLIP {}×{} px, {} tokens each)",
                v.tower.config().image_size,
                v.tower.config().image_size,
                v.tokens_per_image()?
            ),
            (None, Some(q)) => format!(
                "; sees images as VQ tokens ({} codes, {} px)",
                q.vq.config().num_embeddings,
                q.vq.config().resolution
            ),
            (None, None) => String::new(),
        };
        let description = format!(
            "{name}: {} layers, hidden {}, vocab {}, ternary weights{seeing}{hearing}; {}",
            c.num_layers,
            c.hidden_size,
            c.vocab_size,
            if format.has_template() {
                "prompts use the checkpoint's chat template"
            } else {
                "no chat template, prompts use Tritter's own format"
            }
        );
        let spec = tritter_model::latent::LatentSpec::load(dir)
            .with_context(|| format!("reading the latent spec of {}", dir.display()))?;
        let engine = Self::new(ck.model, tokenizer, format, name, description, device_name);
        let engine = match spec {
            Some(s) => engine.with_latent(s),
            None => engine,
        };
        let engine = match vq {
            Some(q) => engine.with_vq(q),
            None => engine,
        };
        let engine = match audio {
            Some(a) => engine.with_audio(a),
            None => engine,
        };
        Ok(match vision {
            Some(v) => engine.with_vision(v),
            None => engine,
        })
    }
}

impl Engine for ModelEngine {
    fn info(&self) -> EngineInfo {
        self.info.clone()
    }

    fn token_counter(&self) -> TokenCounter {
        let tk = Arc::clone(&self.tokenizer);
        Arc::new(move |s: &str| tk.encode(s, false).map(|e| e.len()).unwrap_or(s.len() / 3))
    }

    fn generate(
        &mut self,
        req: &GenRequest,
        cancel: &AtomicBool,
        sink: &mut dyn FnMut(GenEvent),
    ) -> Result<()> {
        let t0 = Instant::now();
        if req.raw {
            return self.answer_tokens(req, t0, cancel, sink);
        }
        if let Some(thoughts) = self.latent_plan(req.latent, sink)? {
            if self.answer_latent(req, thoughts, t0, cancel, sink)? {
                return Ok(());
            }
        }
        self.answer_tokens(req, t0, cancel, sink)
    }
}

impl ModelEngine {
    /// The sampling settings of `req` with at most `room` new tokens.
    fn options(&self, req: &GenRequest, room: usize) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: req.max_new_tokens.min(room),
            sampling: SamplingParams {
                temperature: req.sampling.temperature,
                top_k: req.sampling.top_k,
                top_p: req.sampling.top_p,
                repetition_penalty: 1.1,
                seed: req.sampling.seed,
            },
            stop_tokens: if req.raw {
                self.eos_ids.clone()
            } else {
                self.stop_ids.clone()
            },
        }
    }

    /// Answers in token mode: the prompt (followed by `<bot><eot>` on a latent-trained model,
    /// the form its curriculum's stage 0 trained: the steps then written out) and sampled
    /// tokens, on the decoder of `--device` or the CPU inference path.
    fn answer_tokens(
        &mut self,
        req: &GenRequest,
        t0: Instant,
        cancel: &AtomicBool,
        sink: &mut dyn FnMut(GenEvent),
    ) -> Result<()> {
        let mut prompt = self.prompt_segments(req)?;
        let latent_trained = self.latent.spec.filter(|_| !req.raw);
        if let Some((bot, eot)) = latent_trained.and(self.thought_ids()) {
            match prompt.last_mut() {
                Some(Segment::Tokens(ids)) => ids.extend([bot, eot]),
                _ => prompt.push(Segment::Tokens(vec![bot, eot])),
            }
        }
        let prompt_len = segments_len(&prompt, self.model.config().hidden_size);
        sink(GenEvent::Prompt { tokens: prompt_len });
        let opts = self.options(req, self.info.context_limit.saturating_sub(prompt_len));
        let mut text = stream::TextStream::new(&self.tokenizer, t0);
        let on_token = |id| text.push(id, &mut *sink);
        let stats = match self.decoder.as_mut() {
            Some(d) => generate_segments(d.as_mut(), &prompt, &opts, cancel, on_token)?,
            None => {
                let mut cpu = CpuModel::new(&self.model)?;
                generate_segments(&mut cpu, &prompt, &opts, cancel, on_token)?
            }
        };
        text.finish(&stats, 0, sink)
    }
}

#[cfg(test)]
pub(crate) mod tests;
