//! End-to-end tests of `tritter -p`: the real binary, its stdout, stderr and exit code.
//! Most run the scripted test engine (`TRITTER_TEST_ENGINE=echo`, not a model) so the streamed
//! reply can be checked exactly; `built_in_model_*` runs the real built-in model, `latent_*` a
//! tiny random checkpoint made here (with a `latent.json` where latent mode should run).

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn tritter(args: &[&str], stdin: Option<&str>, echo: bool) -> Output {
    tritter_with_config(args, stdin, echo, "")
}

/// `tritter` with `config` as its config.toml.
fn tritter_with_config(args: &[&str], stdin: Option<&str>, echo: bool, config: &str) -> Output {
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("config.toml"), config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tritter"));
    cmd.args(args)
        .env("TRITTER_CONFIG_DIR", cfg.path())
        .env("TRITTER_DATA_DIR", cfg.path())
        .env_remove("TRITTER_TEST_DELAY_MS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if echo {
        cmd.env("TRITTER_TEST_ENGINE", "echo");
    } else {
        cmd.env_remove("TRITTER_TEST_ENGINE");
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// The scripted engine's reply (kept in step with `engine_scripted::ScriptedEngine::reply_for`).
fn expected_reply(first_line: &str) -> String {
    format!(
        "You said: **{first_line}**\n\nHere is some code:\n\n```rust\nfn main() {{\n    let answer = 42; // the answer\n    println!(\"{{answer}}\");\n}}\n```\n"
    )
}

#[test]
fn p_streams_the_reply_to_stdout_and_exits_0() {
    let out = tritter(&["-p", "hello there"], None, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        expected_reply("hello there")
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn p_dash_reads_the_prompt_from_stdin() {
    let out = tritter(&["-p", "-"], Some("from stdin\nsecond line\n"), true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        expected_reply("from stdin")
    );
}

#[test]
fn json_prints_one_object() {
    let out = tritter(&["-p", "json please", "--json"], None, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["reply"], expected_reply("json please"));
    // Where it ran and, on a GPU only, the cache sized to the card.
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["context_limit"], 2048);
    assert!(v["gpu_cache"].is_null(), "{v}");
    assert!(v["tokens"].as_u64().unwrap() > 10);
    assert!(v["tok_per_s"].as_f64().unwrap() >= 0.0);
    assert!(v["first_token_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["model"], "scripted-echo");
}

fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tritter: ") && err.contains(needle),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn errors_are_one_line_with_a_nonzero_exit() {
    // A missing model: a message naming it, not a crash.
    assert_one_line_error(
        &tritter(&["-p", "hi", "--model", "/no/such/model"], None, false),
        "/no/such/model",
    );
    assert_one_line_error(
        &tritter(&["-p", "-"], Some("   \n"), true),
        "the prompt is empty",
    );
    assert_one_line_error(
        &tritter(&["-p", "x", "--img", "/no/such.png"], None, true),
        "cannot open /no/such.png",
    );
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("a.png");
    image::RgbImage::new(2, 2).save(&png).unwrap();
    assert_one_line_error(
        &tritter(&["-p", "x", "--img", png.to_str().unwrap()], None, true),
        "takes no image input",
    );
}

/// The built-in model (no test engine): `-p`, `-p -` and `--json` give the same seeded reply.
#[test]
fn built_in_model_answers_p_stdin_and_json_alike() {
    let prompt = "def add(a, b):";
    let plain = tritter(&["-p", prompt], None, false);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let plain = String::from_utf8(plain.stdout).unwrap();
    assert!(!plain.trim().is_empty(), "empty reply");

    let piped = tritter(&["-p", "-"], Some(prompt), false);
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(String::from_utf8(piped.stdout).unwrap(), plain);

    let json = tritter(&["-p", prompt, "--json"], None, false);
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let text = String::from_utf8(json.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["model"], "tritter-tiny");
    assert_eq!(v["reply"].as_str().unwrap().trim_end(), plain.trim_end());
    assert!(v["tokens"].as_u64().unwrap() > 0);
    assert!(v["tok_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["first_token_ms"].as_f64().unwrap() > 0.0);
}

/// A huge prompt on stdin is cut to the context budget with a note, and only the part that can
/// fit is read: the pipe takes little more than the read limit (the budget, 2048 - 512 tokens,
/// × 16 bytes) plus its own buffer before the binary is done, out of 64 MiB offered.
#[test]
fn huge_stdin_is_cut_to_the_context_budget_and_not_read_whole() {
    let cfg = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tritter"))
        .args(["-p", "-"])
        .env("TRITTER_CONFIG_DIR", cfg.path())
        .env("TRITTER_DATA_DIR", cfg.path())
        .env("TRITTER_TEST_ENGINE", "echo")
        .env_remove("TRITTER_TEST_DELAY_MS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let line: Vec<u8> = b"a line of a very long prompt .......................\n".repeat(1024);
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match input.write_all(&line) {
                Ok(()) => sent += line.len(),
                Err(_) => break,
            }
        }
        sent
    });
    let out = child.wait_with_output().unwrap();
    let sent = writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("stdin is longer than 24.0 KiB; only that much was read"),
        "{err}"
    );
    assert!(
        err.contains("the prompt on stdin was cut to its first "),
        "{err}"
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        expected_reply("a line of a very long prompt .......................")
    );
    assert!(sent < 4 << 20, "the pipe took {sent} bytes");
}

/// A tiny random checkpoint with a real byte-level BPE tokenizer (and the special tokens,
/// `<bot>`/`<eot>` among them), declared latent-trained with 1 thought per step over 3 stages
/// when `latent`.
fn tiny_model(dir: &std::path::Path, latent: bool) {
    use tritter_model::data::config::TokenizerConfig;
    use tritter_model::data::tokenizer::{attach_layout, train_bpe};
    let docs: Vec<String> = (0..40)
        .map(|i| format!("Every wumpus{i} is a zorp. Tom is a wumpus{i}. Is Tom a zorp?\n"))
        .collect();
    let tcfg = TokenizerConfig {
        vocab_size: 300,
        image_codes: 4,
        audio_codes: 4,
        ..TokenizerConfig::default()
    };
    let mut tk = train_bpe(docs.into_iter(), &tcfg).unwrap();
    let layout = attach_layout(&mut tk, 4, 4).unwrap();
    let mut cfg = tritter_model::Config::tritter_tiny();
    cfg.vocab_size = layout.total() as usize;
    cfg.hidden_size = 32;
    cfg.intermediate_size = 48;
    cfg.num_layers = 2;
    cfg.num_heads = 2;
    cfg.num_kv_heads = 1;
    cfg.head_dim = 16;
    // Room for the default 512-token reply budget beside the prompt.
    cfg.max_position_embeddings = 1024;
    let params = tritter_model::Params::init(&cfg, 5, 0.3, &candle_core::Device::Cpu).unwrap();
    tritter_model::save_checkpoint(dir, &cfg, &params, None).unwrap();
    tk.save(dir.join("tokenizer.json"), false).unwrap();
    if latent {
        let spec = tritter_model::latent::LatentSpec {
            thoughts_per_step: 1,
            stages: 3,
        };
        spec.save(dir).unwrap();
    }
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn latent_json_has_each_thoughts_three_nearest_tokens() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), true);
    let m = dir.path().to_str().unwrap();
    let q = "Is Tom a zorp?";
    let v = json_of(&tritter(
        &["--model", m, "-p", q, "--json", "--latent", "on"],
        None,
        false,
    ));
    assert_eq!(v["mode"], "latent");
    assert_eq!(v["notices"], serde_json::json!([]));
    let thoughts = v["thoughts"].as_array().unwrap();
    assert_eq!(thoughts.len(), 3, "{v}");
    for t in thoughts {
        let c = t.as_array().unwrap();
        assert_eq!(c.len(), 3, "{t}");
        let scores: Vec<f64> = c.iter().map(|x| x["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{t}");
        assert!(scores.iter().all(|s| (-1.0..=1.0).contains(s)), "{t}");
        for x in c {
            assert!(x["token"].is_string() && x["id"].is_u64(), "{x}");
        }
    }
    // Without --json: the same reply on stdout, the thoughts on stderr.
    let plain = tritter(&["--model", m, "-p", q, "--latent", "on"], None, false);
    assert!(plain.status.success());
    let reply = v["reply"].as_str().unwrap();
    assert_eq!(
        String::from_utf8(plain.stdout).unwrap().trim_end(),
        reply.trim_end()
    );
    let err = String::from_utf8(plain.stderr).unwrap();
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(err.starts_with("tritter: thought 1: "), "{err}");
    // Token mode answers the same prompt without thoughts.
    let off = json_of(&tritter(&["--model", m, "-p", q, "--json"], None, false));
    assert_eq!(
        (
            off["mode"].as_str(),
            off["thoughts"].as_array().unwrap().len()
        ),
        (Some("token"), 0)
    );
}

#[test]
fn latent_on_without_a_spec_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), false);
    let m = dir.path().to_str().unwrap();
    assert_one_line_error(
        &tritter(&["--model", m, "-p", "hi", "--latent", "on"], None, false),
        "not latent-trained",
    );
    // A bad value is a usage error from the argument parser, naming the choices.
    let bad = tritter(&["-p", "hi", "--latent", "sometimes"], None, true);
    assert!(!bad.status.success() && bad.stdout.is_empty());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("latent mode is on, off or auto, not \"sometimes\""),
        "{err}"
    );
}

