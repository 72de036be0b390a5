//! Golden tests against Hugging Face transformers' Chameleon text model (fixtures
//! `tests/golden/chameleon_text_*`, made by `scripts/golden_chameleon.py`; see
//! tests/golden/README.md): Chameleon's `config.json` read as it is (q/k per-head LayerNorm,
//! `swin_norm`, dense or ternary linears), and the logits of the candle path (the checkpoint's
//! weights, and the trainable-parameter form the trainer differentiates), the CPU inference path
//! over a whole prompt and token by token, and, where the fixture has them, the loss and the
//! gradients of every norm.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tritter_model::config::QkNormKind;
use tritter_model::train::FullPrecision;
use tritter_model::{
    load_model, Config, CpuModel, NormPlacement, Params, TensorStore, Transformer, WeightFormat,
    WeightSource,
};

const CASES: [&str; 5] = [
    "chameleon_text_qkln_swin",
    "chameleon_text_qkln",
    "chameleon_text_swin",
    "chameleon_text_ternary_qkln_swin",
    "chameleon_text_ternary_qkln",
];

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(case)
}

fn expected(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap()
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap()
}

/// max|a - b| / max|b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let m = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap().max(1e-12)
}

fn argmax_rows(t: &Tensor) -> Vec<u32> {
    t.argmax(1).unwrap().to_vec1::<u32>().unwrap()
}

/// The switches the fixture was made with (meta.json) are what Tritter reads from config.json.
fn check_config(case: &str, cfg: &Config, m: &serde_json::Value) {
    let sw = &m["switches"];
    let swin = sw["swin_norm"].as_bool().unwrap();
    let qk = sw["qk_layernorm"].as_bool().unwrap();
    let ternary = sw["ternary"].as_bool().unwrap();
    let placement = if swin {
        NormPlacement::SwinNorm
    } else {
        NormPlacement::Pre
    };
    assert_eq!(cfg.norm_placement, placement, "{case}");
    assert_eq!(cfg.qk_norm, qk.then_some(QkNormKind::Layernorm), "{case}");
    let format = if ternary {
        WeightFormat::Online
    } else {
        WeightFormat::Dense
    };
    assert_eq!(cfg.weight_format, format, "{case}");
    let shape = &m["shape"];
    assert_eq!(cfg.num_kv_heads as u64, shape["kv_heads"].as_u64().unwrap());
    assert_eq!(cfg.tie_word_embeddings, shape["tied"].as_bool().unwrap());
    assert_eq!(cfg.rope_theta, shape["rope_theta"].as_f64().unwrap());
    assert_eq!(cfg.rms_norm_eps, shape["rms_eps"].as_f64().unwrap());
}

/// Logits `[T, V]` of the CPU inference path: the first half of `ids` as one prompt, then one
/// token at a time.
fn cpu_incremental(model: &Transformer, ids: &[u32]) -> Tensor {
    let vocab = model.config().vocab_size;
    let mut cpu = CpuModel::new(model).unwrap();
    let split = ids.len() / 2;
    let mut rows = vec![cpu.forward(&ids[..split], true).unwrap()];
    for &id in &ids[split..] {
        rows.push(cpu.forward(&[id], false).unwrap());
    }
    Tensor::from_vec(rows.concat(), (ids.len(), vocab), &Device::Cpu).unwrap()
}

/// The model the trainer differentiates: latent parameters from the checkpoint, dense or
/// fake-quantised (straight-through) as the config says.
fn training_model(dir: &Path, cfg: &Config) -> (Params, Transformer) {
    let store = TensorStore::load_dir(dir, &Device::Cpu).unwrap();
    let params = Params::from_store(cfg, &store).unwrap();
    let model = {
        let mut dense = FullPrecision(&params);
        let mut latent = &params;
        let src: &mut dyn WeightSource = match cfg.weight_format {
            WeightFormat::Dense => &mut dense,
            _ => &mut latent,
        };
        Transformer::load(cfg, src, &Device::Cpu).unwrap()
    };
    (params, model)
}

