//! EnCodec (`tritter_model::audio::encodec`) against HF transformers' `EncodecModel`
//! (`scripts/golden_encodec.py`, `tests/golden/encodec_tiny*/`, loaded as HF saved them): codes,
//! pre-quantisation embeddings and decoded audio on both paths; the differentiable path against
//! the fast one; the training forward; save / load; the hub's `weight_g`/`weight_v` layout; and
//! loader errors.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tritter_model::audio::encodec::{Encodec, EncodecConfig, EncodecPath};
use tritter_model::Error;

const CASES: [&str; 2] = ["encodec_tiny", "encodec_tiny_noncausal_gn"];

fn root() -> PathBuf {
    match std::env::var_os("TRITTER_ROOT") {
        Some(r) => PathBuf::from(r),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

fn golden(case: &str) -> PathBuf {
    root().join("tests/golden").join(case)
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap())
}

/// `(equal, total)` positions of two code tensors.
fn codes_equal(a: &Tensor, b: &Tensor) -> (usize, usize) {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all().unwrap().to_vec1::<i64>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<i64>().unwrap();
    (a.iter().zip(&b).filter(|(x, y)| x == y).count(), a.len())
}

#[test]
fn encode_and_decode_match_hf_encodec() {
    for case in CASES {
        let dir = golden(case);
        let model = Encodec::load(&dir, &Device::Cpu).unwrap();
        let ex = load(&dir.join("expected.safetensors"));
        let x = &ex["input_values"];
        let want_codes = &ex["audio_codes"];
        let n_q = want_codes.dim(1).unwrap();
        assert_eq!(n_q, model.num_quantizers());
        let bw = *model.config().target_bandwidths.last().unwrap();
        for path in [EncodecPath::Fast, EncodecPath::Differentiable] {
            let emb = model.embeddings(x, path).unwrap();
            let scale = max_abs(&ex["embeddings"]);
            let d_emb = max_abs_diff(&emb, &ex["embeddings"]) / scale;
            let codes = match path {
                EncodecPath::Fast => model.encode_bandwidth(x, bw).unwrap(),
                p => model.encode_with(x, n_q, p).unwrap(),
            };
            assert_eq!(codes.dtype(), DType::I64);
            let (equal, total) = codes_equal(&codes, want_codes);
            // Decoding HF's codes isolates the decoder from any code flip.
            let audio = model.decode_with(want_codes, path).unwrap();
            let a_scale = max_abs(&ex["audio_values"]);
            let d_audio = max_abs_diff(&audio, &ex["audio_values"]) / a_scale;
            println!(
                "{case} {path:?}: embeddings rel max|Δ| {d_emb:.3e} (max|x| {scale:.3}), codes \
                 equal {equal}/{total} ({:.2}%), audio rel max|Δ| {d_audio:.3e} (max|x| \
                 {a_scale:.3})",
                100.0 * equal as f64 / total as f64
            );
            assert!(
                d_emb <= 1e-4,
                "{case}: embeddings differ by {d_emb} (relative)"
            );
            assert!(
                d_audio <= 1e-4,
                "{case}: audio differs by {d_audio} (relative)"
            );
            assert!(
                equal * 100 >= total * 99,
                "{case}: codes equal on {equal}/{total}"
            );
        }
        // Fewer codebooks: the first rows of the full codes (residual quantisation).
        let two = model.encode(x, 2).unwrap();
        let full = model.encode(x, n_q).unwrap();
        assert_eq!(
            codes_equal(&two, &full.narrow(1, 0, 2).unwrap()),
            (two.elem_count(), two.elem_count())
        );
        assert!(model.encode(x, n_q + 1).is_err());
    }
}

#[test]
fn the_differentiable_path_equals_the_fast_path_and_trains() {
    let dir = golden("encodec_tiny");
    let cfg = EncodecConfig::from_file(&dir.join("config.json")).unwrap();
    let varmap = VarMap::new();
    let model = Encodec::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let x = load(&dir.join("expected.safetensors"))["input_values"].clone();
    let fast = model.embeddings(&x, EncodecPath::Fast).unwrap();
    let diff = model.embeddings(&x, EncodecPath::Differentiable).unwrap();
    let d = max_abs_diff(&fast, &diff) / max_abs(&fast);
    let codes = model.encode(&x, model.num_quantizers()).unwrap();
    let a = model.decode_with(&codes, EncodecPath::Fast).unwrap();
    let b = model
        .decode_with(&codes, EncodecPath::Differentiable)
        .unwrap();
    let d_dec = max_abs_diff(&a, &b) / max_abs(&a);
    println!("fresh model: paths differ by {d:.3e} (embeddings), {d_dec:.3e} (audio), relative");
    assert!(d <= 1e-5 && d_dec <= 1e-5, "{d} {d_dec}");

    let (recon, tcodes, commitment, codebook) = model.forward_train(&x).unwrap();
    assert_eq!(recon.dims(), &[2, 1, 1000]);
    assert_eq!(
        codes_equal(&tcodes, &codes),
        (codes.elem_count(), codes.elem_count())
    );
    // The straight-through latents decode to what the codes decode to.
    assert!(max_abs_diff(&recon, &a) / max_abs(&a) <= 1e-5);
    let mse = recon
        .narrow(2, 0, 997)
        .unwrap()
        .sub(&x)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let loss = (mse + (commitment * 0.25).unwrap() + codebook).unwrap();
    let grads = loss.backward().unwrap();
    let mut reached = 0;
    for (name, t) in model.trainable_tensors() {
        let g = grads
            .get(&t)
            .unwrap_or_else(|| panic!("no gradient for `{name}`"));
        assert!(max_abs(g) > 0.0, "zero gradient for `{name}`");
        reached += 1;
    }
    assert!(reached > 40, "{reached}");
}
