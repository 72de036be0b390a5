//! bf16 mixed-precision training (`train.dtype = "bf16"`) on the CPU device: the step-0 loss
//! equals the f32 loss within bf16 tolerance, a short run lowers the loss, the master weights and
//! AdamW moments stay f32 (also in the checkpoint), and bad `train.dtype` / device names fail
//! with one clear line.

mod common;

use candle_core::{DType, Device};
use common::copy_tree;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use tritter_model::data::{self, NoProgress};
use tritter_model::train::state;
use tritter_model::train::trainer::open_device;
use tritter_model::train::{Event, Observer, TrainConfig, Trainer};

/// A small config over this crate's own sources: 2 layers, hidden 32, 24-token sequences.
fn config(run: &Path, extra: &[&str]) -> TrainConfig {
    common::train_config(
        run,
        r#"
seed = 11
[model]
hidden_size = 32
num_layers = 2
intermediate_size = 64
[train]
steps = 30
batch_size = 4
[optim]
lr = 5e-3
[schedule]
warmup = 3
decay = "constant"
[eval]
every = 0
batches = 2
[checkpoint]
every = 0
keep = 1
"#,
        extra,
    )
}

#[derive(Default)]
struct Log {
    losses: Vec<f64>,
}

impl Observer for Log {
    fn event(&mut self, e: &Event) {
        if let Event::Step(r) = e {
            self.losses.push(r.loss);
        }
    }
}

/// `cpu`, and `cuda` when the build and the machine have a GPU.
fn devices() -> Vec<&'static str> {
    let mut v = vec!["cpu"];
    if candle_core::utils::cuda_is_available() && Device::new_cuda(0).is_ok() {
        v.push("cuda");
    }
    v
}

#[test]
fn bf16_training_matches_f32_at_step_0_and_lowers_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let data_run = tmp.path().join("data");
    data::prepare(&config(&data_run, &[]).data, &data_run, &NoProgress).unwrap();
    let mut step0_f32 = Vec::new();
    for dev in devices() {
        step0_f32.push(check_bf16_run(tmp.path(), &data_run, dev));
    }
    // The same initial weights and batch on every device give the same f32 loss.
    for l in &step0_f32[1..] {
        assert!(
            (l - step0_f32[0]).abs() <= 1e-4 * step0_f32[0],
            "{step0_f32:?}"
        );
    }
}

/// Runs the f32 / bf16 comparison on `dev`; returns the f32 step-0 training loss.
fn check_bf16_run(root: &Path, data_run: &Path, dev: &str) -> f64 {
    let (a, b) = (
        root.join(format!("f32-{dev}")),
        root.join(format!("bf16-{dev}")),
    );
    copy_tree(&data_run.join("data"), &a.join("data"));
    copy_tree(&data_run.join("data"), &b.join("data"));
    let device = format!("train.device=\"{dev}\"");
    let cfg32 = config(&a, &[&device]);
    let cfg16 = config(&b, &[&device, "train.dtype=\"bf16\""]);
    assert_eq!(cfg16.compute_dtype().unwrap(), DType::BF16);
    let stop = AtomicBool::new(false);

    // (a) Step 0: the same initial weights and batch give the same loss within bf16 tolerance,
    // both for the first training batch and on the validation batches.
    let mut t32 = Trainer::new(cfg32, false).unwrap();
    let mut t16 = Trainer::new(cfg16, false).unwrap();
    assert_eq!(t16.device().is_cuda(), dev == "cuda");
    let v32 = t32.evaluate().unwrap().unwrap().val_loss;
    let v16 = t16.evaluate().unwrap().unwrap().val_loss;
    assert!(
        (v16 - v32).abs() <= 2e-2 * v32.abs(),
        "{dev}: step-0 val loss: bf16 {v16} vs f32 {v32}"
    );
    let mut l32 = Log::default();
    t32.run(&mut l32, &stop, Some(1)).unwrap();
    let mut l16 = Log::default();
    let out = t16.run(&mut l16, &stop, None).unwrap();
    let (s32, s16) = (l32.losses[0], l16.losses[0]);
    assert!(
        (s16 - s32).abs() <= 2e-2 * s32.abs(),
        "{dev}: step-0 training loss: bf16 {s16} vs f32 {s32}"
    );
    assert_ne!(s16, s32, "the bf16 run must compute in bf16");

    // (b) 30 bf16 steps lower the loss.
    assert_eq!(l16.losses.len(), 30);
    assert!(l16.losses.iter().all(|l| l.is_finite()));
    let head: f64 = l16.losses[..3].iter().sum::<f64>() / 3.0;
    let tail: f64 = l16.losses[27..].iter().sum::<f64>() / 3.0;
    assert!(tail < head - 0.3, "{dev}: bf16 losses {head} -> {tail}");
    let val = out.val_loss.unwrap();
    assert!(val < v16 - 0.3, "{dev}: bf16 val loss {v16} -> {val}");
    eprintln!(
        "{dev}: step-0 loss f32 {s32:.5} bf16 {s16:.5}; bf16 30 steps {head:.3} -> {tail:.3}, \
         val {v16:.3} -> {val:.3}, {:.0} tokens/s",
        out.tokens_per_s
    );

    // Master weights and AdamW moments stay f32, in memory and in the checkpoint; the export
    // loads.
    assert!(t16.params().iter().all(|(_, v)| v.dtype() == DType::F32));
    let (_, dir) = state::latest(&b.join("checkpoints")).unwrap().unwrap();
    let cfg = t16.model_config().clone();
    let loaded = state::load(&dir, &cfg, &Device::Cpu).unwrap();
    assert!(loaded.params.iter().all(|(_, v)| v.dtype() == DType::F32));
    assert!(loaded
        .moments
        .values()
        .all(|m| m.m.dtype() == DType::F32 && m.v.dtype() == DType::F32));
    assert!(tritter_model::load_model(&out.final_dir.unwrap(), &Device::Cpu).is_ok());
    s32
}

#[test]
fn bad_train_dtype_is_a_clear_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "[data]\nseq_len = 8\n[[data.sources]]\nkind = \"jsonl\"\npath = \"x\"\n";
    let err = TrainConfig::from_toml_str(
        &format!("{text}[train]\ndtype = \"fp8\"\n"),
        &[],
        tmp.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("train.dtype") && err.contains("fp8") && err.contains("bf16"),
        "{err}"
    );
    assert!(!err.contains('\n'));
    let err = TrainConfig::from_toml_str(text, &["train.dtype=\"f16\"".into()], tmp.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.dtype"), "{err}");
    let ok = TrainConfig::from_toml_str(text, &[], tmp.path()).unwrap();
    assert_eq!(ok.train.dtype, "f32");
    assert_eq!(ok.compute_dtype().unwrap(), DType::F32);
}

#[test]
fn device_errors_name_the_setting_in_one_line() {
    assert!(open_device("cpu", "--device cpu").unwrap().is_cpu());
    let err = open_device("tpu", "--device tpu").unwrap_err().to_string();
    assert!(err.starts_with("--device tpu: unknown device"), "{err}");
    let err = open_device("cuda:x", "--device cuda:x")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--device cuda:x: bad GPU ordinal"), "{err}");
    if !candle_core::utils::cuda_is_available() {
        let err = open_device("cuda", "--device cuda")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--device cuda: this build has no CUDA support (build with --features cuda)"
        );
        let err = tritter_model::train::trainer::device("cuda:1")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("train.device = \"cuda:1\": "), "{err}");
    }
}
