//! Tests of the model-backed engine on a tiny random checkpoint with a real BPE tokenizer:
//! streaming against direct generation, cancellation, attachments' codes in the prompt.

use super::*;
use crate::engine::{ChatMessage, Role, Sampling};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use tritter_model::data::config::TokenizerConfig;
use tritter_model::{generate, Segment};
use tritter_model::{save_checkpoint, Config, Params};

/// A tiny random checkpoint with a real byte-level BPE tokenizer trained on a few lines.
pub(crate) fn checkpoint(dir: &Path) -> Tokenizer {
    let docs: Vec<String> = (0..40)
        .map(|i| format!("def f{i}(x):\n    return x * {i} + 1\n\nfn g{i}() -> u32 {{ {i} }}\n"))
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

pub(super) fn request(max: usize) -> GenRequest {
    GenRequest {
        messages: vec![ChatMessage::new(Role::User, "def add(a, b):")],
        latent: crate::engine::LatentMode::Off,
        latent_min_cosine: 0.0,
        raw: false,
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
