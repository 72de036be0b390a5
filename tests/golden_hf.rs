//! Golden tests against Hugging Face transformers' `BitNetForCausalLM` (fixtures made by
//! `scripts/make_golden.py`; see tests/golden/README.md): logits of packed and online checkpoints,
//! and loss + gradients of the training form.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tritter_model::{load_model, Config, CpuModel, Params, TensorStore, Transformer};

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case)
}

fn expected(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let m = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    d / m.max(1e-12)
}

fn argmax_rows(t: &Tensor) -> Vec<u32> {
    t.argmax(1).unwrap().to_vec1::<u32>().unwrap()
}

fn check_logits(case: &str) {
    let dir = golden(case);
    let exp = expected(&dir);
    let ids = exp["ids"].to_dtype(DType::U32).unwrap();
    let want = &exp["logits"];
    let ck = load_model(&dir, &Device::Cpu).unwrap();
    let got = ck
        .model
        .forward(&ids.unsqueeze(0).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap();
    assert_eq!(got.dims(), want.dims(), "{case}");
    let err = rel_err(&got, want);
    eprintln!("{case}: max|Δlogit|/max|logit| = {err:.2e}");
    assert!(err <= 1e-4, "{case}: relative logit error {err}");
    assert_eq!(
        argmax_rows(&got),
        argmax_rows(want),
        "{case}: argmax differs"
    );

    // Incremental decoding through the KV cache equals the full forward.
    let idv = ids.to_vec1::<u32>().unwrap();
    let mut cpu = CpuModel::new(&ck.model).unwrap();
    let split = idv.len() / 2;
    let mut rows = vec![];
    let first = cpu.forward(&idv[..split], true).unwrap();
    rows.push(Tensor::from_vec(first, (split, ck.config.vocab_size), &Device::Cpu).unwrap());
    for &id in &idv[split..] {
        let l = cpu.forward(&[id], false).unwrap();
        rows.push(
            Tensor::new(l.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
        );
    }
    let inc = Tensor::cat(&rows, 0).unwrap();
    let err = rel_err(&inc, want);
    assert!(err <= 1e-4, "{case}: incremental decode error {err}");
}

#[test]
fn packed_tied_gqa_matches_hf() {
    check_logits("packed_tied_gqa");
}

#[test]
fn packed_untied_mha_matches_hf() {
    check_logits("packed_untied_mha");
}

#[test]
fn packed_autobitlinear_offline_matches_hf() {
    check_logits("packed_auto_offline");
}

#[test]
fn online_tied_matches_hf() {
    check_logits("online_tied");
}

#[test]
fn online_untied_matches_hf() {
    check_logits("online_untied");
}

fn training_model(dir: &Path) -> (Config, Params, Transformer) {
    let cfg = Config::from_json_file(&dir.join("config.json")).unwrap();
    let store = TensorStore::load_dir(dir, &Device::Cpu).unwrap();
    let params = Params::from_store(&cfg, &store).unwrap();
    let mut src = &params;
    let model = Transformer::load(&cfg, &mut src, &Device::Cpu).unwrap();
    (cfg, params, model)
}

fn check_grads(case: &str) {
    let dir = golden(case);
    let exp = expected(&dir);
    let (_cfg, params, model) = training_model(&dir);
    let ids = exp["ids"].to_dtype(DType::U32).unwrap();
    let loss = model.loss(&ids).unwrap();
    let want_loss = exp["loss"].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
    let got_loss = loss.to_scalar::<f32>().unwrap();
    eprintln!("{case}: loss {got_loss} vs HF {want_loss}");
    assert!(
        ((got_loss - want_loss) / want_loss).abs() < 1e-5,
        "{case}: loss {got_loss} vs {want_loss}"
    );
    let grads = loss.backward().unwrap();
    let mut worst = 0f32;
    for (name, var) in params.iter() {
        let want = &exp[&format!("grad.{name}")];
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{case}: no gradient reached {name}"));
        let err = rel_err(got, want);
        worst = worst.max(err);
        assert!(err <= 1e-4, "{case}: gradient of {name} off by {err}");
    }
    eprintln!(
        "{case}: worst gradient error {worst:.2e} over {} tensors",
        params.len()
    );
}

#[test]
fn gradients_match_hf_tied() {
    check_grads("grad_online");
}

#[test]
fn gradients_match_hf_untied() {
    check_grads("grad_online_untied");
}
