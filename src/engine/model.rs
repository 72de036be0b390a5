//! The model-backed chat engine: a `tritter-model` checkpoint plus its tokenizer and chat format,
//! behind the app's [`Engine`] trait. Prompts are formatted with the checkpoint's chat template
//! (or Tritter's own format), generation streams text pieces decoded incrementally (byte-level BPE
//! tokens can split UTF-8 characters, so text is emitted only once it decodes cleanly), and the
//! template's stop tokens end a reply.

use crate::engine::chat_format::ChatFormat;
use crate::engine::{Engine, EngineInfo, GenEvent, GenRequest, TokenCounter};
use anyhow::{anyhow, Context, Result};
use candle_core::Device;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tokenizers::Tokenizer;
use tritter_model::audio::AudioPart;
use tritter_model::multimodal::{VisionPart, VqPart};
use tritter_model::{
    generate_segments, segments_len, CpuModel, Decoder, GenerateOptions, Profile, SamplingParams,
    Transformer,
};

/// A loaded model ready to chat.
pub struct ModelEngine {
    model: Transformer,
    tokenizer: Arc<Tokenizer>,
    format: ChatFormat,
    stop_ids: Vec<u32>,
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
}

mod prompt_media;

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
        let info = EngineInfo {
            model_name: name,
            device: device.to_string(),
            context_limit: cfg.max_position_embeddings,
            accepts_images: false,
            accepts_audio: false,
            description,
        };
        Self {
            model,
            tokenizer: Arc::new(tokenizer),
            format,
            stop_ids,
            info,
            decoder: None,
            vision: None,
            vq: None,
            audio: None,
        }
    }

    /// Gives the engine an image path: `/img` and `--img` attachments reach the model.
    pub fn with_vision(mut self, vision: VisionPart) -> Self {
        self.info.accepts_images = true;
        self.vision = Some(vision);
        self
    }

    /// Moves generation to `compute` (uploads the model for `Compute::Cuda`; INT4 KV cache with
    /// the config's window, f16 LM head).
    pub fn on(mut self, compute: crate::device::Compute) -> Result<Self> {
        let d = tritter_model::decoder::open(&self.model, compute, Profile::Fast)
            .with_context(|| format!("putting the model on {}", compute.name()))?;
        if compute != crate::device::Compute::Cpu {
            self.info.device = d.device_name();
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
        let ck = tritter_model::load_model(dir, device)?;
        let tk_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tk_path)
            .map_err(|e| anyhow!("{}: {e}", tk_path.display()))
            .context("loading the tokenizer")?;
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
        let engine = Self::new(ck.model, tokenizer, format, name, description, device_name);
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
        if req.latent {
            // No checkpoint format Tritter loads carries a trained latent (Coconut) mode yet;
            // answering in token mode while the UI says "latent on" would mislead.
            anyhow::bail!(
                "latent reasoning mode needs a model trained for it, and {} has none; turn it off with /latent off",
                self.info.model_name
            );
        }
        let t0 = Instant::now();
        let prompt = self.prompt_segments(req)?;
        let prompt_len = segments_len(&prompt, self.model.config().hidden_size);
        sink(GenEvent::Prompt { tokens: prompt_len });
        let room = self.info.context_limit.saturating_sub(prompt_len);
        let opts = GenerateOptions {
            max_new_tokens: req.max_new_tokens.min(room),
            sampling: SamplingParams {
                temperature: req.sampling.temperature,
                top_k: req.sampling.top_k,
                top_p: req.sampling.top_p,
                repetition_penalty: 1.1,
                seed: req.sampling.seed,
            },
            stop_tokens: self.stop_ids.clone(),
        };
        let mut ids: Vec<u32> = vec![];
        let mut emitted = 0usize; // bytes of decoded text already sent
        let mut first_token_ms = 0.0;
        let tokenizer = Arc::clone(&self.tokenizer);
        let mut decode_err = None;
        let on_token = |id| {
            if ids.is_empty() {
                first_token_ms = t0.elapsed().as_secs_f64() * 1e3;
            }
            ids.push(id);
            match tokenizer.decode(&ids, true) {
                Ok(text) => {
                    // Hold back an incomplete UTF-8 sequence (decoded as U+FFFD) until it completes.
                    if !text.ends_with('\u{FFFD}')
                        && text.len() > emitted
                        && text.is_char_boundary(emitted)
                    {
                        sink(GenEvent::Token {
                            text: text[emitted..].to_string(),
                        });
                        emitted = text.len();
                    }
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    decode_err = Some(e.to_string());
                    ControlFlow::Break(())
                }
            }
        };
        let stats = match self.decoder.as_mut() {
            Some(d) => generate_segments(d.as_mut(), &prompt, &opts, cancel, on_token)?,
            None => {
                let mut cpu = CpuModel::new(&self.model)?;
                generate_segments(&mut cpu, &prompt, &opts, cancel, on_token)?
            }
        };
        if let Some(e) = decode_err {
            return Err(anyhow!("tokenizer: {e}"));
        }
        let tokens = stats.generated.len();
        let elapsed = t0.elapsed().as_secs_f64();
        sink(GenEvent::Done {
            tokens,
            tok_per_s: if elapsed > 0.0 {
                tokens as f64 / elapsed
            } else {
                0.0
            },
            first_token_ms,
            cancelled: stats.stop == tritter_model::StopReason::Cancelled,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ChatMessage, Role, Sampling};
    use std::sync::atomic::Ordering;
    use tritter_model::data::config::TokenizerConfig;
    use tritter_model::{generate, Segment};
    use tritter_model::{save_checkpoint, Config, Params};

    /// A tiny random checkpoint with a real byte-level BPE tokenizer trained on a few lines.
    fn checkpoint(dir: &Path) -> Tokenizer {
        let docs: Vec<String> = (0..40)
            .map(|i| {
                format!("def f{i}(x):\n    return x * {i} + 1\n\nfn g{i}() -> u32 {{ {i} }}\n")
            })
            .collect();
        let tcfg = TokenizerConfig {
            vocab_size: 300,
            image_codes: 4,
            audio_codes: 4,
            ..TokenizerConfig::default()
        };
        let mut tk = tritter_model::data::tokenizer::train_bpe(docs.into_iter(), &tcfg).unwrap();
        let layout = tritter_model::data::tokenizer::attach_layout(&mut tk, 4, 4).unwrap();
        let mut cfg = Config::tritter_tiny();
        cfg.vocab_size = layout.total() as usize;
        cfg.hidden_size = 32;
        cfg.intermediate_size = 48;
        cfg.num_layers = 2;
        cfg.num_heads = 2;
        cfg.num_kv_heads = 1;
        cfg.head_dim = 16;
        cfg.max_position_embeddings = 256;
        let params = Params::init(&cfg, 5, 0.3, &Device::Cpu).unwrap();
        save_checkpoint(dir, &cfg, &params, None).unwrap();
        tk.save(dir.join("tokenizer.json"), false).unwrap();
        tk
    }

    fn request(max: usize) -> GenRequest {
        GenRequest {
            messages: vec![ChatMessage::new(Role::User, "def add(a, b):")],
            latent: false,
            max_new_tokens: max,
            sampling: Sampling {
                temperature: 0.0,
                ..Sampling::default()
            },
        }
    }

    #[test]
    fn streams_the_same_text_as_direct_generation() {
        let tmp = tempfile::tempdir().unwrap();
        let tk = checkpoint(tmp.path());
        let mut eng = ModelEngine::load_dir(tmp.path(), &Device::Cpu, "cpu").unwrap();
        let mut events = vec![];
        eng.generate(&request(24), &AtomicBool::new(false), &mut |e| {
            events.push(e)
        })
        .unwrap();
        assert!(matches!(events.first(), Some(GenEvent::Prompt { tokens }) if *tokens > 0));
        let Some(GenEvent::Done {
            tokens, cancelled, ..
        }) = events.last().cloned()
        else {
            panic!("no Done event: {events:?}");
        };
        assert!(!cancelled);
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                GenEvent::Token { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        // Independent path: format, encode and generate directly with the model crate.
        let prompt_text = ChatFormat::tritter().render(&request(24).messages).unwrap();
        let ids = tk.encode(prompt_text, false).unwrap().get_ids().to_vec();
        let ck = tritter_model::load_model(tmp.path(), &Device::Cpu).unwrap();
        let stop: Vec<u32> = ["<|end|>", "<|eos|>"]
            .iter()
            .filter_map(|s| tk.token_to_id(s))
            .collect();
        let opts = GenerateOptions {
            max_new_tokens: 24,
            sampling: SamplingParams {
                repetition_penalty: 1.1,
                ..SamplingParams::greedy()
            },
            stop_tokens: stop,
        };
        let stats = generate(&ck.model, &ids, &opts, &AtomicBool::new(false), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(tokens, stats.generated.len());
        assert_eq!(text, tk.decode(&stats.generated, true).unwrap());
    }

    #[test]
    fn cancellation_still_reports_done() {
        let tmp = tempfile::tempdir().unwrap();
        checkpoint(tmp.path());
        let mut eng = ModelEngine::load_dir(tmp.path(), &Device::Cpu, "cpu").unwrap();
        let cancel = AtomicBool::new(false);
        let mut events = vec![];
        eng.generate(&request(50), &cancel, &mut |e| {
            if matches!(e, GenEvent::Token { .. }) {
                cancel.store(true, Ordering::Relaxed);
            }
            events.push(e)
        })
        .unwrap();
        assert!(
            matches!(
                events.last(),
                Some(GenEvent::Done {
                    cancelled: true,
                    ..
                })
            ),
            "{events:?}"
        );
    }

    #[test]
    fn latent_mode_is_refused_plainly() {
        let tmp = tempfile::tempdir().unwrap();
        checkpoint(tmp.path());
        let mut eng = ModelEngine::load_dir(tmp.path(), &Device::Cpu, "cpu").unwrap();
        let mut req = request(4);
        req.latent = true;
        let mut events = vec![];
        let e = eng
            .generate(&req, &AtomicBool::new(false), &mut |e| events.push(e))
            .unwrap_err();
        assert!(format!("{e:#}").contains("/latent off"), "{e:#}");
        assert!(events.is_empty());
    }

    #[test]
    fn missing_tokenizer_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        checkpoint(tmp.path());
        std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
        let e = ModelEngine::load_dir(tmp.path(), &Device::Cpu, "cpu")
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("tokenizer.json"), "{e:#}");
    }

    fn image_request() -> GenRequest {
        let mut req = request(3);
        let pixels: Vec<u8> = (0..20 * 12 * 3).map(|i| (i * 7 % 251) as u8).collect();
        req.messages[0].attachments.push(crate::engine::Attachment {
            path: "x.png".into(),
            kind: crate::engine::AttachmentKind::Image {
                width: 20,
                height: 12,
            },
            data: Some(std::sync::Arc::new(crate::engine::MediaData::Rgb8 {
                width: 20,
                height: 12,
                pixels,
            })),
        });
        req
    }

    fn prompt_len(eng: &mut ModelEngine, req: &GenRequest) -> usize {
        let mut n = None;
        eng.generate(req, &AtomicBool::new(false), &mut |e| {
            if let GenEvent::Prompt { tokens } = e {
                n = Some(tokens);
            }
        })
        .unwrap();
        n.unwrap()
    }

    #[test]
    fn a_vq_tokenizer_puts_an_images_codes_between_the_markers() {
        use tritter_model::vqvae::{VqVae, VqVaeConfig};
        let tmp = tempfile::tempdir().unwrap();
        checkpoint(tmp.path());
        let plain = ModelEngine::load_dir(tmp.path(), &Device::Cpu, "cpu").unwrap();
        assert!(!plain.info().accepts_images);
        // The checkpoint's layout has 4 image codes: a 4-entry codebook, 8×8 codes per picture.
        let cfg = VqVaeConfig {
            embed_dim: 4,
            num_embeddings: 4,
            latent_channels: 4,
            resolution: 16,
            base_channels: 32,
            channel_multiplier: vec![1, 1],
            num_res_blocks: 1,
            attn_resolutions: Some(vec![]),
            ..VqVaeConfig::default()
        };
        let vars = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vars, candle_core::DType::F32, &Device::Cpu);
        VqVae::new(&cfg, vb)
            .unwrap()
            .save(&tmp.path().join("vqvae"))
            .unwrap();
        let mut eng = ModelEngine::load_dir(tmp.path(), &Device::Cpu, "cpu").unwrap();
        assert!(eng.info().accepts_images);
        assert!(eng.info().description.contains("VQ tokens"));
        let text_only = prompt_len(&mut eng, &request(3));
        let with_image = prompt_len(&mut eng, &image_request());
        // The markers (<img>, </img>, a newline) and 64 codes.
        let markers = eng
            .tokenizer
            .encode(super::super::media::IMAGE_MARKER, false)
            .unwrap()
            .len();
        assert_eq!(with_image, text_only + markers + 64);
        // The codes are ids of the image range, from the image: the same picture, the same ids.
        let segs = eng.prompt_segments(&image_request()).unwrap();
        let [Segment::Tokens(ids)] = &segs[..] else {
            panic!("{segs:?}")
        };
        let start = eng.tokenizer.token_to_id("<img>").unwrap();
        let at = ids.iter().position(|&i| i == start).unwrap();
        let q = eng.vq.as_ref().unwrap();
        assert!(ids[at + 1..at + 65]
            .iter()
            .all(|i| q.layout.image_range().contains(i)));
        assert_eq!(ids[at + 65], eng.tokenizer.token_to_id("</img>").unwrap());
        assert_eq!(eng.prompt_segments(&image_request()).unwrap(), segs);
    }
    #[test]
    fn an_audio_codec_puts_a_clips_codes_between_the_markers() {
        use tritter_model::audio::encodec::{Encodec, EncodecConfig};
        use tritter_model::audio::{save_audio, AudioTokens};
        let tmp = tempfile::tempdir().unwrap();
        checkpoint(tmp.path());
        let plain = ModelEngine::load_dir(tmp.path(), &Device::Cpu, "cpu").unwrap();
        assert!(!plain.info().accepts_audio);
        // The layout has 4 audio ids: one 4-entry codebook, hop 8 at 8 kHz (1000 frames/s).
        let cfg = EncodecConfig {
            sampling_rate: 8000,
            hidden_size: 8,
            num_filters: 4,
            upsampling_ratios: vec![4, 2],
            num_lstm_layers: 1,
            codebook_size: 4,
            target_bandwidths: vec![2.0],
            ..EncodecConfig::default()
        };
        let vars = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vars, candle_core::DType::F32, &Device::Cpu);
        let codec_dir = tmp.path().join("codec");
        Encodec::new(&cfg, vb).unwrap().save(&codec_dir).unwrap();
        let tokens = AudioTokens {
            codebooks: 1,
            codebook_size: 4,
        };
        save_audio(tmp.path(), &codec_dir, &tokens).unwrap();
        let mut eng = ModelEngine::load_dir(tmp.path(), &Device::Cpu, "cpu").unwrap();
        assert!(eng.info().accepts_audio);
        assert!(
            eng.info().description.contains("hears audio"),
            "{}",
            eng.info().description
        );
        let clip_request = || {
            let mut req = request(3);
            // 0.1 s at 16 kHz: 800 samples at the codec's 8 kHz, 100 frames.
            let samples: Vec<f32> = (0..1600).map(|i| (i as f32 * 0.2).sin() * 0.5).collect();
            req.messages[0].attachments.push(crate::engine::Attachment {
                path: "x.wav".into(),
                kind: crate::engine::AttachmentKind::Audio {
                    seconds: 0.1,
                    sample_rate: 16_000,
                },
                data: Some(std::sync::Arc::new(crate::engine::MediaData::Mono {
                    sample_rate: 16_000,
                    samples,
                })),
            });
            req
        };
        let text_only = prompt_len(&mut eng, &request(3));
        let with_clip = prompt_len(&mut eng, &clip_request());
        let markers = eng
            .tokenizer
            .encode(super::super::media::AUDIO_MARKER, false)
            .unwrap()
            .len();
        assert_eq!(with_clip, text_only + markers + 100);
        let segs = eng.prompt_segments(&clip_request()).unwrap();
        let [Segment::Tokens(ids)] = &segs[..] else {
            panic!("{segs:?}")
        };
        let start = eng.tokenizer.token_to_id("<audio>").unwrap();
        let at = ids.iter().position(|&i| i == start).unwrap();
        let a = eng.audio.as_ref().unwrap();
        assert!(ids[at + 1..at + 101]
            .iter()
            .all(|i| a.layout.audio_range().contains(i)));
        assert_eq!(
            ids[at + 101],
            eng.tokenizer.token_to_id("</audio>").unwrap()
        );
        // The same clip, the same ids.
        assert_eq!(eng.prompt_segments(&clip_request()).unwrap(), segs);
    }
}
