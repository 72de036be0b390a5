//! `scripts/read_shards.py` reads the shards `tritter --train --prepare-only` writes: the same
//! token and document ids, sequence by sequence, as the Rust reader (`ShardSet`), in both
//! splits.
//!
//! The reader needs only Python's standard library: `$TRITTER_PYTHON`, else `.venv/bin/python`
//! at the repository root, else `python3`. Without any, the test is skipped with a note, except
//! under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use tritter_model::data::{Sequence, ShardSet, Split};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> Option<PathBuf> {
    let explicit = std::env::var_os("TRITTER_PYTHON").map(PathBuf::from);
    let candidates = match &explicit {
        Some(p) => vec![p.clone()],
        None => vec![root().join(".venv/bin/python"), PathBuf::from("python3")],
    };
    for py in candidates {
        let ok = Command::new(&py)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    assert!(explicit.is_none(), "TRITTER_PYTHON does not run");
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "no Python ($TRITTER_PYTHON, .venv, python3), and CI is set"
    );
    eprintln!("skipped: no Python ($TRITTER_PYTHON, .venv/bin/python or python3)");
    None
}

/// Every sequence of `split` as `scripts/read_shards.py --dump` prints it.
fn python_sequences(py: &Path, data: &Path, split: Split) -> Vec<(Vec<u32>, Vec<u32>)> {
    let out = Command::new(py)
        .arg(root().join("scripts/read_shards.py"))
        .arg(data)
        .args(["--split", split.name(), "--dump", "1000000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ids = |k: &str| -> Vec<u32> {
                v[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            };
            (ids("tokens"), ids("doc_ids"))
        })
        .collect()
}

#[test]
fn python_reader_reads_the_prepared_shards_as_rust_does() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_tritter"))
        .arg("--train")
        .arg(root().join("scripts/tiny.toml"))
        .arg("--set")
        .arg(format!("run.dir=\"{}\"", run.display()))
        .arg("--prepare-only")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = run.join("data");
    let set = ShardSet::open(&data).unwrap();
    for split in [Split::Train, Split::Val] {
        let mut reader = set.split(split);
        let from_py = python_sequences(&py, &data, split);
        assert_eq!(from_py.len() as u64, reader.len(), "{}", split.name());
        assert!(!from_py.is_empty(), "{} is empty", split.name());
        let mut seq = Sequence::default();
        for (i, (tokens, docs)) in from_py.iter().enumerate() {
            reader.read(i as u64, &mut seq).unwrap();
            assert_eq!(tokens, &seq.tokens, "{} sequence {i} tokens", split.name());
            assert_eq!(
                docs,
                &seq.doc_ids,
                "{} sequence {i} document ids",
                split.name()
            );
        }
    }
    // The summary's token count (padding excluded) is the index's.
    let out = Command::new(&py)
        .arg(root().join("scripts/read_shards.py"))
        .arg(&data)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tokens"], v["tokens_in_index"]);
    assert_eq!(v["tokens"].as_u64(), Some(set.index().train.tokens));
}
