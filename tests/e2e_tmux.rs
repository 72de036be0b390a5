//! End-to-end test of the interactive app in a real terminal: tmux runs the binary, the test types
//! a prompt, watches the reply stream, stops a second reply with Esc, quits with /quit and checks
//! exit code 0 and that the shell's screen came back. Most tests use the scripted test engine
//! (`TRITTER_TEST_ENGINE=echo`, not a model) for exact screens; `built_in_model_*` runs the real
//! built-in model. Needs tmux: where it is missing the tests say so and skip, except under CI
//! (`CI` set and not `false`; `.ci/run` installs tmux), where a missing tmux fails them, so a skip
//! can never hide there.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether tmux runs here; without it, panics under CI and prints a skip notice elsewhere.
fn tmux_ready() -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        ok || !ci,
        "tmux is not installed, and CI is set (.ci/run installs it)"
    );
    if !ok {
        eprintln!("skipped: tmux is not installed (the end-to-end terminal tests need it)");
    }
    ok
}

/// Returns from the test (skipping it) where tmux is missing outside CI.
macro_rules! require_tmux {
    () => {
        if !tmux_ready() {
            return;
        }
    };
}

/// One test's tmux session, on its own server (socket `-L <session>`): tests run in parallel, and
/// on one shared server a session ending can stop the server while another test's `new-session`
/// is connecting to it ("server exited unexpectedly").
struct Tmux {
    session: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.session])
            .args(args)
            .output()
            .expect("tmux is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn send(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", &self.session];
        a.extend_from_slice(keys);
        self.cmd(&a);
    }
    fn type_text(&self, text: &str) {
        self.cmd(&["send-keys", "-t", &self.session, "-l", text]);
    }
    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", &self.session])
    }
    fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {needle:?}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.session, "kill-server"])
            .output();
    }
}

fn start(dir: &Path, delay_ms: u32, latency_log: &Path) -> Tmux {
    start_with(dir, delay_ms, latency_log, "")
}

fn start_with(dir: &Path, delay_ms: u32, latency_log: &Path, extra_env: &str) -> Tmux {
    start_sized(dir, delay_ms, latency_log, extra_env, (100, 30), "")
}

