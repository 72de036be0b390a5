//! Checkpoint round trip (save packed → load → same logits as the training form) and one clear
//! error per kind of bad checkpoint: missing tensor, wrong shape, wrong dtype, invalid ternary
//! code, truncated file, bad JSON, missing files.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use tritter_model::{load_model, save_checkpoint, Config, Params, Transformer};

fn tiny() -> Config {
    let mut c = Config::tritter_tiny();
    c.vocab_size = 97;
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 8;
    c
}

fn saved(dir: &Path) -> (Config, Params) {
    let cfg = tiny();
    let params = Params::init(&cfg, 7, 0.05, &Device::Cpu).unwrap();
    save_checkpoint(dir, &cfg, &params, None).unwrap();
    (cfg, params)
}

fn tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn rewrite(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut t = tensors(dir);
    f(&mut t);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

fn load_err(dir: &Path) -> String {
    match load_model(dir, &Device::Cpu) {
        Ok(_) => panic!("bad checkpoint in {} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn u8z(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::U8, &Device::Cpu).unwrap()
}

#[test]
fn saved_checkpoint_loads_and_matches_training_form() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    let (cfg, params) = saved(&dir);
    let ck = load_model(&dir, &Device::Cpu).unwrap();
    assert_eq!(ck.config, cfg);
    let ids = Tensor::new(&[[3u32, 14, 15, 92, 65, 35, 89, 79]], &Device::Cpu).unwrap();
    let packed = ck.model.forward(&ids).unwrap();
    let mut src = &params;
    let latent = Transformer::load(&cfg, &mut src, &Device::Cpu).unwrap();
    let want = latent.forward(&ids).unwrap();
    let d = (packed - &want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let m = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d / m < 1e-4, "packed vs latent relative error {}", d / m);
    // Packed on disk: uint8 [out/4, in] plus a scale.
    let t = tensors(&dir);
    assert_eq!(
        t["model.layers.0.self_attn.q_proj.weight"].dtype(),
        DType::U8
    );
    assert_eq!(t["model.layers.0.self_attn.q_proj.weight"].dims(), &[8, 32]);
    assert!(t.contains_key("model.layers.0.mlp.down_proj.weight_scale"));
}

#[test]
fn saving_over_an_existing_checkpoint_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    saved(&dir);
    let mut cfg = tiny();
    cfg.rms_norm_eps = 1e-6;
    let params = Params::init(&cfg, 8, 0.05, &Device::Cpu).unwrap();
    save_checkpoint(&dir, &cfg, &params, None).unwrap();
    assert_eq!(
        load_model(&dir, &Device::Cpu).unwrap().config.rms_norm_eps,
        1e-6
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary directories left behind");
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    rewrite(tmp.path(), |t| {
        t.remove("model.layers.1.mlp.up_proj.weight");
    });
    let e = load_err(tmp.path());
    assert!(
        e.contains("missing tensor `model.layers.1.mlp.up_proj.weight`"),
        "{e}"
    );
    rewrite(tmp.path(), |t| {
        t.insert("model.layers.1.mlp.up_proj.weight".into(), u8z(&[12, 32]));
        t.remove("model.norm.weight");
    });
    assert!(load_err(tmp.path()).contains("`model.norm.weight`"));
}

#[test]
fn wrong_shape_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    rewrite(tmp.path(), |t| {
        t.insert(
            "model.layers.0.self_attn.k_proj.weight".into(),
            u8z(&[5, 32]),
        );
    });
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.layers.0.self_attn.k_proj.weight")
            && e.contains("[5, 32]")
            && e.contains("[4, 32]"),
        "{e}"
    );
    saved(tmp.path());
    rewrite(tmp.path(), |t| {
        t.insert(
            "model.embed_tokens.weight".into(),
            Tensor::zeros((97, 31), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert!(load_err(tmp.path()).contains("model.embed_tokens.weight"));
}

#[test]
fn wrong_dtype_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    rewrite(tmp.path(), |t| {
        t.insert(
            "model.layers.0.self_attn.v_proj.weight".into(),
            Tensor::zeros((16, 32), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.layers.0.self_attn.v_proj.weight") && e.contains("dtype"),
        "{e}"
    );
    saved(tmp.path());
    rewrite(tmp.path(), |t| {
        t.insert("model.norm.weight".into(), u8z(&[32]));
    });
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.norm.weight") && e.contains("dtype"),
        "{e}"
    );
}

#[test]
fn invalid_ternary_code_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    rewrite(tmp.path(), |t| {
        t.insert(
            "model.layers.1.self_attn.o_proj.weight".into(),
            Tensor::full(0xffu8, (8, 32), &Device::Cpu).unwrap(),
        );
    });
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.layers.1.self_attn.o_proj.weight") && e.contains("invalid ternary"),
        "{e}"
    );
}

#[test]
fn truncated_file_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    let p = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 1, 20, 4, 0] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_err(tmp.path());
        assert!(e.contains("model.safetensors"), "cut {cut}: {e}");
    }
}

#[test]
fn bad_config_json_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    std::fs::write(tmp.path().join("config.json"), "{\"hidden_size\": 32,").unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("config.json") && e.contains("invalid JSON"),
        "{e}"
    );
    std::fs::write(tmp.path().join("config.json"), "{\"hidden_size\": \"big\"}").unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("hidden_size"), "{e}");
}

#[test]
fn missing_files_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let e = load_err(&tmp.path().join("nope"));
    assert!(e.contains("nope") && e.contains("not found"), "{e}");
    saved(tmp.path());
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    assert!(load_err(tmp.path()).contains("config.json"));
}

#[test]
fn out_of_range_token_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path());
    let ck = load_model(tmp.path(), &Device::Cpu).unwrap();
    let e = ck
        .model
        .forward(&Tensor::new(&[[1u32, 97]], &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("97"), "{e}");
}
