//! End-to-end tests of `tritter -p --raw` (completion mode) and of the repo map `-p` sends: the
//! real binary run in a folder made here. The scripted test engine (`TRITTER_TEST_ENGINE=echo`)
//! answers a raw request with `[raw] FIRST LINE …`; the built-in model shows that a raw prompt
//! is the text's own tokens, with no chat template around them.

use std::process::{Command, Output, Stdio};

fn tritter_in(cwd: &std::path::Path, args: &[&str], echo: bool, config: &str) -> Output {
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("config.toml"), config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tritter"));
    cmd.args(args)
        .current_dir(cwd)
        .env("TRITTER_CONFIG_DIR", cfg.path())
        .env("TRITTER_DATA_DIR", cfg.path())
        .env_remove("TRITTER_TEST_DELAY_MS")
        .stdin(Stdio::null());
    if echo {
        cmd.env("TRITTER_TEST_ENGINE", "echo");
    } else {
        cmd.env_remove("TRITTER_TEST_ENGINE");
    }
    cmd.output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A project whose `core.py` defines what every other file calls.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("core.py"),
        "def load_config(path):\n    return {}\n\nclass Store:\n    pass\n",
    )
    .unwrap();
    for i in 0..6 {
        std::fs::write(
            dir.path().join(format!("user_{i}.py")),
            format!("def task_{i}():\n    return Store(), load_config('x')\n"),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join(".gitignore"), "ignored/\n").unwrap();
    std::fs::create_dir(dir.path().join("ignored")).unwrap();
    std::fs::write(dir.path().join("ignored/x.py"), "def hidden():\n    pass\n").unwrap();
    dir
}

#[test]
fn p_raw_sends_the_text_as_it_stands() {
    let dir = project();
    let out = tritter_in(dir.path(), &["-p", "def add(a, b):", "--raw"], true, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "[raw] def add(a, b): …\n"
    );
    let v = json(&tritter_in(
        dir.path(),
        &["-p", "def add(a, b):", "--raw", "--json"],
        true,
        "",
    ));
    assert_eq!(v["raw"], true);
    assert!(v["repo_map"].is_null(), "a raw prompt carries no map: {v}");
    // --raw needs -p, and takes no attachments.
    let out = tritter_in(dir.path(), &["--raw"], true, "");
    assert!(!out.status.success());
    let out = tritter_in(
        dir.path(),
        &["-p", "x", "--raw", "--img", "a.png"],
        true,
        "",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--raw continues text only"));
}

#[test]
fn p_sends_the_repo_map_of_the_current_folder_within_its_budget() {
    let dir = project();
    let v = json(&tritter_in(
        dir.path(),
        &["-p", "hello", "--json"],
        true,
        "",
    ));
    let map = &v["repo_map"];
    assert_eq!(map["files"], 7, "the ignored file is left out: {v}");
    let shown = map["definitions"].as_u64().unwrap();
    assert!(shown >= 2, "{v}");
    assert!(map["tokens"].as_u64().unwrap() <= 1024, "{v}");
    // A budget of 20 tokens holds fewer definitions; 0 turns the map off.
    let v = json(&tritter_in(
        dir.path(),
        &["-p", "hello", "--json"],
        true,
        "repo_map_tokens = 60\n",
    ));
    assert!(v["repo_map"]["tokens"].as_u64().unwrap() <= 60, "{v}");
    assert!(
        v["repo_map"]["definitions"].as_u64().unwrap() < shown,
        "{v}"
    );
    let v = json(&tritter_in(
        dir.path(),
        &["-p", "hello", "--json"],
        true,
        "repo_map_tokens = 0\n",
    ));
    assert!(v["repo_map"].is_null(), "{v}");
    // A folder without source files sends no map.
    let empty = tempfile::tempdir().unwrap();
    let v = json(&tritter_in(
        empty.path(),
        &["-p", "hello", "--json"],
        true,
        "",
    ));
    assert!(v["repo_map"].is_null(), "{v}");
}

/// The built-in model: a raw prompt is fewer tokens than the same text in the chat template,
/// and its reply is the model's continuation.
#[test]
fn built_in_model_continues_raw_text_without_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let text = "def add(a, b):\n    return";
    let raw = json(&tritter_in(
        dir.path(),
        &["-p", text, "--raw", "--json"],
        false,
        "",
    ));
    let chat = json(&tritter_in(dir.path(), &["-p", text, "--json"], false, ""));
    let (r, c) = (
        raw["prompt_tokens"].as_u64().unwrap(),
        chat["prompt_tokens"].as_u64().unwrap(),
    );
    assert!(r > 0 && r + 4 <= c, "raw {r} vs chat {c} prompt tokens");
    assert_eq!(raw["mode"], "token");
    assert!(raw["tokens"].as_u64().unwrap() > 0, "{raw}");
}
