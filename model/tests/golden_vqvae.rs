//! The Chameleon VQ-VAE (`tritter_model::vqvae`) against its golden fixtures
//! (`scripts/golden_vqvae.py`): the encode path against HF transformers' `ChameleonVQVAE`
//! (`tests/golden/chameleon_vqvae/`, loaded as HF saved it), the decode path against the
//! script's own PyTorch statement of Chameleon's VQGAN decoder
//! (`tests/golden/chameleon_vqvae_decoder/`); plus saving, reloading and loader errors.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tritter_model::vqvae::{VqVae, VqVaeConfig};
use tritter_model::Error;

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

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
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

#[test]
fn encode_matches_hf_chameleon_vqvae() {
    let dir = golden("chameleon_vqvae");
    let model = VqVae::load(&dir, &Device::Cpu).unwrap();
    assert!(!model.has_decoder(), "HF's ChameleonVQVAE has no decoder");
    let ex = load(&dir.join("expected.safetensors"));
    let pixels = &ex["pixels"];

    let hidden = model.encoder_hidden(pixels).unwrap();
    let d_hidden = max_abs_diff(&hidden, &ex["hidden"]);
    let latents = model.latents(pixels).unwrap();
    let d_latents = max_abs_diff(&latents, &ex["latents"]);
    let codes = model.encode(pixels).unwrap();
    assert_eq!(codes.dtype(), DType::I64);
    let got = codes.to_vec2::<i64>().unwrap();
    let want = ex["codes"].to_vec2::<i64>().unwrap();
    assert_eq!(got.len(), want.len());
    let total: usize = want.iter().map(Vec::len).sum();
    let equal: usize = got
        .iter()
        .zip(&want)
        .map(|(g, w)| g.iter().zip(w).filter(|(a, b)| a == b).count())
        .sum();
    let share = equal as f64 / total as f64;
    println!(
        "vqvae encode vs HF: hidden max|Δ| {d_hidden:.3e} (max|x| {:.3}), latents max|Δ| \
         {d_latents:.3e} (max|x| {:.3}), codes equal {equal}/{total} ({:.2}%)",
        max_abs(&ex["hidden"]),
        max_abs(&ex["latents"]),
        100.0 * share
    );
    assert!(d_hidden <= 1e-4, "encoder output differs by {d_hidden}");
    assert!(d_latents <= 1e-4, "latents differ by {d_latents}");
    assert!(share >= 0.99, "codes equal on {equal}/{total}");

    // HF's embedding_loss is (1 + β) · mean((e − z_e)²) in value: codebook + commitment.
    let (z_q, codebook, commitment) = model.quantizer_losses(&latents).unwrap();
    let ours = (codebook + commitment).unwrap().to_scalar::<f32>().unwrap();
    let hf = ex["embedding_loss"].to_vec1::<f32>().unwrap()[0];
    println!("vqvae quantiser loss: ours {ours:.6}, HF embedding_loss {hf:.6}");
    assert!(
        (ours - hf).abs() <= 1e-5 * hf.abs().max(1.0),
        "{ours} vs {hf}"
    );
    // z_q is the chosen codebook vectors: the lookup of the codes.
    let looked_up = model.embed_codes(&codes, (16, 16)).unwrap();
    assert!(max_abs_diff(&z_q, &looked_up) <= 1e-6);

    let err = model.decode(&codes, (16, 16)).unwrap_err().to_string();
    assert!(err.contains("no decoder"), "{err}");
}

/// The decoder fixture holds what decoding reads; the encoder's tensors (unused by decoding)
/// come from a randomly initialised model of the same config.
fn decoder_model() -> (VqVae, HashMap<String, Tensor>) {
    let dir = golden("chameleon_vqvae_decoder");
    let cfg = VqVaeConfig::from_file(&dir.join("config.json")).unwrap();
    let mut tensors = load(&dir.join("decoder.safetensors"));
    assert!(tensors.keys().all(|k| !k.starts_with("encoder.")));
    let varmap = VarMap::new();
    let filler = VqVae::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let mut filled = 0;
    for (name, t) in filler.named_tensors() {
        if let std::collections::hash_map::Entry::Vacant(slot) = tensors.entry(name) {
            let name = slot.key();
            assert!(
                name.starts_with("encoder.") || name.starts_with("quant_conv."),
                "the decoder fixture lacks `{name}`"
            );
            slot.insert(t);
            filled += 1;
        }
    }
    assert!(filled > 0);
    let model = VqVae::from_tensors(&cfg, tensors, &Device::Cpu).unwrap();
    (model, load(&dir.join("expected.safetensors")))
}

