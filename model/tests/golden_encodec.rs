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

#[test]
fn save_then_load_and_the_hub_weight_layouts_give_the_same_model() {
    let dir = golden("encodec_tiny");
    let model = Encodec::load(&dir, &Device::Cpu).unwrap();
    let ex = load(&dir.join("expected.safetensors"));
    let codes = &ex["audio_codes"];
    let want = model.decode(codes).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("codec");
    model.save(&out).unwrap();
    model.save(&out).unwrap(); // replacing an existing directory works too
    let back = Encodec::load(&out, &Device::Cpu).unwrap();
    assert_eq!(back.config(), model.config());
    assert_eq!(back.param_count(), model.param_count());
    let names = |m: &Encodec| {
        let mut n: Vec<String> = m.named_tensors().into_iter().map(|(n, _)| n).collect();
        n.sort();
        n
    };
    assert_eq!(names(&back), names(&model));
    let mut file: Vec<String> = load(&dir.join("model.safetensors")).into_keys().collect();
    file.sort();
    assert_eq!(names(&model), file, "saved names are HF's");
    assert_eq!(max_abs_diff(&back.decode(codes).unwrap(), &want), 0.0);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temporary left"
    );

    // The hub checkpoints' `weight_g` / `weight_v`, and plain (already normalised) weights.
    let cfg = model.config().clone();
    let tensors = load(&dir.join("model.safetensors"));
    let old: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| {
            let k = k
                .replace("parametrizations.weight.original0", "weight_g")
                .replace("parametrizations.weight.original1", "weight_v");
            (k, v.clone())
        })
        .collect();
    let hub = Encodec::from_tensors(&cfg, old, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&hub.decode(codes).unwrap(), &want), 0.0);
    let mut plain = HashMap::new();
    for (k, v) in &tensors {
        if let Some(stem) = k.strip_suffix("parametrizations.weight.original1") {
            let g = tensors[&format!("{stem}parametrizations.weight.original0")]
                .to_dtype(DType::F32)
                .unwrap();
            let v = v.to_dtype(DType::F32).unwrap();
            let norm = v
                .sqr()
                .unwrap()
                .sum_keepdim(2)
                .unwrap()
                .sum_keepdim(1)
                .unwrap()
                .sqrt()
                .unwrap();
            let w = v.broadcast_mul(&(g / norm).unwrap()).unwrap();
            plain.insert(format!("{stem}weight"), w);
        } else if !k.ends_with("original0") {
            plain.insert(k.clone(), v.clone());
        }
    }
    let plain = Encodec::from_tensors(&cfg, plain, &Device::Cpu).unwrap();
    let d = max_abs_diff(&plain.decode(codes).unwrap(), &want) / max_abs(&want);
    assert!(d <= 1e-6, "{d}");
}

#[test]
fn broken_checkpoints_and_inputs_are_named_errors() {
    let dir = golden("encodec_tiny");
    let cfg = EncodecConfig::from_file(&dir.join("config.json")).unwrap();
    let tensors = load(&dir.join("model.safetensors"));

    let mut missing = tensors.clone();
    missing.remove("decoder.layers.1.lstm.weight_hh_l1");
    match Encodec::from_tensors(&cfg, missing, &Device::Cpu) {
        Err(Error::MissingTensor(name)) => assert_eq!(name, "decoder.layers.1.lstm.weight_hh_l1"),
        other => panic!("expected a missing tensor, got {other:?}"),
    }
    let mut half = tensors.clone();
    half.remove("encoder.layers.0.conv.parametrizations.weight.original0");
    let err = Encodec::from_tensors(&cfg, half, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor(n) if n == "encoder.layers.0.conv.parametrizations.weight.original0"),
        "{err}"
    );
    let wider = EncodecConfig {
        num_filters: 8,
        ..cfg.clone()
    };
    let err = Encodec::from_tensors(&wider, tensors.clone(), &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::BadShape { name, .. } if name.starts_with("encoder.layers.")),
        "{err}"
    );
    let fewer_lstm = EncodecConfig {
        num_lstm_layers: 1,
        ..cfg.clone()
    };
    let err = Encodec::from_tensors(&fewer_lstm, tensors.clone(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("_l1") && err.contains("not part"), "{err}");

    let err = EncodecConfig::from_json(r#"{"norm_type": "batch_norm"}"#).unwrap_err();
    assert!(
        matches!(&err, Error::Config { key, .. } if key == "norm_type"),
        "{err}"
    );
    let bad_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        bad_dir.path().join("config.json"),
        r#"{"upsampling_ratios": [4, 0]}"#,
    )
    .unwrap();
    let err = Encodec::load(bad_dir.path(), &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::Config { key, .. } if key == "upsampling_ratios"),
        "{err}"
    );

    let model = Encodec::from_tensors(&cfg, tensors.clone(), &Device::Cpu).unwrap();
    let bad = Tensor::full(32i64, (1, 2, 5), &Device::Cpu).unwrap();
    let err = model.decode(&bad).unwrap_err().to_string();
    assert!(err.contains("code 32 is outside the codebook"), "{err}");
    let stereo = Tensor::zeros((1, 2, 100), DType::F32, &Device::Cpu).unwrap();
    assert!(model
        .encode(&stereo, 1)
        .unwrap_err()
        .to_string()
        .contains("expected [batch, 1,"));
    let hq = EncodecConfig {
        normalize: true,
        ..cfg.clone()
    };
    let model = Encodec::from_tensors(&hq, tensors, &Device::Cpu).unwrap();
    let mono = Tensor::zeros((1, 1, 100), DType::F32, &Device::Cpu).unwrap();
    let err = model.encode(&mono, 1).unwrap_err();
    assert!(
        matches!(&err, Error::Config { key, .. } if key == "normalize"),
        "{err}"
    );
}
