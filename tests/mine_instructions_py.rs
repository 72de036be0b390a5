//! `scripts/mine_instructions.py` on the fixture corpus `tests/data/miner/` (config
//! `corpus.toml`: seed 5, val_fraction 0.25, licence MIT): the records written here by hand
//! appear; the document the pipeline holds out (computed here with the Rust split hash, and
//! counted by `tritter --train --prepare-only`) yields nothing, nor does a function it shares
//! with a training file, exactly or nearly; two runs are byte-identical; files that do not parse are skipped and
//! counted; the output is accepted by `tritter --train` as a `chat` source.
//!
//! The miner needs Python 3.11 (standard library only): `$TRITTER_PYTHON`, else `python3`.
//! Without it the test is skipped with a note, except under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tritter_model::data::hash::{content_hash, hash_bytes, unit_interval};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    root().join("tests/data/miner")
}

fn python() -> Option<PathBuf> {
    let py = std::env::var_os("TRITTER_PYTHON").map_or_else(|| "python3".into(), PathBuf::from);
    let ok = Command::new(&py)
        .args(["-c", "import tomllib"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "no Python 3.11 ($TRITTER_PYTHON or python3), and CI is set"
    );
    eprintln!("skipped: no Python 3.11 ($TRITTER_PYTHON or python3)");
    None
}

/// Run the miner on the fixture; (the JSONL text, the summary).
fn mine(py: &Path, out: &Path) -> (String, Value) {
    let o = Command::new(py)
        .arg(root().join("scripts/mine_instructions.py"))
        .arg("--config")
        .arg(fixture().join("corpus.toml"))
        .arg("--out")
        .arg(out)
        .args(["--seq-len", "2048"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = serde_json::from_slice(&o.stdout).unwrap();
    (std::fs::read_to_string(out).unwrap(), summary)
}

fn records(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["license"], "MIT", "{l}");
            let m = &v["messages"];
            assert_eq!(m[0]["role"], "user");
            assert_eq!(m[1]["role"], "assistant");
            let s = |x: &Value| x.as_str().unwrap().to_string();
            (
                s(&v["kind"]),
                s(&v["source"]),
                s(&m[0]["content"]),
                s(&m[1]["content"]),
            )
        })
        .collect()
}

const AREA: &str = "def area_of_rectangle(width, height=1.0):
    if width < 0 or height < 0:
        raise ValueError(\"negative side\")
    area = width * height
    return area";

const AREA_DOC: &str = "    \"\"\"Return the area of a rectangle given its width and height.

    Both sides must be non-negative.
    \"\"\"
";

const BRACES: &str = "pub fn count_braces(s: &str) -> usize {
    let open = '{';
    let raw = r#\"}}\"#; // }
    /* { nested /* } */ */
    let _ = (open, raw, \"}\\\"{\", b'}');
    s.chars().filter(|&c| c == '}').count()
}";

const LONGEST: &str = "pub(crate) fn longest<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.len() >= b.len() {
        a
    } else {
        b
    }
}";

fn expected() -> Vec<(&'static str, &'static str, String, String)> {
    let (py, rs) = ("corpus/pkg/shapes.py", "corpus/src/lib.rs");
    let explain =
        |lang: &str, code: &str| format!("Explain this function:\n```{lang}\n{code}\n```");
    let area_full = AREA.replacen('\n', &format!("\n{AREA_DOC}"), 1);
    vec![
        ("write_python", py, "Write a Python function `area_of_rectangle(width, height=1.0)` that does the following: Return the area of a rectangle given its width and height.".into(), area_full),
        ("explain", py, explain("python", AREA), "Return the area of a rectangle given its width and height.\n\nBoth sides must be non-negative.".into()),
        ("write_rust", rs, "Write a Rust function `pub fn count_braces(s: &str) -> usize` that does the following: Count the closing braces in `s`, ignoring nothing.".into(), BRACES.into()),
        ("explain", rs, explain("rust", BRACES), "Count the closing braces in `s`, ignoring nothing.\n\nThe literals below hold braces that must not end the body.".into()),
        ("write_rust", rs, "Write a Rust function `pub(crate) fn longest<'a>(a: &'a str, b: &'a str) -> &'a str` that does the following: Return the longer of two string slices.".into(), LONGEST.into()),
        ("explain", rs, explain("rust", LONGEST), "Return the longer of two string slices.".into()),
    ]
}

/// The fixture files the pipeline's split holds out, by the Rust hash (pipeline.rs `split`).
fn held_out_by_rust(seed: u64, val_fraction: f64) -> Vec<String> {
    let mut held = Vec::new();
    for rel in [
        "pkg/broken.py",
        "pkg/heldout.py",
        "pkg/shapes.py",
        "src/lib.rs",
        "src/unbalanced.rs",
    ] {
        let bytes = std::fs::read(fixture().join("corpus").join(rel)).unwrap();
        let key = hash_bytes(seed ^ 0x0053_504C_4954, &content_hash(&bytes).to_le_bytes());
        if unit_interval(key) < val_fraction {
            held.push(rel.to_string());
        }
    }
    held
}