#[test]
fn decode_matches_the_pytorch_reference_decoder() {
    let (model, ex) = decoder_model();
    assert!(model.has_decoder());
    let pixels = model.decode(&ex["codes"], (16, 16)).unwrap();
    let d = max_abs_diff(&pixels, &ex["pixels"]);
    let scale = max_abs(&ex["pixels"]);
    println!(
        "vqvae decode vs reference: max|Δ| {d:.3e}, max|pixel| {scale:.3}, relative {:.3e}",
        d / scale
    );
    assert!(
        d / scale <= 1e-4,
        "decoded pixels differ by {d} (scale {scale})"
    );
    // Codes outside the codebook are refused with a message.
    let bad = Tensor::full(64i64, (1, 256), &Device::Cpu).unwrap();
    let err = model.decode(&bad, (16, 16)).unwrap_err().to_string();
    assert!(err.contains("code 64 is outside the codebook"), "{err}");
}

#[test]
fn save_then_load_gives_the_same_model() {
    let (model, ex) = decoder_model();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vq");
    model.save(&dir).unwrap();
    model.save(&dir).unwrap(); // replacing an existing directory works too
    let back = VqVae::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(back.config(), model.config());
    let names = |m: &VqVae| {
        let mut n: Vec<String> = m.named_tensors().into_iter().map(|(n, _)| n).collect();
        n.sort();
        n
    };
    assert_eq!(names(&back), names(&model));
    let a = model.decode(&ex["codes"], (16, 16)).unwrap();
    let b = back.decode(&ex["codes"], (16, 16)).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let entries: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "no temporary directory is left behind");
}

#[test]
fn broken_checkpoints_are_named_errors() {
    let dir = golden("chameleon_vqvae");
    let cfg = VqVaeConfig::from_file(&dir.join("config.json")).unwrap();
    let tensors = load(&dir.join("model.safetensors"));

    let mut missing = tensors.clone();
    missing.remove("encoder.mid.attn_1.q.weight");
    match VqVae::from_tensors(&cfg, missing, &Device::Cpu) {
        Err(Error::MissingTensor(name)) => assert_eq!(name, "encoder.mid.attn_1.q.weight"),
        other => panic!("expected a missing tensor, got {other:?}"),
    }

    let more_blocks = VqVaeConfig {
        num_res_blocks: 2,
        ..cfg.clone()
    };
    let err = VqVae::from_tensors(&more_blocks, tensors.clone(), &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor(n) if n.starts_with("encoder.down.0.block.1.")),
        "{err}"
    );

    let wider = VqVaeConfig {
        embed_dim: 16,
        ..cfg.clone()
    };
    let err = VqVae::from_tensors(&wider, tensors.clone(), &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::BadShape { name, .. } if name == "quant_conv.weight"),
        "{err}"
    );

    let no_attn = VqVaeConfig {
        attn_resolutions: None,
        ..cfg.clone()
    };
    let err = VqVae::from_tensors(&no_attn, tensors.clone(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.down.1.attn.0.") && err.contains("not part"),
        "{err}"
    );

    // A full Chameleon checkpoint keeps the VQ-VAE under `model.vqmodel.`, beside other tensors.
    let mut full: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (format!("model.vqmodel.{k}"), v))
        .collect();
    full.insert(
        "model.embed_tokens.weight".into(),
        Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap(),
    );
    let model = VqVae::from_tensors(&cfg, full, &Device::Cpu).unwrap();
    let pixels = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.encode(&pixels).unwrap().dims(), &[1, 256]);
    let err = model
        .encode(&Tensor::zeros((1, 3, 31, 32), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 2"), "{err}");
}
