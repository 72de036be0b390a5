//! End-to-end test of the interactive app in a real terminal: tmux runs the binary, the test types
//! a prompt, watches the reply stream, stops a second reply with Esc, quits with /quit and checks
//! exit code 0 and that the shell's screen came back. It uses the scripted test engine
//! (`TRITTER_TEST_ENGINE=echo`, not a model; to be switched to the built-in model once it is wired
//! in). Needs tmux (`.ci/run` installs it); without tmux the test fails with that message.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    session: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
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
            .args(["kill-session", "-t", &self.session])
            .output();
    }
}

fn start(dir: &Path, delay_ms: u32, latency_log: &Path) -> Tmux {
    assert!(
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tmux is not installed (the e2e test needs it; .ci/run installs it)"
    );
    let session = format!("tritter-e2e-{}", std::process::id());
    let bin = env!("CARGO_BIN_EXE_tritter");
    let script = format!(
        "cd '{d}' && echo BEFORE-TRITTER && TRITTER_TEST_ENGINE=echo TRITTER_TEST_DELAY_MS={delay_ms} \
         TRITTER_CONFIG_DIR='{d}' TRITTER_DATA_DIR='{d}' TRITTER_LATENCY_LOG='{log}' '{bin}'; \
         echo EXIT-CODE=$?; sleep 600",
        d = dir.display(),
        log = latency_log.display(),
    );
    let status = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "100",
            "-y",
            "30",
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
