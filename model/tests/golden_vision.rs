//! The vision path against Hugging Face transformers 5.24 (fixtures by `scripts/golden_vision.py`,
//! described in `tests/golden/README.md`): `SiglipImageProcessor` pixel values, the
//! `SiglipVisionModel` tower (its own `save_pretrained` layout and a full `SiglipModel`
//! checkpoint's), and `Idefics3Connector`.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tritter_model::vision::{
    preprocess, Connector, ProcessorConfig, SiglipVision, VisionAct, VisionPath,
};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(name)
}

fn expected(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap()
}

/// `(max |a - b|, mean |a - b|, max |b|)`.
fn diff(a: &Tensor, b: &Tensor) -> (f32, f32, f32) {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(&b) {
        let d = (x - y).abs();
        max = max.max(d);
        sum += f64::from(d);
    }
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    (max, (sum / a.len() as f64) as f32, scale)
}

fn pixels(dir: &Path, png: &str) -> Tensor {
    let cfg = ProcessorConfig::from_file(&dir.join("preprocessor_config.json")).unwrap();
    let img = image::open(dir.join(png)).unwrap();
    preprocess(&img, &cfg, &Device::Cpu).unwrap()
}

#[test]
fn processor_at_size_matches_hf_exactly() {
    // 32×32 RGBA: no resampling, only compositing onto white, rescale and normalise.
    let dir = golden("siglip_tiny");
    let got = pixels(&dir, "rgba_32.png");
    let (max, _, _) = diff(&got, &expected(&dir)["pixel_values_rgba"]);
    println!("processor, at size (RGBA): max |diff| {max:e}");
    assert!(max <= 1e-6, "max |diff| {max}");
}

#[test]
fn processor_resized_within_resampling_bound() {
    // PIL resamples with 22-bit fixed-point coefficients, the `image` crate with f32 ones; both
    // run the horizontal pass first into 8 bits (see processor.rs). One 8-bit level is
    // 2/255 ≈ 0.0078 after normalising with std 0.5. Bound: 1 level max, 0.01 level mean
    // (nearest is checked at this one ratio only).
    let dir = golden("siglip_tiny");
    let ex = expected(&dir);
    let base = ProcessorConfig::from_file(&dir.join("preprocessor_config.json")).unwrap();
    let level = 2.0 / 255.0;
    let mut measured = vec![];
    for (png, key, resample) in [
        ("image_40x28.png", "pixel_values", 3),
        ("photo_96x72.png", "pixel_values_photo", 3),
        ("photo_96x72.png", "pixel_values_photo_bilinear", 2),
        ("photo_96x72.png", "pixel_values_photo_lanczos", 1),
        ("photo_96x72.png", "pixel_values_photo_nearest", 0),
    ] {
        let cfg = ProcessorConfig {
            resample,
            ..base.clone()
        };
        let img = image::open(dir.join(png)).unwrap();
        let got = preprocess(&img, &cfg, &Device::Cpu).unwrap();
        let (max, mean, _) = diff(&got, &ex[key]);
        println!(
            "processor, {png} → 32×32 resample {resample}: max |diff| {max:.5} ({:.2} levels), mean {mean:.2e} ({:.4} levels)",
            max / level,
            mean / level
        );
        measured.push((key, max, mean));
    }
    for (key, max, mean) in measured {
        assert!(max <= level + 1e-6, "{key}: max |diff| {max}");
        assert!(mean <= 0.01 * level, "{key}: mean |diff| {mean}");
    }
}

fn check_tower(dir: &Path) -> Tensor {
    let ex = expected(dir);
    let tower = SiglipVision::load(dir, &Device::Cpu).unwrap();
    let px = &ex["pixel_values"];
    let reference = &ex["last_hidden_state"];
    for path in [VisionPath::Fused, VisionPath::Differentiable] {
        let got = tower.forward_with(px, path).unwrap();
        let (max, _, scale) = diff(&got, reference);
        println!(
            "tower {}, {path:?}: max |diff| {max:e}, max |ref| {scale:.3}, relative {:e}",
            dir.file_name().unwrap().to_string_lossy(),
            max / scale
        );
        assert!(max / scale <= 1e-4, "relative error {}", max / scale);
    }
    tower.forward(px).unwrap()
}

#[test]
fn tower_matches_hf_siglip_vision_model() {
    // transformers 5 `save_pretrained` of a SiglipVisionModel: bare names, pooling head kept.
    let dir = golden("siglip_tiny");
    let out = check_tower(&dir);
    let tower = SiglipVision::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(out.dims(), &[1, 64, 32]);
    assert_eq!(tower.config().hidden_act, VisionAct::GeluTanh);
    // The parameter count is that of the file's tensors minus the pooling head.
    let all = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let without_head: usize = all
        .iter()
        .filter(|(k, _)| !k.starts_with("head."))
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(tower.param_count(), without_head);
}

#[test]
fn tower_from_full_siglip_model_checkpoint() {
    // A SiglipModel file as on the Hub: vision_model.*, text_model.*, logit_scale, logit_bias;
    // config.json with vision_config (here exact GELU and eps 1e-5).
    let dir = golden("siglip_full_tiny");
    check_tower(&dir);
    let tower = SiglipVision::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(tower.config().hidden_act, VisionAct::Gelu);
    assert_eq!(tower.config().layer_norm_eps, 1e-5);
}

#[test]
fn connector_matches_hf_idefics3_connector() {
    let dir = golden("idefics3_connector");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let get = |k: &str| meta[k].as_u64().unwrap() as usize;
    let conn = Connector::load(
        &dir.join("connector.safetensors"),
        get("scale_factor"),
        get("vision_hidden_size"),
        get("text_hidden_size"),
        &Device::Cpu,
    )
    .unwrap();
    let ex = expected(&dir);
    let got = conn.forward(&ex["input"]).unwrap();
    assert_eq!(got.dims(), &[1, 4, 24]);
    let (max, _, scale) = diff(&got, &ex["output"]);
    println!(
        "connector: max |diff| {max:e}, max |ref| {scale:.3}, relative {:e}",
        max / scale
    );
    assert!(max / scale <= 1e-4);
}

#[test]
fn image_to_text_tokens_end_to_end() {
    // PNG → processor → tower → connector, against HF's tower output fed through HF's
    // connector weights: the resampling difference must stay small after the whole stack.
    let dir = golden("siglip_tiny");
    let tower = SiglipVision::load(&dir, &Device::Cpu).unwrap();
    let px = pixels(&dir, "rgba_32.png");
    let from_rust = tower.forward(&px).unwrap();
    let from_hf = tower.forward(&expected(&dir)["pixel_values_rgba"]).unwrap();
    let (max, _, scale) = diff(&from_rust, &from_hf);
    assert!(max / scale <= 1e-5, "relative {}", max / scale);
}

#[test]
fn load_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let src = golden("siglip_tiny");
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    // Missing weights file.
    let err = SiglipVision::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    // A file without layer 1's q_proj.
    let mut all =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    all.remove("encoder.layers.1.self_attn.q_proj.weight");
    candle_core::safetensors::save(&all, tmp.path().join("model.safetensors")).unwrap();
    let err = SiglipVision::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing tensor") && err.contains("encoder.layers.1.self_attn.q_proj.weight"),
        "{err}"
    );
    // A wrong shape.
    let mut all =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    all.insert(
        "post_layernorm.weight".into(),
        Tensor::zeros(31, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&all, tmp.path().join("model.safetensors")).unwrap();
    let err = SiglipVision::load(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("post_layernorm.weight") && err.contains("31"),
        "{err}"
    );
}
