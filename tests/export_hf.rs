//! `tritter export --format hf` against Hugging Face transformers, through the real binary.
//!
//! Without Python: every BitNet golden fixture (tests/golden/, made by transformers) is exported
//! in both forms and `tritter logits` on the export equals transformers' logits on the source
//! (`expected.safetensors`) to 1e-4 relative; features transformers lacks are refused by name.
//!
//! With the reference stack (a Python with torch, transformers and accelerate: `$TRITTER_PYTHON`,
//! else `.venv/bin/python` at the repository root, as scripts/requirements-golden.txt installs
//! it): transformers loads the exports as they are (`scripts/check_export.py`) with Tritter's
//! logits and chat format, and a round trip — export → two AdamW steps in PyTorch on the CPU
//! (`scripts/continue_pytorch.py`) → `tritter --model` — agrees at each hop. Where no such
//! Python is found these two tests say so and skip; `.ci/run` installs the stack when it can
//! and sets `TRITTER_PYTHON`, and with it set a missing module fails the test.

use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOL: f32 = 1e-4;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tritter"))
}

fn export(src: &Path, out: &Path, form: &str) -> Output {
    bin()
        .arg("export")
        .arg("--model")
        .arg(src)
        .args(["--format", "hf", "--out"])
        .arg(out)
        .args(["--form", form])
        .output()
        .unwrap()
}

fn export_ok(src: &Path, out: &Path, form: &str) {
    let o = export(src, out, form);
    assert!(
        o.status.success(),
        "export {} ({form}): {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn ids_arg(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// `tritter logits` on `model`, written to `file` and returned.
fn logits(model: &Path, ids: &[u32], file: &Path) -> Tensor {
    let o = bin()
        .args(["logits", "--model"])
        .arg(model)
        .args(["--ids", &ids_arg(ids), "--out"])
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    candle_core::safetensors::load(file, &Device::Cpu).unwrap()["logits"].clone()
}

/// max|a - b| / max|b|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let m = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap()
}

fn tensors(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn exports_of_the_golden_fixtures_keep_transformers_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        "packed_tied_gqa",
        "packed_untied_mha",
        "packed_auto_offline",
        "online_tied",
        "online_untied",
    ];
    for case in cases {
        let src = root().join("tests/golden").join(case);
        let exp =
            candle_core::safetensors::load(src.join("expected.safetensors"), &Device::Cpu).unwrap();
        let ids: Vec<u32> = exp["ids"].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
        for form in ["packed", "bf16"] {
            let out = tmp.path().join(format!("{case}-{form}"));
            export_ok(&src, &out, form);
            let got = logits(&out, &ids, &tmp.path().join("l.safetensors"));
            let err = rel(&got, &exp["logits"]);
            eprintln!("{case} -> {form}: relative logit error vs transformers {err:.2e}");
            assert!(err <= TOL, "{case} -> {form}: {err}");
            let q = &config(&out)["quantization_config"];
            let want = if form == "packed" {
                ["bitlinear", "offline"]
            } else {
                ["autobitlinear", "online"]
            };
            assert_eq!([&q["linear_class"], &q["quantization_mode"]], want);
            let t = tensors(&out);
            let w = &t["model.layers.0.self_attn.q_proj.weight"];
            let want_dtype = if form == "packed" {
                DType::U8
            } else {
                DType::BF16
            };
            assert_eq!(w.dtype(), want_dtype, "{case} -> {form}");
            if form == "packed" && case.starts_with("packed_tied") {
                // bitlinear to bitlinear: the packed bytes are the source's.
                let s = tensors(&src)["model.layers.0.self_attn.q_proj.weight"].clone();
                let same = s.to_vec2::<u8>().unwrap() == w.to_vec2::<u8>().unwrap();
                assert!(same, "{case}: packed bytes changed");
            }
        }
    }
}