fn start_sized(
    dir: &Path,
    delay_ms: u32,
    latency_log: &Path,
    extra_env: &str,
    size: (u16, u16),
    args: &str,
) -> Tmux {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let session = format!("tritter-e2e-{}-{n}", std::process::id());
    let bin = env!("CARGO_BIN_EXE_tritter");
    let script = format!(
        "cd '{d}' && echo BEFORE-TRITTER && TRITTER_TEST_ENGINE=echo TRITTER_TEST_DELAY_MS={delay_ms} \
         TRITTER_CONFIG_DIR='{d}' TRITTER_DATA_DIR='{d}' TRITTER_LATENCY_LOG='{log}' {extra_env} '{bin}' {args}; \
         echo EXIT-CODE=$?; echo STTY=$(stty -a | grep -o -- '-*icanon'); sleep 600",
        d = dir.display(),
        log = latency_log.display(),
    );
    let status = Command::new("tmux")
        .args([
            "-L",
            &session,
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            &size.0.to_string(),
            "-y",
            &size.1.to_string(),
            "sh",
            "-c",
            &script,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    Tmux { session }
}

#[test]
fn type_stream_stop_quit_in_a_real_terminal() {
    require_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("latency.json");
    let t = start(dir.path(), 40, &log);
    t.wait_for(
        "Tritter — an offline coding assistant",
        Duration::from_secs(20),
    );
    t.wait_for("scripted-echo", Duration::from_secs(5));

    // A prompt, and the reply streams in.
    t.type_text("hello from tmux");
    t.send(&["Enter"]);
    t.wait_for("You said: hello from tmux", Duration::from_secs(20));
    let s = t.wait_for("first token", Duration::from_secs(30));
    assert!(s.contains("let answer = 42;"), "{s}");
    assert!(s.contains("[1] rust"), "{s}");

    // Keys typed while a reply streams land at once (these are also the latency samples).
    t.type_text("second");
    t.send(&["Enter"]);
    t.wait_for("You said: second", Duration::from_secs(20));
    for c in ["a", "b", "c", "d", "e", "f"] {
        t.type_text(c);
        std::thread::sleep(Duration::from_millis(30));
    }
    t.wait_for("abcdef", Duration::from_secs(5));
    t.send(&["Escape"]);
    let s = t.wait_for("stopped", Duration::from_secs(20));
    assert!(s.contains("ready"), "{s}");

    // A 1 MB bracketed paste arrives as one event and becomes a chip, not 30000 typed lines.
    let big: String = (0..30_000)
        .map(|i| format!("pasted line {i:05} .........\n"))
        .collect();
    let paste_file = dir.path().join("paste.txt");
    std::fs::write(&paste_file, &big).unwrap();
    t.cmd(&["load-buffer", "-b", "big", paste_file.to_str().unwrap()]);
    let start = Instant::now();
    t.cmd(&["paste-buffer", "-p", "-d", "-b", "big", "-t", &t.session]);
    t.wait_for("pasted text (30000 lines", Duration::from_secs(20));
    eprintln!("1 MB paste to chip on screen: {:?}", start.elapsed());
    t.send(&["BSpace"]);

    // Shrinking to 20x5 and back does not crash the app.
    t.cmd(&["resize-window", "-t", &t.session, "-x", "20", "-y", "5"]);
    std::thread::sleep(Duration::from_millis(300));
    t.cmd(&["resize-window", "-t", &t.session, "-x", "100", "-y", "30"]);
    t.wait_for("latent off", Duration::from_secs(10));

    // Quit: exit code 0 and the shell's screen is back.
    for _ in 0..6 {
        t.send(&["BSpace"]);
    }
    t.type_text("/quit");
    t.send(&["Enter"]);
    let s = t.wait_for("EXIT-CODE=", Duration::from_secs(20));
    assert!(s.contains("EXIT-CODE=0"), "{s}");
    assert!(
        s.contains("BEFORE-TRITTER"),
        "the shell screen was restored:\n{s}"
    );
    assert!(!s.contains("You said"), "the app's screen is gone:\n{s}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    eprintln!("keystroke-to-frame latency: {report}");
    assert!(
        report["keys_while_streaming"].as_u64().unwrap() >= 6,
        "{report}"
    );
    assert!(
        report["streaming_p95_ms"].as_f64().unwrap() < 100.0,
        "{report}"
    );
}

#[test]
fn a_panic_restores_the_terminal() {
    require_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let t = start_with(
        dir.path(),
        0,
        &dir.path().join("l.json"),
        "TRITTER_TEST_PANIC=1",
    );
    let s = t.wait_for("STTY=", Duration::from_secs(20));
    assert!(s.contains("EXIT-CODE=101"), "{s}");
    assert!(s.contains("STTY=icanon"), "raw mode was switched off:\n{s}");
    assert!(
        s.contains("BEFORE-TRITTER"),
        "the shell screen was restored:\n{s}"
    );
    assert!(
        s.contains("panicking after the first frame"),
        "the panic message is shown:\n{s}"
    );
    assert!(
        !s.contains("Tritter — an offline"),
        "the app's screen is gone:\n{s}"
    );
}

/// The measurement in docs/TUI.md: keystroke-to-frame latency (key event read → frame flushed)
/// while a long reply streams at about 200 tokens/s in a 160x50 terminal. Run with
/// `cargo test -p tritter --test e2e_tmux -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, prints figures"]
fn measure_keystroke_latency_while_streaming() {
    require_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("latency.json");
    let t = start_sized(dir.path(), 5, &log, "TRITTER_TEST_REPEAT=20", (160, 50), "");
    t.wait_for("scripted-echo", Duration::from_secs(20));
    t.type_text("stream a long reply");
    t.send(&["Enter"]);
    t.wait_for("streaming", Duration::from_secs(20));
    let mut typed = 0;
    while !t.screen().contains("first token") && typed < 400 {
        t.type_text("x");
        typed += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    t.send(&["C-c"]);
    t.send(&["C-c"]);
    t.wait_for("EXIT-CODE=", Duration::from_secs(20));
    let report = std::fs::read_to_string(&log).unwrap();
    eprintln!("keys typed: {typed}; latency report: {report}");
}

#[test]
fn resume_reopens_the_last_conversation() {
    require_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.json");
    let t = start(dir.path(), 0, &log);
    t.wait_for("scripted-echo", Duration::from_secs(20));
    t.type_text("remember the walrus");
    t.send(&["Enter"]);
    t.wait_for("first token", Duration::from_secs(20));
    t.type_text("/quit");
    t.send(&["Enter"]);
    t.wait_for("EXIT-CODE=0", Duration::from_secs(20));
    drop(t);
    let t = start_sized(dir.path(), 0, &log, "", (100, 30), "--resume");
    let s = t.wait_for("resumed session", Duration::from_secs(20));
    assert!(
        s.contains("remember the walrus") && s.contains("You said: remember the walrus"),
        "{s}"
    );
    t.type_text("/quit");
    t.send(&["Enter"]);
    t.wait_for("EXIT-CODE=0", Duration::from_secs(20));
}

/// `/latent on` with the scripted engine (two fixed, made-up thoughts): the thinking lines show
/// above the reply, Ctrl+T folds them into one line, and the status bar says the mode. The
/// scripted engine is not a model: this checks the terminal path, not thoughts of a real chain.
#[test]
fn latent_thoughts_show_and_fold_in_a_real_terminal() {
    require_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.json");
    let t = start(dir.path(), 0, &log);
    t.wait_for("latent off", Duration::from_secs(20));
    t.type_text("/latent on");
    t.send(&["Enter"]);
    t.wait_for("latent on ·", Duration::from_secs(10));
    t.type_text("/clear");
    t.send(&["Enter"]);
    t.type_text("think first");
    t.send(&["Enter"]);
    let s = t.wait_for("first token", Duration::from_secs(20));
    assert!(
        s.contains("thought 1: echo (0.82) · scripted (0.41) · every (0.30)"),
        "{s}"
    );
    assert!(s.contains("2 thoughts"), "{s}");
    t.send(&["C-t"]);
    let s = t.wait_for(
        "▸ thinking · 2 thoughts: echo → reply",
        Duration::from_secs(10),
    );
    assert!(!s.contains("thought 1:"), "{s}");
    t.type_text("/quit");
    t.send(&["Enter"]);
    t.wait_for("EXIT-CODE=0", Duration::from_secs(20));
}

/// Attachments are decoded and sessions written off the UI thread (as jobs); their results still
/// reach the screen, and `/save` writes the file.
#[test]
fn attachments_and_saves_finish_as_background_jobs() {
    require_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.json");
    // 0.5 s of a 200 Hz sawtooth, 8 kHz mono 16-bit PCM.
    let wav = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hum.wav");
    std::fs::copy(wav, dir.path().join("hum.wav")).unwrap();
    let t = start(dir.path(), 0, &log);
    t.wait_for("scripted-echo", Duration::from_secs(20));
    t.type_text("/audio hum.wav");
    t.send(&["Enter"]);
    t.wait_for("audio hum.wav 0.5s 8.0kHz", Duration::from_secs(20));
    t.type_text("/img missing.png");
    t.send(&["Enter"]);
    t.wait_for("missing.png", Duration::from_secs(20));
    t.type_text("/save kept");
    t.send(&["Enter"]);
    t.wait_for("saved to", Duration::from_secs(20));
    t.type_text("/quit");
    t.send(&["Enter"]);
    t.wait_for("EXIT-CODE=0", Duration::from_secs(20));
    let sessions: Vec<String> = std::fs::read_dir(dir.path().join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        sessions.iter().any(|n| n.starts_with("kept")),
        "{sessions:?}"
    );
}

/// The real built-in model in a real terminal: start, type a prompt, see the reply stream,
/// Esc stops it, /quit exits 0 and restores the screen.
#[test]
fn built_in_model_streams_and_stops_in_a_real_terminal() {
    require_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("latency.json");
    // An empty TRITTER_TEST_ENGINE (set after the default one) selects the real model.
    let t = start_with(dir.path(), 0, &log, "TRITTER_TEST_ENGINE=");
    t.wait_for(
        "Tritter — an offline coding assistant",
        Duration::from_secs(30),
    );
    t.wait_for("tritter-tiny", Duration::from_secs(30));
    t.type_text("def add(a, b):");
    t.send(&["Enter"]);
    t.wait_for("· streaming ·", Duration::from_secs(60));
    t.send(&["Escape"]);
    // The reply's footer: stopped by Esc (or, on a very fast machine, already complete).
    let s = t.wait_for("first token", Duration::from_secs(60));
    eprintln!("after Esc:\n{s}");
    assert!(s.contains("def add(a, b):") && s.contains("tok/s"), "{s}");
    t.wait_for("· ready ·", Duration::from_secs(20));
    t.type_text("/quit");
    t.send(&["Enter"]);
    let s = t.wait_for("EXIT-CODE=", Duration::from_secs(20));
    assert!(s.contains("EXIT-CODE=0"), "{s}");
    assert!(
        s.contains("BEFORE-TRITTER"),
        "the shell screen was restored:\n{s}"
    );
}

/// The vision demo model in a real terminal: `/img` attaches a held-out picture, the question is
/// sent with it, and the reply names what is in it.
#[test]
fn img_reaches_the_vision_demo_model_in_a_real_terminal() {
    require_tmux!();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/vision-demo");
    let answers = std::fs::read_to_string(format!("{demo}/examples/answers.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(answers.lines().next().unwrap()).unwrap();
    let want = first["text"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{demo}/examples/00000.png"),
        dir.path().join("pic.png"),
    )
    .unwrap();
    let log = dir.path().join("latency.json");
    let t = start_sized(
        dir.path(),
        0,
        &log,
        "TRITTER_TEST_ENGINE=",
        (100, 30),
        &format!("--model '{demo}'"),
    );
    t.wait_for("vision-demo", Duration::from_secs(30));
    t.type_text("/img pic.png");
    t.send(&["Enter"]);
    t.wait_for("img pic.png 64×64", Duration::from_secs(20));
    t.type_text("what is in this picture?");
    t.send(&["Enter"]);
    let s = t.wait_for(&want, Duration::from_secs(60));
    eprintln!("{s}");
    t.type_text("/quit");
    t.send(&["Enter"]);
    let s = t.wait_for("EXIT-CODE=", Duration::from_secs(20));
    assert!(s.contains("EXIT-CODE=0"), "{s}");
}

/// The audio demo model in a real terminal: `/audio` attaches a held-out DTMF clip, the question
/// is sent with it, and the reply is the clip's digits.
#[test]
fn audio_reaches_the_audio_demo_model_in_a_real_terminal() {
    require_tmux!();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/audio-demo");
    let answers = std::fs::read_to_string(format!("{demo}/examples/answers.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(answers.lines().next().unwrap()).unwrap();
    let want = first["text"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{demo}/examples/00000.wav"),
        dir.path().join("clip.wav"),
    )
    .unwrap();
    let log = dir.path().join("latency.json");
    let t = start_sized(
        dir.path(),
        0,
        &log,
        "TRITTER_TEST_ENGINE=",
        (100, 30),
        &format!("--model '{demo}'"),
    );
    t.wait_for("audio-demo", Duration::from_secs(30));
    t.type_text("/audio clip.wav");
    t.send(&["Enter"]);
    t.wait_for("audio clip.wav", Duration::from_secs(20));
    t.type_text("what was said?");
    t.send(&["Enter"]);
    let s = t.wait_for(&want, Duration::from_secs(60));
    eprintln!("{s}");
    t.type_text("/quit");
    t.send(&["Enter"]);
    let s = t.wait_for("EXIT-CODE=", Duration::from_secs(20));
    assert!(s.contains("EXIT-CODE=0"), "{s}");
}

/// The latent demo model in a real terminal with `--latent on`: a held-out ProsQA-style question
/// gets four continuous thoughts, each shown as a "thinking" line of its nearest tokens, then a
/// reply naming the entity and one of the question's two options (whether it is the right one is
/// the held-out accuracy's business, README).
#[test]
fn latent_demo_model_thinks_then_answers_in_a_real_terminal() {
    require_tmux!();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/latent-demo");
    let held_out = std::fs::read_to_string(format!("{demo}/examples/held-out.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(held_out.lines().next().unwrap()).unwrap();
    let question = first["question"].as_str().unwrap().to_string();
    // "… Is Leo a shoumax or a limion?": the entity and the two options.
    let ask = question.rsplit_once("Is ").unwrap().1;
    let (entity, options) = ask.split_once(" a ").unwrap();
    let (a, b) = options.trim_end_matches('?').split_once(" or a ").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("latency.json");
    let t = start_sized(
        dir.path(),
        0,
        &log,
        "TRITTER_TEST_ENGINE=",
        (160, 40),
        &format!("--model '{demo}' --latent on"),
    );
    t.wait_for("latent on ·", Duration::from_secs(30));
    t.type_text(&question);
    t.send(&["Enter"]);
    let s = t.wait_for("first token", Duration::from_secs(60));
    eprintln!("{s}");
    assert!(s.contains("thought 4:") && !s.contains("thought 5:"), "{s}");
    assert!(
        s.contains(&format!("{entity} is a {a}.")) || s.contains(&format!("{entity} is a {b}.")),
        "{s}"
    );
    t.send(&["C-t"]);
    t.wait_for("▸ thinking · 4 thoughts", Duration::from_secs(10));
    t.type_text("/quit");
    t.send(&["Enter"]);
    let s = t.wait_for("EXIT-CODE=", Duration::from_secs(20));
    assert!(s.contains("EXIT-CODE=0"), "{s}");
}