/// Every path's logits against HF's; returns the worst relative error.
fn check_case(case: &str) -> f32 {
    let dir = golden(case);
    let exp = expected(&dir);
    let ids = exp["ids"].to_dtype(DType::U32).unwrap();
    let idv = ids.to_vec1::<u32>().unwrap();
    let want = &exp["logits"];
    let ck = load_model(&dir, &Device::Cpu).unwrap();
    check_config(case, &ck.config, &meta(&dir));

    let batch = ids.unsqueeze(0).unwrap();
    let candle = ck.model.forward(&batch).unwrap().squeeze(0).unwrap();
    let cpu_full = CpuModel::new(&ck.model)
        .unwrap()
        .forward(&idv, true)
        .unwrap();
    let cpu_full = Tensor::from_vec(cpu_full, want.dims(), &Device::Cpu).unwrap();
    let cpu_inc = cpu_incremental(&ck.model, &idv);
    let (_params, train) = training_model(&dir, &ck.config);
    let trained = train.forward(&batch).unwrap().squeeze(0).unwrap();

    let mut worst = 0f32;
    for (path, got) in [
        ("candle", &candle),
        ("cpu", &cpu_full),
        ("cpu incremental", &cpu_inc),
        ("training form", &trained),
    ] {
        assert_eq!(got.dims(), want.dims(), "{case} {path}");
        let err = rel_err(got, want);
        eprintln!("{case} {path}: max|Δlogit|/max|logit| = {err:.2e}");
        assert!(err <= 1e-4, "{case} {path}: relative logit error {err}");
        assert_eq!(argmax_rows(got), argmax_rows(want), "{case} {path}");
        worst = worst.max(err);
    }
    // Step by step equals the whole prompt at once.
    let err = rel_err(&cpu_inc, &cpu_full);
    assert!(err <= 1e-5, "{case}: incremental vs full {err}");
    worst
}

#[test]
fn dense_qk_layernorm_with_swin_norm_matches_hf() {
    check_case(CASES[0]);
}

#[test]
fn dense_qk_layernorm_pre_norm_matches_hf() {
    check_case(CASES[1]);
}

#[test]
fn dense_swin_norm_without_qk_norm_matches_hf() {
    check_case(CASES[2]);
}

#[test]
fn ternary_qk_layernorm_with_swin_norm_matches_the_bitnet_reference() {
    check_case(CASES[3]);
}

#[test]
fn ternary_qk_layernorm_pre_norm_matches_the_bitnet_reference() {
    check_case(CASES[4]);
}

/// Loss and the gradient of every norm (block norms, per-head q/k LayerNorm weights and biases,
/// final norm) through the differentiable candle path, against HF's autograd.
#[test]
fn norm_gradients_match_hf() {
    let case = CASES[0];
    let dir = golden(case);
    let exp = expected(&dir);
    let cfg = Config::from_json_file(&dir.join("config.json")).unwrap();
    let (params, model) = training_model(&dir, &cfg);
    let ids = exp["ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let loss = model.loss(&ids).unwrap();
    let got = loss.to_scalar::<f32>().unwrap();
    let want = exp["loss"].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
    eprintln!("{case}: loss {got} vs HF {want}");
    assert!(
        ((got - want) / want).abs() < 1e-5,
        "{case}: loss {got} vs {want}"
    );
    let grads = loss.backward().unwrap();
    let mut n = 0;
    let mut worst = 0f32;
    for (key, want) in exp.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let name = &key["grad.".len()..];
        let var = params
            .get(name)
            .unwrap_or_else(|| panic!("no parameter {name}"));
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{case}: no gradient reached {name}"));
        let err = rel_err(got, want);
        assert!(err <= 1e-4, "{case}: gradient of {name} off by {err}");
        worst = worst.max(err);
        n += 1;
    }
    // 2 layers × (2 block norms + q/k weight and bias) + the final norm.
    assert_eq!(n, 2 * 6 + 1, "{case}: gradients in the fixture");
    eprintln!("{case}: worst norm-gradient error {worst:.2e} over {n} tensors");
}

/// A fixture's q/k norm biases matter: zeroing them moves the logits far beyond the tolerance
/// (so the tests above would catch a loader that skipped them).
#[test]
fn qk_norm_bias_is_not_ignored() {
    let dir = golden(CASES[0]);
    let exp = expected(&dir);
    let cfg = Config::from_json_file(&dir.join("config.json")).unwrap();
    let store = TensorStore::load_dir(&dir, &Device::Cpu).unwrap();
    let mut tensors = HashMap::new();
    for name in store.names() {
        let t = store.get(name).unwrap().to_dtype(DType::F32).unwrap();
        let t = if name.ends_with("_norm.bias") {
            t.zeros_like().unwrap()
        } else {
            t
        };
        tensors.insert(name.clone(), t);
    }
    let params = Params::from_store(&cfg, &TensorStore::from_map(tensors)).unwrap();
    let model = Transformer::load(&cfg, &mut FullPrecision(&params), &Device::Cpu).unwrap();
    let ids = exp["ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let got = model.forward(&ids).unwrap().squeeze(0).unwrap();
    let err = rel_err(&got, &exp["logits"]);
    assert!(
        err > 1e-2,
        "zeroed q/k biases changed the logits by only {err}"
    );
}
