//! `tritter --train` with `task = "vqvae"`: a few steps on generated pictures write a tokenizer
//! that loads back, encodes a picture to codes and decodes them to pixels of the same shape.

use std::process::Command;

#[test]
fn a_vqvae_run_writes_a_loadable_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    std::fs::create_dir(&pics).unwrap();
    for i in 0..6u8 {
        image::RgbImage::from_fn(20, 20, |x, y| {
            image::Rgb([i * 40, (x * 12) as u8, if y > 10 { 200 } else { 20 }])
        })
        .save(pics.join(format!("{i}.png")))
        .unwrap();
    }
    let cfg = dir.path().join("vq.toml");
    std::fs::write(
        &cfg,
        r#"task = "vqvae"
[run]
dir = "run"
[model]
embed_dim = 4
num_embeddings = 16
latent_channels = 4
resolution = 16
base_channels = 32
channel_multiplier = [1, 1]
num_res_blocks = 1
attn_resolutions = []
[train]
steps = 3
batch_size = 2
[data]
train = "pics"
test = "pics"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tritter"))
        .args(["--train", cfg.to_str().unwrap()])
        .env("TRITTER_CONFIG_DIR", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("held-out reconstruction MSE"), "{err}");
    let vq =
        tritter_model::vqvae::VqVae::load(&dir.path().join("run/final"), &candle_core::Device::Cpu)
            .unwrap();
    let px = candle_core::Tensor::zeros(
        (1, 3, 16, 16),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let codes = vq.encode(&px).unwrap();
    assert_eq!(codes.dims(), &[1, 64]);
    let back = vq.decode(&codes, (8, 8)).unwrap();
    assert_eq!(back.dims(), &[1, 3, 16, 16]);
    // A bad config is one clear line.
    std::fs::write(
        &cfg,
        "task = \"vqvae\"\n[model]\nbase_channels = 30\n[data]\ntrain = \"pics\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tritter"))
        .args(["--train", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
