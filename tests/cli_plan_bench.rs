//! `tritter plan`, `tritter bench` and `tritter embed` on the command line: the plan is one JSON object with the
//! library planner's figures, bad flags give a one-line error naming them. Also the unit tests of
//! `scripts/bench_rounds.py`, which summarises `tritter bench attention` over several runs
//! (Python 3: `$TRITTER_PYTHON`, else `python3`; skipped with a note without it, except under CI).

use std::process::Command;

fn tritter(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tritter"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn plan_json_is_one_object_with_the_planner_figures() {
    let out = tritter(&[
        "plan",
        "--preset",
        "tritter-7b",
        "--context",
        "131072",
        "--budget",
        "16GiB",
        "--window",
        "4096",
        "--kv",
        "int4",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let dims = tritter_model::plan::ModelDims::tritter_7b();
    let mut o = tritter_model::plan::PlanOptions::new(131_072);
    o.window = 4096;
    o.sinks = 4;
    o.kv = tritter_model::attn::KvKind::INT4;
    let want = tritter_model::plan::plan(&dims, &o).unwrap();
    assert_eq!(v["total"].as_u64(), Some(want.total));
    assert_eq!(v["fits"].as_bool(), Some(want.fits));
}

#[test]
fn bad_flags_are_named() {
    let out = tritter(&["plan", "--preset", "huge", "--context", "10"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--preset huge") && err.lines().count() == 1,
        "{err}"
    );
    let out = tritter(&["bench", "everything"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernels"));
    // The GPU speed variants need --device cuda: one line saying so, not a CPU run.
    let out = tritter(&["bench", "variants"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--device cuda") && err.lines().count() == 1,
        "{err}"
    );
    // A misspelt kernel cap is one line naming the variable and its value, not a silent
    // fallback to the best kernels.
    let out = Command::new(env!("CARGO_BIN_EXE_tritter"))
        .args(["plan", "--preset", "tritter-7b", "--context", "1024"])
        .env("TRITTER_KERNELS", "AVX-2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TRITTER_KERNELS=\"AVX-2\"") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn embed_prints_one_json_object_with_the_model_width() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tritter"))
        .args(["embed", "def f(x): return x"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dim"], 256);
    assert_eq!(v["embedding"].as_array().unwrap().len(), 256);
    assert!(v["tokens"].as_u64().unwrap() > 0);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tritter"))
        .args(["embed", "  "])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty"));
}

/// `scripts/test_bench_rounds.py`: `bench_rounds.py` against a fake `tritter` with canned reports
/// (median, range and goal count worked out by hand; binaries alternated run by run; a binary
/// that cannot run is a one-line error).
#[test]
fn bench_rounds_script_tests_pass() {
    let py = std::env::var_os("TRITTER_PYTHON").unwrap_or_else(|| "python3".into());
    let ok = Command::new(&py)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "no Python ($TRITTER_PYTHON or python3), and CI is set");
        eprintln!("skipped: no Python ($TRITTER_PYTHON or python3)");
        return;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test_bench_rounds.py");
    let out = Command::new(&py).arg(script).arg("-v").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `bench tune` sweeps the prefetch distances, caches its choice under this CPU's key, and the
/// next run starts with the cached distance (`host.tuning`); a cache that cannot be read gives a
/// one-line warning and the CPU's default.
#[test]
fn bench_tune_caches_its_choice_and_later_runs_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let tune = || {
        let out = Command::new(env!("CARGO_BIN_EXE_tritter"))
            .args(["bench", "tune", "--json", "--threads", "2"])
            .env("TRITTER_CACHE_DIR", dir.path())
            .env_remove("TRITTER_PREFETCH_BYTES")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (report, String::from_utf8(out.stderr).unwrap())
    };
    let path = dir.path().join("tuning.json");
    let (first, _) = tune();
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(cached["prefetch_bytes"], first["chosen_prefetch_bytes"]);
    assert_eq!(cached["cpu"]["name"], first["host"]["cpu"]);
    let swept: Vec<_> = first["candidates"].as_array().unwrap().iter().collect();
    assert!(swept.len() >= 6 && swept.iter().all(|c| c["gbps_median"].as_f64() > Some(0.0)));

    // A distance no sweep would pick, to see it come back.
    let mut edited = cached.clone();
    edited["prefetch_bytes"] = 3072.into();
    std::fs::write(&path, edited.to_string()).unwrap();
    let (second, _) = tune();
    assert_eq!(second["host"]["tuning"]["prefetch_bytes"], 3072);
    assert_eq!(second["host"]["tuning"]["prefetch_source"], "tuned");

    std::fs::write(&path, "{not json").unwrap();
    let (third, err) = tune();
    assert_eq!(third["host"]["tuning"]["prefetch_source"], "cpu default");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("ignoring the tuning cache"), "{err}");
}