#[test]
fn features_transformers_lacks_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let src = root().join("tests/golden/chameleon_text_ternary_qkln_swin");
    let o = export(&src, &out, "packed");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("QK-Norm") && err.contains("post-norm"),
        "{err}"
    );
    assert!(!out.exists());

    // A multimodal part: a copy of a text checkpoint with a vision/ folder.
    let mm = tmp.path().join("mm");
    std::fs::create_dir_all(mm.join("vision")).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            root().join("tests/golden/packed_tied_gqa").join(f),
            mm.join(f),
        )
        .unwrap();
    }
    let o = export(&mm, &out, "bf16");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("image tower (`vision/`)"),
        "{err}"
    );

    // An --out that is not a checkpoint is never replaced.
    let keep = tmp.path().join("keep");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("notes.txt"), "mine").unwrap();
    let o = export(
        &root().join("tests/golden/packed_tied_gqa"),
        &keep,
        "packed",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not a checkpoint directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(keep.join("notes.txt")).unwrap(),
        "mine"
    );

    let o = bin()
        .args(["export", "--format", "hf", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--model DIR is required"));
}

/// The reference Python, or `None` (with a note) where there is none.
fn reference_python() -> Option<PathBuf> {
    let (py, explicit) = match std::env::var_os("TRITTER_PYTHON") {
        Some(p) => (PathBuf::from(p), true),
        None => (root().join(".venv/bin/python"), false),
    };
    let ok = Command::new(&py)
        .args(["-c", "import torch, transformers, accelerate"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !explicit,
            "TRITTER_PYTHON={} cannot import torch, transformers, accelerate",
            py.display()
        );
        eprintln!(
            "skipped: no Python with torch, transformers, accelerate ($TRITTER_PYTHON or .venv)"
        );
        return None;
    }
    Some(py)
}

/// `scripts/check_export.py` on `dir` against Tritter's logits there; returns its JSON.
fn check(py: &Path, dir: &Path, ids: &[u32], logits_file: &Path, tol: f32) -> serde_json::Value {
    let o = Command::new(py)
        .arg(root().join("scripts/check_export.py"))
        .arg("--model")
        .arg(dir)
        .arg("--logits")
        .arg(logits_file)
        .args(["--ids", &ids_arg(ids)])
        .args(["--tol", &tol.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&o.stderr)));
    eprintln!("{}: {v}", dir.file_name().unwrap().to_string_lossy());
    assert_eq!(v["ok"], true, "{v}");
    v
}

/// A fixture's ids: chosen by scripts/make_golden.py so that no int8 or ternary code sits near a
/// rounding tie (other ids can flip one: ~1e-2 of max|logit| on these random weights).
fn fixture_ids(case: &str) -> Vec<u32> {
    let f = root()
        .join("tests/golden")
        .join(case)
        .join("expected.safetensors");
    let exp = candle_core::safetensors::load(f, &Device::Cpu).unwrap();
    exp["ids"].to_dtype(DType::U32).unwrap().to_vec1().unwrap()
}

/// Ids for the built-in model: ordinary BPE tokens, then the chat specials.
fn default_ids() -> Vec<u32> {
    let mut ids: Vec<u32> = (0..40u32).map(|i| (i * 331 + 17) % 8000).collect();
    ids.extend([8000, 8003, 8005, 8001]);
    ids
}

/// The trained built-in model (and what two steps of training make of it) is held to a looser
/// bound than the random fixtures: its per-token int8 activation codes sit on a rounding tie
/// often enough that a last-bit difference between the two forward passes (summation order)
/// flips one now and then (~1e-3 of max|logit| at a few positions of 44, argmax unchanged). The
/// exported files are lossless; the fixtures, whose codes keep a margin from every tie, hold 1e-4.
const TRAINED_TOL: f32 = 2e-2;

const CHAT: &str = "<|system|>\nBe brief.<|end|>\n<|user|>\nHello\nthere<|end|>\n<|assistant|>\n\
                    Hi.<|end|>\n<|user|>\nfn main() {}<|end|>\n<|assistant|>\n";

