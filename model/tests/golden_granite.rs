//! Tritter's hybrid decoder against transformers' `GraniteMoeHybridForCausalLM` (IBM Granite 4's
//! hybrid, dense: no experts). Fixtures `tests/golden/granite_hybrid_{rope,nope}` by
//! `scripts/golden_hybrid.py`: HF's own `save_pretrained` output, loaded here by `load_model` as
//! it is (config keys, tensor names, the fused `shared_mlp`, the multipliers, RoPE or none).
//!
//! Checked: the full forward's logits; the logits of a 6-token prefill followed by single-token
//! steps through the candle decoder (attention KV cache beside Mamba-2 states), against HF's
//! cached decoding; the CPU inference path refusing the model with the reason.
//! Tolerance: f32; max |Δ| ≤ 1e-5 · max(1, max |reference|).

use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use tritter_model::config::LayerKind;
use tritter_model::{load_model, Compute, CpuModel, Profile};

fn golden(case: &str) -> PathBuf {
    let root = match std::env::var_os("TRITTER_ROOT") {
        Some(r) => PathBuf::from(r),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    };
    root.join("tests/golden").join(case)
}

fn close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    let d = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let m = want
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!("{what}: max|Δ| {d:.2e} (max|ref| {m:.2})");
    assert!(d <= 1e-5 * m.max(1.0), "{what}: max|Δ| {d}");
}

fn check(case: &str, kinds: &[LayerKind], rope: bool) {
    let dir = golden(case);
    let exp =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let ck = load_model(&dir, &Device::Cpu).unwrap();
    assert_eq!(ck.config.hybrid.layer_types, kinds, "{case}");
    assert_eq!(ck.config.hybrid.use_rope, rope, "{case}");
    let ids: Vec<u32> = exp["ids"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&i| i as u32)
        .collect();
    let t = ids.len();
    let v = ck.config.vocab_size;

    let x = Tensor::from_slice(&ids, (1, t), &Device::Cpu).unwrap();
    let logits = ck.model.forward(&x).unwrap().squeeze(0).unwrap();
    close(&format!("{case} full forward"), &logits, &exp["logits"]);

    let mut dec = tritter_model::decoder::open(&ck.model, Compute::Cpu, Profile::Fast).unwrap();
    assert!(
        dec.device_name().contains("candle"),
        "{}",
        dec.device_name()
    );
    let mut rows = dec.step_all(&ids[..6]).unwrap();
    for &id in &ids[6..] {
        rows.extend(dec.step(&[id]).unwrap());
    }
    assert_eq!(dec.len(), t);
    let stepped = Tensor::from_vec(rows, (t, v), &Device::Cpu).unwrap();
    close(
        &format!("{case} prefill 6 + steps"),
        &stepped,
        &exp["stepped_logits"],
    );

    let e = CpuModel::new(&ck.model).err().unwrap().to_string();
    assert!(
        e.contains("mamba2 layer") && e.contains("candle path"),
        "{e}"
    );
}

#[test]
fn granite_hybrid_with_rope_matches_transformers() {
    use LayerKind::{Attention as A, Mamba2 as M};
    check("granite_hybrid_rope", &[M, A, M, M], true);
}

#[test]
fn granite_hybrid_without_positions_matches_transformers() {
    use LayerKind::{Attention as A, Mamba2 as M};
    check("granite_hybrid_nope", &[A, M, M], false);
}
