//! Images in the token stream: the inference path's prompt segments (`<img>`, the image's rows,
//! `</img>`) give the candle path's logits for the same spliced sequence, on a random tiny
//! multimodal model; a saved checkpoint loads back with the same image rows; and image–text
//! training learns an answer that only the image tells.

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use tritter_model::multimodal::VisionPart;
use tritter_model::train::image_text::{
    train_image_text, ImageTextConfig, ImageTextExample, ImageTextModel, VisionSection,
};
use tritter_model::{
    generate_segments, Config, CpuModel, GenerateOptions, SamplingParams, Segment,
};
use tritter_model::{Decoder, Transformer};

fn text_cfg() -> Config {
    let mut c = Config::tritter_tiny();
    c.vocab_size = 40;
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_layers = 2;
    c.num_heads = 2;
    c.num_kv_heads = 1;
    c.head_dim = 16;
    c.max_position_embeddings = 128;
    c
}

fn vision() -> VisionSection {
    VisionSection {
        image_size: 16,
        patch_size: 4,
        hidden_size: 16,
        num_layers: 1,
        num_heads: 2,
        intermediate_size: 32,
        scale_factor: 2,
        ..VisionSection::default()
    }
}

fn solid(rgb: [u8; 3]) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(16, 16, image::Rgb(rgb)))
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn segments_on_the_inference_path_equal_the_candle_path() {
    let dev = Device::Cpu;
    let m = ImageTextModel::new(text_cfg(), &vision(), 3, 0.3, &dev).unwrap();
    let text = Transformer::load(&m.text_cfg, &mut &m.params, &dev).unwrap();
    let pixels = m.processor_pixels(&solid([200, 30, 60])).unwrap();
    let img = m
        .connector
        .forward(&m.tower.forward(&pixels).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap();
    let n = img.dim(0).unwrap();
    assert_eq!(n, 4, "16 patches, pixel shuffle 2 → 4 rows");
    let (before, after) = ([1u32, 5, 6], [7u32, 9, 11, 2]);
    // Candle path: one spliced sequence.
    let emb = |ids: &[u32]| {
        let t = Tensor::from_slice(ids, (1, ids.len()), &dev).unwrap();
        text.embed(&t)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let x = Tensor::cat(&[emb(&before), img.clone(), emb(&after)], 0)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let want = text.forward_embeds(&x).unwrap().squeeze(0).unwrap();
    let t = before.len() + n + after.len();
    let want_last = want.get(t - 1).unwrap().to_vec1::<f32>().unwrap();
    // Inference path: tokens, rows, tokens.
    let rows = img.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut cpu = CpuModel::new(&text).unwrap();
    cpu.step(&before).unwrap();
    let at_image = cpu.step_embeds(rows.clone()).unwrap();
    let last = cpu.step(&after).unwrap();
    assert_eq!(cpu.len(), t);
    let e = rel_err(&last, &want_last);
    assert!(e < 1e-4, "last position: relative error {e}");
    let want_img = want
        .get(before.len() + n - 1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e = rel_err(&at_image, &want_img);
    assert!(e < 1e-4, "image's last row: relative error {e}");
    // generate_segments prefills the same way.
    let opts = GenerateOptions {
        max_new_tokens: 1,
        sampling: SamplingParams::greedy(),
        stop_tokens: vec![],
    };
    let segs = [
        Segment::Tokens(before.to_vec()),
        Segment::Embeds(rows),
        Segment::Tokens(after.to_vec()),
    ];
    let mut first = None;
    let stats = generate_segments(&mut cpu, &segs, &opts, &AtomicBool::new(false), |id| {
        first = Some(id);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(stats.prompt_tokens, t);
    let argmax = want_last
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        .0 as u32;
    assert_eq!(first, Some(argmax));
}

fn config(steps: u64) -> ImageTextConfig {
    let text = format!(
        r#"
task = "image_text"
[train]
steps = {steps}
batch_size = 4
log_every = 1
[optim]
lr = 3e-3
[schedule]
warmup = 2
"#
    );
    let mut c: ImageTextConfig = toml::from_str(&text).unwrap();
    c.vision = vision();
    c
}

#[test]
fn training_learns_what_only_the_image_tells_and_the_checkpoint_keeps_it() {
    let dev = Device::Cpu;
    let mut m = ImageTextModel::new(text_cfg(), &vision(), 1, 0.05, &dev).unwrap();
    // The same prompt; the answer (token 20 or 21) is the image's colour.
    let mut ex = vec![];
    for (rgb, answer) in [([220, 20, 20], 20u32), ([20, 20, 220], 21u32)] {
        for _ in 0..4 {
            ex.push(ImageTextExample {
                pixels: Some(m.processor_pixels(&solid(rgb)).unwrap()),
                ids: vec![1, 3, 4, 10, 11, answer, 2],
                slot: 2,
                answer: 5..7,
            });
        }
    }
    let cfg = config(40);
    let losses = train_image_text(&mut m, &cfg, &ex, &AtomicBool::new(false), |_| {}).unwrap();
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.3 * first, "loss {first} → {last}");
    // Through a saved checkpoint and the inference path: each image gets its own answer.
    let dir = tempfile::tempdir().unwrap();
    let tk = tempfile::tempdir().unwrap();
    m.save(dir.path(), tk.path()).unwrap();
    let ck = tritter_model::load_model(dir.path(), &dev).unwrap();
    let v = VisionPart::load(dir.path(), ck.config.hidden_size, &dev)
        .unwrap()
        .expect("the checkpoint has vision/");
    for (rgb, answer) in [([220, 20, 20], 20u32), ([20, 20, 220], 21u32)] {
        let rows = v.embed_image(&solid(rgb)).unwrap();
        let mut cpu = CpuModel::new(&ck.model).unwrap();
        cpu.step(&[1, 3]).unwrap();
        cpu.step_embeds(rows).unwrap();
        let logits = cpu.step(&[4, 10, 11]).unwrap();
        let best = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
            .0 as u32;
        assert_eq!(best, answer, "image {rgb:?}");
    }
}

#[test]
fn a_checkpoint_without_vision_has_no_image_path() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!VisionPart::present(dir.path()));
    assert!(VisionPart::load(dir.path(), 32, &Device::Cpu)
        .unwrap()
        .is_none());
}

#[test]
fn vq_mode_learns_from_code_tokens_and_ships_the_tokenizer_not_a_tower() {
    use tritter_model::vqvae::{VqVae, VqVaeConfig};
    let dev = Device::Cpu;
    let vqdir = tempfile::tempdir().unwrap();
    let vq_cfg = VqVaeConfig {
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
    let vb = candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &dev);
    VqVae::new(&vq_cfg, vb).unwrap().save(vqdir.path()).unwrap();
    let mut vision = vision();
    vision.vq = Some(vqdir.path().to_path_buf());
    let mut m = ImageTextModel::new(text_cfg(), &vision, 2, 0.05, &dev).unwrap();
    // Two "pictures" as code tokens (ids 30..34 stand for the image range); the answer follows
    // the codes.
    let mut ex = vec![];
    for (codes, answer) in [([30u32, 31, 30, 31], 20u32), ([33, 32, 33, 32], 21)] {
        let mut ids = vec![1, 3];
        ids.extend(codes);
        ids.extend([4, 10, answer, 2]);
        let n = ids.len();
        for _ in 0..4 {
            ex.push(ImageTextExample {
                pixels: None,
                ids: ids.clone(),
                slot: 2,
                answer: n - 2..n,
            });
        }
    }
    let mut cfg = config(40);
    cfg.vision = vision.clone();
    let losses = train_image_text(&mut m, &cfg, &ex, &AtomicBool::new(false), |_| {}).unwrap();
    assert!(*losses.last().unwrap() < 0.3 * losses[0], "{losses:?}");
    let dir = tempfile::tempdir().unwrap();
    let tk = tempfile::tempdir().unwrap();
    m.save(dir.path(), tk.path()).unwrap();
    assert!(dir.path().join("vqvae/config.json").is_file());
    assert!(!VisionPart::present(dir.path()));
    let ck = tritter_model::load_model(dir.path(), &dev).unwrap();
    for (codes, answer) in [([30u32, 31, 30, 31], 20u32), ([33, 32, 33, 32], 21)] {
        let mut cpu = CpuModel::new(&ck.model).unwrap();
        let mut ids = vec![1, 3];
        ids.extend(codes);
        ids.extend([4, 10]);
        let logits = cpu.step(&ids).unwrap();
        let best = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
            .0 as u32;
        assert_eq!(best, answer);
    }
    // A batch that mixes pixels and codes is refused.
    let mixed = ImageTextExample {
        pixels: Some(m.processor_pixels(&solid([1, 2, 3])).unwrap()),
        ..ex[0].clone()
    };
    assert!(m.loss(&[&ex[0], &mixed], true).is_err());
}
