//! The committed vision demo model (`assets/vision-demo/`, trained by
//! `scripts/train-vision-demo.sh` on the synthetic shapes task) through the real binary: `-p
//! --img` answers what is in held-out pictures, `tritter encode image` writes the probe's
//! tensors, and a blank picture gets no image-specific answer. Accuracy over the whole held-out
//! set is measured by the training run (`assets/vision-demo/eval.json`), not here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/vision-demo")
}

fn tritter(args: &[&str]) -> Output {
    let cfg = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_tritter"))
        .args(args)
        .env("TRITTER_CONFIG_DIR", cfg.path())
        .env("TRITTER_DATA_DIR", cfg.path())
        .env_remove("TRITTER_TEST_ENGINE")
        .output()
        .unwrap()
}

/// The held-out examples committed with the model: (picture, its description).
fn examples() -> Vec<(PathBuf, String)> {
    let dir = demo().join("examples");
    std::fs::read_to_string(dir.join("answers.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let name = Path::new(v["image"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_owned();
            (dir.join(name), v["text"].as_str().unwrap().to_string())
        })
        .collect()
}

fn ask(img: &Path) -> String {
    let m = demo();
    let out = tritter(&[
        "--model",
        m.to_str().unwrap(),
        "-p",
        "what is in this picture?",
        "--img",
        img.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn p_img_describes_held_out_pictures() {
    let ex = examples();
    assert!(ex.len() >= 4);
    let right = ex.iter().filter(|(img, want)| ask(img) == *want).count();
    assert!(right >= ex.len() - 1, "{right} of {} right", ex.len());
}

#[test]
fn a_blank_picture_is_not_described_as_the_examples() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("blank.png");
    image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]))
        .save(&p)
        .unwrap();
    let blank = ask(&p);
    let ex = examples();
    let same = ex.iter().filter(|(_, want)| *want == blank).count();
    assert!(
        same < ex.len(),
        "every example got the blank's answer {blank:?}"
    );
}

#[test]
fn encode_image_writes_the_probe_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let (img, _) = &examples()[0];
    let m = demo();
    let o = tritter(&[
        "encode",
        "image",
        "--model",
        m.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.join("vision/config.json")).unwrap())
            .unwrap();
    let size = cfg["image_size"].as_u64().unwrap() as usize;
    let patch = cfg["patch_size"].as_u64().unwrap() as usize;
    let hidden = cfg["hidden_size"].as_u64().unwrap() as usize;
    let n = (size / patch) * (size / patch);
    assert_eq!(t["pixel_values"].dims(), &[1, 3, size, size]);
    assert_eq!(t["last_hidden_state"].dims(), &[1, n, hidden]);
    assert_eq!(t["projected"].dims()[0], 1);
    // Re-running from the written pixels gives the same tower output.
    let out2 = dir.path().join("o2.safetensors");
    let pix = dir.path().join("p.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("pixel_values".to_string(), t["pixel_values"].clone())]),
        &pix,
    )
    .unwrap();
    let o = tritter(&[
        "encode",
        "image",
        "--model",
        m.to_str().unwrap(),
        "--pixels",
        pix.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t2 = candle_core::safetensors::load(&out2, &candle_core::Device::Cpu).unwrap();
    let d = (&t["last_hidden_state"] - &t2["last_hidden_state"])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
}

#[test]
fn a_model_without_an_image_path_says_so_for_encode() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = &examples()[0];
    let o = tritter(&[
        "encode",
        "image",
        "--model",
        dir.path().to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--out",
        dir.path().join("x.safetensors").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

#[test]
fn bad_pixel_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = demo();
    let run = |pix: &Path| {
        let o = tritter(&[
            "encode",
            "image",
            "--model",
            m.to_str().unwrap(),
            "--pixels",
            pix.to_str().unwrap(),
            "--out",
            dir.path().join("o.safetensors").to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).trim().to_string()
    };
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header").unwrap();
    let e = run(&garbage);
    assert_eq!(e.lines().count(), 1, "{e}");
    let wrong = dir.path().join("wrong.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([(
            "pixel_values".to_string(),
            candle_core::Tensor::zeros((2, 5), candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap(),
        )]),
        &wrong,
    )
    .unwrap();
    let e = run(&wrong);
    assert!(e.contains("[1, 3, H, W]"), "{e}");
    // The right rank but not the tower's size: the tower says so.
    let small = dir.path().join("small.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([(
            "pixel_values".to_string(),
            candle_core::Tensor::zeros(
                (1, 3, 8, 8),
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .unwrap(),
        )]),
        &small,
    )
    .unwrap();
    let e = run(&small);
    assert_eq!(e.lines().count(), 1, "{e}");
}
