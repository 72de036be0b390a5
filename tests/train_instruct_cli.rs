//! `tritter --train` on chat data through the real binary: `scripts/instruct-example.toml` (a
//! `chat` source of both record forms, `train.attention = "prefix_lm"`) prepares version-2
//! shards, trains a few steps, and exports a model whose `attention_mode` is `prefix_lm` and
//! that `load_model` reads and the engine answers with; a bad chat line fails with one line
//! naming the file and the line.

use candle_core::Device;
use std::path::{Path, PathBuf};
use std::process::Command;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/instruct-example.toml")
}

fn train(run: &Path, sets: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tritter"));
    c.arg("--train").arg(example());
    c.arg("--set").arg(format!("run.dir=\"{}\"", run.display()));
    for s in sets {
        c.args(["--set", s]);
    }
    c.output().unwrap()
}

#[test]
fn chat_data_trains_and_exports_a_prefix_lm_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = train(&run, &["train.steps=4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("data/shards.json")).unwrap()).unwrap();
    assert_eq!(index["version"], 2);
    let steps = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"loss\""))
        .count();
    assert_eq!(steps, 4);
    let ck = tritter_model::load_model(&run.join("final"), &Device::Cpu).unwrap();
    assert_eq!(
        ck.config.attention_mode,
        tritter_model::attn::AttentionMode::PrefixLm
    );
    // The engine loads it and answers a prompt in the chat format.
    let reply = Command::new(env!("CARGO_BIN_EXE_tritter"))
        .arg("--model")
        .arg(run.join("final"))
        .args(["-p", "Reverse a string in Python."])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        reply.status.success(),
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    // train.attention = "causal" exports a causal model from the same data.
    let run2 = tmp.path().join("causal");
    let out = train(&run2, &["train.steps=2", "train.attention=\"causal\""]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ck = tritter_model::load_model(&run2.join("final"), &Device::Cpu).unwrap();
    assert_eq!(
        ck.config.attention_mode,
        tritter_model::attn::AttentionMode::Causal
    );
}

#[test]
fn a_bad_chat_line_fails_with_one_line_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"problem\": \"a\", \"solution\": \"b\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
    )
    .unwrap();
    let out = train(
        &tmp.path().join("run"),
        &[&format!(
            "data.sources=[{{kind=\"chat\", path=\"{}\"}}]",
            data.display()
        )],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.contains(&format!(
            "{}:2: the last message is the user's",
            data.display()
        )),
        "{err}"
    );
    // A bad attention name is refused by key.
    let out = train(&tmp.path().join("run2"), &["train.attention=\"sideways\""]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("train.attention = \"sideways\""),
        "{err}"
    );
}
