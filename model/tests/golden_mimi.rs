//! The Mimi codec (`tritter_model::audio::mimi`) against HF transformers' `MimiModel`
//! (`tests/golden/mimi_tiny/`, written by `scripts/golden_mimi.py` with HF's own
//! `save_pretrained`): SEANet output, latents, codes (a prefix of the codebooks and all of
//! them), decoded audio; plus the API's limits and the loader's errors.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tritter_model::audio::mimi::{Mimi, MimiConfig};
use tritter_model::Error;

fn golden() -> PathBuf {
    let root = match std::env::var_os("TRITTER_ROOT") {
        Some(r) => PathBuf::from(r),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    };
    root.join("tests/golden/mimi_tiny")
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap();
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max|a − b| / max|b|.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap()) / max_abs(b)
}

/// (equal positions, all positions).
fn codes_equal(a: &Tensor, b: &Tensor) -> (usize, usize) {
    assert_eq!(a.dims(), b.dims());
    assert_eq!(a.dtype(), DType::I64);
    let a = a.flatten_all().unwrap().to_vec1::<i64>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<i64>().unwrap();
    (a.iter().zip(&b).filter(|(x, y)| x == y).count(), b.len())
}

#[test]
fn encode_decode_match_hf_mimi() {
    let dir = golden();
    let model = Mimi::load(&dir, &Device::Cpu).unwrap();
    let ex = load(&dir.join("expected.safetensors"));
    let x = &ex["samples"];

    let d_seanet = rel_diff(&model.encoder_seanet(x).unwrap(), &ex["seanet"]);
    let d_latents = rel_diff(&model.latents(x).unwrap(), &ex["latents"]);
    let n_q = ex["audio_codes"].dim(1).unwrap();
    let codes = model.encode(x, n_q).unwrap();
    let (eq, total) = codes_equal(&codes, &ex["audio_codes"]);
    let codes_all = model.encode(x, model.num_quantizers()).unwrap();
    let (eq_all, total_all) = codes_equal(&codes_all, &ex["audio_codes_all"]);
    // Decoding HF's codes keeps the decode check independent of the encode one.
    let audio = model.decode(&ex["audio_codes"]).unwrap();
    let d_audio = rel_diff(&audio, &ex["audio_values"]);
    let audio_all = model.decode(&ex["audio_codes_all"]).unwrap();
    let d_audio_all = rel_diff(&audio_all, &ex["audio_values_all"]);
    println!(
        "mimi vs HF: seanet {d_seanet:.2e}, latents {d_latents:.2e} (max|Δ|/max|ref|); codes \
         n_q={n_q} equal {eq}/{total} ({:.2}%), n_q={} equal {eq_all}/{total_all} ({:.2}%); \
         audio {d_audio:.2e}, audio (all codebooks) {d_audio_all:.2e} (max|Δ|/max|ref|)",
        100.0 * eq as f64 / total as f64,
        model.num_quantizers(),
        100.0 * eq_all as f64 / total_all as f64,
    );
    assert!(d_seanet <= 1e-5, "seanet {d_seanet}");
    assert!(d_latents <= 1e-4, "latents {d_latents}");
    assert!(eq * 100 >= total * 99, "codes {eq}/{total}");
    assert!(eq_all * 100 >= total_all * 99, "codes {eq_all}/{total_all}");
    assert!(d_audio <= 1e-4, "audio {d_audio}");
    assert!(d_audio_all <= 1e-4, "audio {d_audio_all}");
}

#[test]
fn api_reports_the_config() {
    let model = Mimi::load(&golden(), &Device::Cpu).unwrap();
    let ex = load(&golden().join("expected.safetensors"));
    let hf_params = ex["param_count"].to_vec1::<i64>().unwrap()[0];
    assert_eq!(model.param_count() as i64, hf_params);
    assert_eq!(model.sample_rate(), 2400);
    assert_eq!(model.frame_rate(), 50.0);
    assert_eq!(model.num_quantizers(), 6);
    assert_eq!(model.num_semantic_quantizers(), 1);
    assert_eq!(model.codebook_size(), 32);
    assert_eq!(model.config().latent_stride(), 2);
    assert_eq!(model.config().frame_size(), 48);
}