#[test]
fn latent_auto_with_the_built_in_model_falls_back_with_a_notice() {
    let v = json_of(&tritter(
        &["-p", "def add(a, b):", "--json", "--latent", "auto"],
        None,
        false,
    ));
    assert_eq!(v["mode"], "token");
    assert!(!v["reply"].as_str().unwrap().is_empty());
    let notices = v["notices"].as_array().unwrap();
    assert_eq!(notices.len(), 1, "{v}");
    let n = notices[0].as_str().unwrap();
    assert!(
        n.contains("tritter-tiny was not latent-trained") && n.contains("token mode"),
        "{n}"
    );
}

#[test]
fn latent_auto_falls_back_when_the_confidence_signal_triggers() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), true);
    let m = dir.path().to_str().unwrap();
    // No thought's cosine reaches 1.5: the chain always counts as degraded.
    let config = "latent = \"auto\"\nlatent_min_cosine = 1.5\n";
    let v = json_of(&tritter_with_config(
        &["--model", m, "-p", "Is Tom a zorp?", "--json"],
        None,
        false,
        config,
    ));
    assert_eq!(v["mode"], "token");
    assert_eq!(v["thoughts"].as_array().unwrap().len(), 3);
    let n = v["notices"][0].as_str().unwrap();
    assert!(n.contains("degraded") && n.contains("token mode"), "{n}");
    // The config's old boolean form still reads.
    let v = json_of(&tritter_with_config(
        &["--model", m, "-p", "Is Tom a zorp?", "--json"],
        None,
        false,
        "latent = true\nlatent_min_cosine = 0.0\n",
    ));
    assert_eq!(v["mode"], "latent");
}
