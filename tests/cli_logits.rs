//! The conformance probe through the real binary: `tritter logits` writes HF-matching logits, and
//! bad input gives a one-line error with a non-zero exit.

use candle_core::{DType, Device};
use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tritter"))
}

#[test]
fn logits_probe_matches_golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/packed_untied_mha");
    let exp =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<String> = exp["ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap()
        .iter()
        .map(|i| i.to_string())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("l.safetensors");
    let st = bin()
        .args(["logits", "--model"])
        .arg(&dir)
        .args(["--ids", &ids.join(",")])
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let got = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let (g, w) = (&got["logits"], &exp["logits"]);
    assert_eq!(g.dims(), w.dims());
    assert_eq!(g.dtype(), DType::F32);
    let d = (g - w)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let m = w
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d / m < 1e-4, "{}", d / m);
}

#[test]
fn bad_input_is_one_line_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/packed_tied_gqa");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("l.safetensors");
    for (ids, model, want) in [
        ("1,x,3", dir.clone(), "`x` is not a token id"),
        ("1,999", dir.clone(), "token id 999 is out of range"),
        ("1,2", tmp.path().join("missing"), "not found"),
    ] {
        let o = bin()
            .args(["logits", "--model"])
            .arg(&model)
            .args(["--ids", ids])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
}