#[test]
fn bad_arguments_are_errors() {
    let model = Mimi::load(&golden(), &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 1, 96), DType::F32, &Device::Cpu).unwrap();
    for n_q in [0, 7] {
        let err = model.encode(&x, n_q).unwrap_err();
        assert!(err.to_string().contains("this model has 6"), "{err}");
    }
    let stereo = Tensor::zeros((1, 2, 96), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(model.encode(&stereo, 1), Err(Error::Invalid(_))));
    let too_many = Tensor::zeros((1, 7, 2), DType::I64, &Device::Cpu).unwrap();
    assert!(model
        .decode(&too_many)
        .unwrap_err()
        .to_string()
        .contains("this model has 6"));
    let out_of_range = Tensor::full(32i64, (1, 2, 2), &Device::Cpu).unwrap();
    let err = model.decode(&out_of_range).unwrap_err();
    assert!(err.to_string().contains("0..32"), "{err}");
    // 256 transformer steps at most: 129 frames are 258 steps.
    let long = Tensor::zeros((1, 1, 129), DType::I64, &Device::Cpu).unwrap();
    let err = model.decode(&long).unwrap_err();
    assert!(err.to_string().contains("max_position_embeddings"), "{err}");
}

fn golden_parts() -> (MimiConfig, HashMap<String, Tensor>) {
    let cfg = MimiConfig::from_file(&golden().join("config.json")).unwrap();
    (cfg, load(&golden().join("model.safetensors")))
}

#[test]
fn missing_tensor_is_a_clear_error() {
    let (cfg, mut tensors) = golden_parts();
    let name = "quantizer.acoustic_residual_vector_quantizer.layers.4.codebook.embed_sum";
    tensors.remove(name).unwrap();
    let err = Mimi::from_tensors(&cfg, &tensors, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor(n) if n == name),
        "{err}"
    );
}

#[test]
fn bad_shape_is_a_clear_error() {
    let (cfg, mut tensors) = golden_parts();
    let name = "decoder_transformer.layers.1.mlp.fc1.weight";
    tensors.insert(
        name.into(),
        Tensor::zeros((8, 16), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = Mimi::from_tensors(&cfg, &tensors, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::BadShape { name: n, .. } if n == name),
        "{err}"
    );
}

fn config_error(edit: impl FnOnce(&mut serde_json::Value)) -> Error {
    let text = std::fs::read_to_string(golden().join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut value);
    MimiConfig::from_json(&value.to_string()).unwrap_err()
}

#[test]
fn bad_config_keys_are_clear_errors() {
    let key_of = |e: Error| match e {
        Error::Config { key, .. } => key,
        other => panic!("not a config error: {other}"),
    };
    assert_eq!(
        key_of(config_error(|v| v["hidden_size"] = "big".into())),
        "hidden_size"
    );
    assert_eq!(
        key_of(config_error(|v| v["num_key_value_heads"] = 1.into())),
        "num_key_value_heads"
    );
    assert_eq!(
        key_of(config_error(|v| v["num_semantic_quantizers"] = 2.into())),
        "num_semantic_quantizers"
    );
    assert_eq!(
        key_of(config_error(|v| v["pad_mode"] = "reflect".into())),
        "pad_mode"
    );
    assert_eq!(
        key_of(config_error(|v| v["sliding_window"] = 1.into())),
        "sliding_window"
    );
    assert_eq!(
        key_of(config_error(
            |v| v["encoder_config"] = serde_json::Value::Null
        )),
        "encoder_config"
    );
    assert_eq!(
        key_of(config_error(
            |v| v["rope_parameters"]["rope_type"] = "yarn".into()
        )),
        "rope_parameters.rope_type"
    );
    // Unknown keys are tolerated; the legacy `frame_rate` / `rope_theta` keys are read.
    let text = std::fs::read_to_string(golden().join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["some_future_key"] = 3.into();
    value["frame_rate"] = 25.0.into();
    value.as_object_mut().unwrap().remove("rope_parameters");
    value["rope_theta"] = 500.0.into();
    let cfg = MimiConfig::from_json(&value.to_string()).unwrap();
    assert_eq!(cfg.frame_rate(), 25.0);
    assert_eq!(cfg.latent_stride(), 4);
    assert_eq!(cfg.rope_theta_value().unwrap(), 500.0);
}

#[test]
fn default_config_is_kyutai_mimi() {
    let cfg = MimiConfig::from_json(r#"{"model_type": "mimi", "frame_rate": 12.5}"#).unwrap();
    assert_eq!(cfg.frame_rate(), 12.5);
    assert_eq!(cfg.encodec_frame_rate(), 25);
    assert_eq!(cfg.latent_stride(), 2);
    assert_eq!(cfg.frame_size(), 1920);
    assert_eq!(cfg.num_quantizers, 32);
}
