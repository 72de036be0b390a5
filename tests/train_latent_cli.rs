//! `tritter --train` with `task = "latent"` end to end: a run writes a checkpoint per stage
//! model (`stages/stage-N/`), resumable checkpoints, and a final model; `--resume` from a
//! checkpoint inside a stage or at a stage switch ends with the same weights and the same loss
//! records as the run that was never interrupted.

use std::path::Path;
use std::process::Command;

const RECORDS: &str = r#"{"question": "Every a is a b. Every b is a c. Tom is a a. Is Tom a c or a d?", "steps": ["Tom is a a.", "Every a is a b.", "Every b is a c."], "answer": "Tom is a c."}
{"question": "Every e is a f. Ann is a e. Every f is a g. Is Ann a h or a g?", "steps": ["Ann is a e.", "Every e is a f.", "Every f is a g."], "answer": "Ann is a g."}
{"question": "Bob is a k. Every k is a m. Every m is a n. Is Bob a n or a p?", "steps": ["Bob is a k.", "Every k is a m.", "Every m is a n."], "answer": "Bob is a n."}
{"question": "Every q is a r. Sam is a q. Every r is a s. Is Sam a t or a s?", "steps": ["Sam is a q.", "Every q is a r.", "Every r is a s."], "answer": "Sam is a s."}
"#;

fn config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("train.jsonl"), RECORDS).unwrap();
    let cfg = dir.join("latent.toml");
    std::fs::write(
        &cfg,
        r#"task = "latent"
[run]
dir = "run"
[model]
preset = "tritter-tiny"
hidden_size = 32
num_layers = 2
intermediate_size = 64
[latent]
thoughts_per_step = 1
stages = 2
mix_prob = 0.5
[train]
steps = 3
batch_size = 2
log_every = 1
[checkpoint]
every = 2
keep = 20
[data]
train = "train.jsonl"
vocab_size = 300
"#,
    )
    .unwrap();
    cfg
}

fn train(cfg: &Path, resume: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tritter"));
    cmd.args(["--train", cfg.to_str().unwrap()]);
    if resume {
        cmd.arg("--resume");
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    err
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn latent_runs_resume_exactly_inside_a_stage_and_at_a_stage_switch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let run = dir.path().join("run");
    train(&cfg, false);
    let weights = read(&run.join("final/model.safetensors"));
    let metrics = read(&run.join("metrics.jsonl"));
    assert_eq!(String::from_utf8_lossy(&metrics).lines().count(), 9);
    for s in 0..=2 {
        let spec = read(&run.join(format!("stages/stage-{s}/latent.json")));
        let spec: serde_json::Value = serde_json::from_slice(&spec).unwrap();
        assert_eq!(spec["stages"], s);
    }
    // Steps 3 and 6 end stages; 2, 4, 6 and 8 are periodic; 9 ends the run.
    let ckpts = run.join("checkpoints");
    let mut have: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    have.sort();
    assert_eq!(
        have,
        [
            "step-00000002",
            "step-00000003",
            "step-00000004",
            "step-00000006",
            "step-00000008",
            "step-00000009"
        ]
    );
    for from in ["step-00000004", "step-00000003"] {
        // Lose everything written after checkpoint `from`, as a kill right after it would.
        for name in &have {
            if name.as_str() > from {
                std::fs::remove_dir_all(ckpts.join(name)).unwrap();
            }
        }
        std::fs::remove_dir_all(run.join("final")).unwrap();
        let err = train(&cfg, true);
        assert!(err.contains("resuming from"), "{err}");
        assert_eq!(
            read(&run.join("final/model.safetensors")),
            weights,
            "from {from}"
        );
        assert_eq!(read(&run.join("metrics.jsonl")), metrics, "from {from}");
    }
}

#[test]
fn resume_refuses_data_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    train(&cfg, false);
    let other = RECORDS.replace("Tom", "Zed");
    std::fs::write(dir.path().join("train.jsonl"), other).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tritter"))
        .args(["--train", cfg.to_str().unwrap(), "--resume"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the data changed since the checkpoint"),
        "{err}"
    );
}
