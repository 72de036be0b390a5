//! `tritter --train` through the real binary on `scripts/tiny.toml`: a short run exports a model
//! `load_model` reads and writes the documented metrics; Ctrl-C checkpoints and exits 0; after
//! kill -9 `--resume` finishes the run with every step logged once.

use candle_core::Device;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tiny.toml")
}

fn train(run: &Path, sets: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tritter"));
    c.arg("--train").arg(tiny());
    c.arg("--set").arg(format!("run.dir=\"{}\"", run.display()));
    for s in sets {
        c.args(["--set", s]);
    }
    c
}

fn rows(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn tiny_run_writes_metrics_and_a_loadable_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = train(&run, &["train.steps=12", "eval.every=6"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rows(&run);
    let steps: Vec<_> = rows.iter().filter(|r| r.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 12);
    for r in &steps {
        for k in ["step", "loss", "lr", "grad_norm", "tokens_per_s"] {
            assert!(r[k].is_number(), "row without {k}: {r}");
        }
    }
    let evals: Vec<_> = rows
        .iter()
        .filter(|r| r.get("val_loss").is_some())
        .collect();
    assert_eq!(evals.len(), 2, "eval at step 6 and at the end");
    let ck = tritter_model::load_model(&run.join("final"), &Device::Cpu).unwrap();
    assert_eq!(ck.config.hidden_size, 64);
    // The exported model's loss on a training sequence is finite.
    let ids = candle_core::Tensor::new(&[[1u32, 40, 41, 42, 43, 44]], &Device::Cpu).unwrap();
    let l = ck.model.loss(&ids).unwrap().to_scalar::<f32>().unwrap();
    assert!(l.is_finite());
    // Bad override: one clear line, non-zero exit.
    let out = train(&run, &["train.stepz=3"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stepz"), "{err}");
}

#[test]
fn ctrl_c_checkpoints_and_exits_zero_then_kill_9_and_resume_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let sets = ["train.steps=400", "checkpoint.every=5", "eval.every=0"];
    // Ctrl-C: the step in flight finishes, a checkpoint is written, exit status 0.
    let mut child = train(&run, &sets).spawn().unwrap();
    wait_for("3 steps", || rows(&run).len() >= 3);
    signal(&child, "-INT");
    let st = child.wait().unwrap();
    assert!(st.success(), "Ctrl-C exit status {st:?}");
    let logged = rows(&run).len() as u64;
    let ck = run.join("checkpoints").join(format!("step-{logged:08}"));
    assert!(
        ck.join("state.json").is_file(),
        "no checkpoint at step {logged}"
    );

    // kill -9 after a later checkpoint, then resume to the end (shortened to 30 steps).
    let mut child = train(&run, &sets).arg("--resume").spawn().unwrap();
    wait_for("a later checkpoint", || {
        rows(&run).len() as u64 >= logged + 7
    });
    signal(&child, "-KILL");
    let _ = child.wait();
    let out = train(
        &run,
        &["train.steps=30", "checkpoint.every=5", "eval.every=0"],
    )
    .arg("--resume")
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<u64> = rows(&run)
        .iter()
        .filter(|r| r.get("loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=30).collect::<Vec<_>>(), "each step logged once");
    tritter_model::load_model(&run.join("final"), &Device::Cpu).unwrap();
}

#[test]
fn device_flag_overrides_train_device_and_bf16_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    if !candle_core::utils::cuda_is_available() {
        // A CPU-only build: `--device cuda` fails with one line naming the flag, before the data
        // is prepared or anything is written.
        let out = train(&run, &[])
            .args(["--device", "cuda"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim_end(),
            "tritter: --device cuda: this build has no CUDA support (build with --features cuda)"
        );
        assert!(!run.exists());
    }
    // `--device cpu` overrides `train.device`; bf16 mixed precision trains and exports.
    let out = train(
        &run,
        &[
            "train.device=\"cuda:7\"",
            "train.dtype=\"bf16\"",
            "train.steps=3",
            "eval.every=0",
        ],
    )
    .args(["--device", "cpu"])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(effective.contains("device = \"cpu\""), "{effective}");
    assert!(effective.contains("dtype = \"bf16\""), "{effective}");
    let steps = rows(&run)
        .iter()
        .filter(|r| r.get("loss").is_some())
        .count();
    assert_eq!(steps, 3);
    assert!(tritter_model::load_model(&run.join("final"), &Device::Cpu).is_ok());
}

/// The 9:1 Mamba-2 hybrid preset trains through the binary (the document mask refused with the
/// reason, then off), its checkpoint loads with the hybrid layers, `tritter plan --model` plans
/// its recurrent states, and `tritter -p` answers from it on the candle path.
#[test]
fn hybrid_preset_trains_then_answers_and_plans() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let base = [
        "model.preset=\"tritter-hybrid-tiny\"",
        "model.num_layers=6",
        "train.steps=4",
        "eval.every=0",
    ];
    let out = train(&run, &base).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("document_mask = false"), "{err}");
    let mut sets = base.to_vec();
    sets.push("train.document_mask=false");
    let out = train(&run, &sets).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let final_dir = run.join("final");
    let ck = tritter_model::load_model(&final_dir, &Device::Cpu).unwrap();
    use tritter_model::config::LayerKind;
    let kinds: Vec<_> = (0..6).map(|l| ck.config.layer_kind(l)).collect();
    assert_eq!(kinds[5], LayerKind::Attention);
    assert!(
        kinds[..5].iter().all(|&k| k == LayerKind::Mamba2),
        "{kinds:?}"
    );

    let bin = env!("CARGO_BIN_EXE_tritter");
    let m = final_dir.to_str().unwrap();
    let out = Command::new(bin)
        .args(["--model", m, "-p", "fn main"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin)
        .args(["plan", "--model", m, "--context", "32768"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("recurrent state"), "{text}");
    assert!(
        text.contains("1 with a KV cache, 5 with a fixed state"),
        "{text}"
    );
}

/// The recurrent-depth preset trains through the binary (a count drawn per step) and its
/// evaluation reports the held-out loss at 1..=8 iterations of the block.
#[test]
fn depth_preset_trains_and_reports_loss_per_iteration_count() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = train(
        &run,
        &[
            "model.preset=\"tritter-depth-tiny\"",
            "model.num_layers=0",
            "train.steps=3",
            "eval.every=0",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rows(&run);
    let eval = rows
        .iter()
        .find(|r| r.get("val_loss_by_iterations").is_some())
        .expect("an evaluation row with per-count losses");
    let by = eval["val_loss_by_iterations"].as_array().unwrap();
    assert_eq!(by.len(), 8);
    assert!(by.iter().all(|v| v.as_f64().is_some_and(f64::is_finite)));
    // The default count (4) is the row's val_loss.
    let at4 = by[3].as_f64().unwrap();
    assert!(
        (at4 - eval["val_loss"].as_f64().unwrap()).abs() < 1e-9,
        "{eval}"
    );
    let ck = tritter_model::load_model(&run.join("final"), &Device::Cpu).unwrap();
    assert_eq!(
        ck.config.hybrid.depth.map(|d| (d.start, d.end)),
        Some((1, 3))
    );
}