#[test]
fn transformers_loads_the_exports_with_equal_logits() {
    let Some(py) = reference_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = root().join("assets/default-model");
    let ids = default_ids();
    let before = logits(&src, &ids, &tmp.path().join("src.safetensors"));
    for form in ["packed", "bf16"] {
        let out = tmp.path().join(format!("tiny-{form}"));
        export_ok(&src, &out, form);
        let file = tmp.path().join(format!("{form}.safetensors"));
        let after = logits(&out, &ids, &file);
        let v = check(&py, &out, &ids, &file, TRAINED_TOL);
        assert_eq!(v["chat"], CHAT, "{form}");
        assert!(v["argmax_agree"].as_f64().unwrap() >= 0.95, "{v}");
        let lossless = rel(&after, &before);
        eprintln!("{form}: Tritter on the source vs the export {lossless:.2e}");
        // Packed: the source's bytes. bf16: the built-in model's f32 embeddings and norms
        // rounded to bf16 (about 6e-3 of max|logit|), as the published bf16 form has them.
        let bound = if form == "packed" { 0.0 } else { TRAINED_TOL };
        assert!(lossless <= bound, "{form}: {lossless}");
    }
    // The fixtures in both forms: transformers on the export equals Tritter to 1e-4.
    for (case, form) in [("packed_tied_gqa", "packed"), ("packed_tied_gqa", "bf16")] {
        let out = tmp.path().join(format!("{case}-{form}"));
        export_ok(&root().join("tests/golden").join(case), &out, form);
        let file = tmp.path().join("fx.safetensors");
        let ids = fixture_ids(case);
        logits(&out, &ids, &file);
        check(&py, &out, &ids, &file, TOL);
    }
    // A source without a tokenizer, untied head: the model alone.
    let src = root().join("tests/golden/packed_untied_mha");
    let out = tmp.path().join("mha-bf16");
    export_ok(&src, &out, "bf16");
    let file = tmp.path().join("mha.safetensors");
    let ids = fixture_ids("packed_untied_mha");
    logits(&out, &ids, &file);
    assert!(check(&py, &out, &ids, &file, TOL)["chat"].is_null());
}

/// `scripts/continue_pytorch.py`: two AdamW steps on the CPU from `from`, saved to `to`.
fn continue_training(py: &Path, from: &Path, to: &Path, form: &str) -> serde_json::Value {
    let o = Command::new(py)
        .arg(root().join("scripts/continue_pytorch.py"))
        .arg("--model")
        .arg(from)
        .arg("--out")
        .arg(to)
        .args(["--form", form, "--data"])
        .arg(root().join("README.md"))
        .args([
            "--steps", "2", "--seq", "64", "--batch", "2", "--warmup", "1",
        ])
        .args(["--lr", "3e-3", "--seed", "5"])
        .env("ACCELERATE_USE_CPU", "true")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&o.stderr)));
    eprintln!("continue_pytorch ({form}): {v}");
    assert!(o.status.success());
    v
}

#[test]
fn round_trip_through_pytorch_training_keeps_logits_equal() {
    let Some(py) = reference_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ids = default_ids();
    let exported = tmp.path().join("exported");
    export_ok(&root().join("assets/default-model"), &exported, "bf16");
    let file = tmp.path().join("hop1.safetensors");
    let hop1 = logits(&exported, &ids, &file);
    check(&py, &exported, &ids, &file, TRAINED_TOL);
    let mut trained = Vec::new();
    for form in ["bf16", "packed"] {
        let out = tmp.path().join(format!("trained-{form}"));
        let v = continue_training(&py, &exported, &out, form);
        assert_eq!(v["losses"].as_array().unwrap().len(), 2);
        let file = tmp.path().join(format!("hop2-{form}.safetensors"));
        let hop2 = logits(&out, &ids, &file);
        check(&py, &out, &ids, &file, TRAINED_TOL);
        let moved = rel(&hop2, &hop1);
        eprintln!("{form}: two steps moved the logits by {moved:.2e} (relative)");
        assert!(moved > 1e-3, "{form}: training changed nothing ({moved})");
        trained.push(hop2);
    }
    eprintln!(
        "bf16 master weights vs their packed form: {:.2e}",
        rel(&trained[1], &trained[0])
    );
}