#[test]
fn miner_writes_the_expected_pairs_and_nothing_held_out() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (text, summary) = mine(&py, &tmp.path().join("a.jsonl"));
    let got = records(&text);
    for (kind, src, user, answer) in expected() {
        assert!(
            got.iter()
                .any(|r| r.0 == kind && r.1 == src && r.2 == user && r.3 == answer),
            "missing {kind} record from {src}:\n{user}\n---\n{answer}\n\ngot:\n{text}"
        );
    }
    // Fill-in-the-middle: the answer put back into the hole gives the function (no docs).
    let fims: Vec<_> = got.iter().filter(|r| r.0 == "fim").collect();
    assert_eq!(fims.len(), 3, "{text}");
    for (lang, code) in [("python", AREA), ("rust", BRACES), ("rust", LONGEST)] {
        let want = format!("```{lang}\n{code}\n```");
        assert!(
            fims.iter().any(|r| {
                // The instruction names the marker once, the code holds it once.
                assert_eq!(r.2.matches("<hole>").count(), 2);
                let i = r.2.rfind("<hole>").unwrap();
                let filled = format!("{}{}{}", &r.2[..i], r.3, &r.2[i + 6..]);
                r.3.ends_with('\n') && filled.ends_with(&want)
            }),
            "no fim record of:\n{code}"
        );
    }
    assert_eq!(got.len(), 9, "{text}");
    // The held-out document (by the Rust split) yields nothing, nor does the function a
    // training file shares with it (same code, another docstring), nor its near copy
    // (another name: word-shingle Jaccard 15/19).
    assert_eq!(held_out_by_rust(5, 0.25), ["pkg/heldout.py"]);
    assert!(!text.contains("heldout.py"), "{text}");
    for name in ["held_only_function", "clamp_value", "count_truthy"] {
        assert!(!text.contains(name), "{name}");
    }
    assert_eq!(summary["held_out_files"], 1);
    assert_eq!(summary["held_out_excluded"], 1);
    assert_eq!(summary["held_out_near_excluded"], 1);
    // Skips: __repr__, the two tests, the short docstring; two files do not parse.
    let skipped = &summary["skipped"];
    assert_eq!(
        (&skipped["dunder"], &skipped["test"], &skipped["short_doc"]),
        (&Value::from(1), &Value::from(2), &Value::from(1))
    );
    assert_eq!(skipped["parse_error"], 2);
    assert_eq!(
        summary["unparsed_files"],
        serde_json::json!(["corpus/pkg/broken.py", "corpus/src/unbalanced.rs"])
    );
    assert_eq!(summary["files_read"], 5);
    assert_eq!(summary["records_written"], 9);
    // Deterministic: a second run writes the same bytes.
    let (again, _) = mine(&py, &tmp.path().join("b.jsonl"));
    assert_eq!(text, again);
}

fn prepare(config: &Path, run: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tritter"))
        .arg("--train")
        .arg(config)
        .arg("--set")
        .arg(format!("run.dir=\"{}\"", run.display()))
        .arg("--prepare-only")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    serde_json::from_slice(&std::fs::read(run.join("data/manifest.json")).unwrap()).unwrap()
}

#[test]
fn the_pipeline_agrees_on_the_split_and_accepts_the_mined_records() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // The pipeline itself holds out one document of the fixture corpus.
    let manifest = prepare(&fixture().join("corpus.toml"), &tmp.path().join("corpus"));
    assert_eq!(manifest["tokens"]["val_documents"], 1, "{manifest}");
    // The mined records train as a chat source.
    let mined = tmp.path().join("mined.jsonl");
    mine(&py, &mined);
    let example = std::fs::read_to_string(root().join("scripts/instruct-example.toml")).unwrap();
    let config = example
        .replace(
            "\"instruct-example.jsonl\"",
            &format!("{:?}", mined.display().to_string()),
        )
        .replace("seq_len = 128 ", "seq_len = 1024");
    let path = tmp.path().join("chat.toml");
    std::fs::write(&path, config).unwrap();
    let manifest = prepare(&path, &tmp.path().join("chat"));
    let t = &manifest["tokens"];
    let docs = t["train_documents"].as_u64().unwrap() + t["val_documents"].as_u64().unwrap();
    assert_eq!(docs + t["chat_too_long"].as_u64().unwrap(), 9, "{manifest}");
    assert_eq!(t["chat_too_long"], 0, "{manifest}");
}
