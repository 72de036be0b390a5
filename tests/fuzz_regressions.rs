//! Fuzz regressions: every input a fuzz target (`fuzz/`) crashed on is kept in
//! `tests/data/fuzz-crashes/TARGET/` and fed here to the same entry point, which must now return
//! (an error is fine: one line, no panic). Also the loader bugs found while writing the targets.

use std::path::{Path, PathBuf};

use candle_core::Device;

/// The kept crash inputs of one target (none yet is fine).
fn crashes(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz-crashes")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn one_line<T>(r: anyhow::Result<T>) {
    if let Err(e) = r {
        let msg = format!("{e:#}");
        assert!(!msg.is_empty() && !msg.contains("panicked"), "{msg}");
    }
}

/// Runs `f` on each kept input of `target` written to `dir/name` (the first byte dropped when
/// the target uses it as a selector, as the target does).
fn replay(target: &str, f: impl Fn(&[u8], &Path)) {
    let dir = tempfile::tempdir().unwrap();
    for p in crashes(target) {
        eprintln!("{target}: {}", p.display());
        f(&std::fs::read(&p).unwrap(), dir.path());
    }
}

#[test]
fn config_json_crashes() {
    replay("config_json", |b, _| {
        if let Ok(t) = std::str::from_utf8(b) {
            if let Ok(c) = tritter_model::Config::from_json_str(t) {
                let _ = c.ternary_params();
            }
        }
    });
}

#[test]
fn safetensors_crashes() {
    replay("safetensors", |b, _| {
        let _ = tritter_model::TensorStore::from_bytes(b, "model.safetensors", &Device::Cpu);
    });
}

#[test]
fn shard_index_crashes() {
    replay("shard_index", |b, dir| {
        std::fs::write(dir.join("model.safetensors.index.json"), b).unwrap();
        let _ = tritter_model::TensorStore::load_dir(dir, &Device::Cpu);
    });
}

#[test]
fn a_shard_outside_the_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for shard in [
        "../model.safetensors",
        "/dev/zero",
        "a/../../b.safetensors",
        "",
    ] {
        let index = serde_json::json!({ "weight_map": { "w": shard } });
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        let e = tritter_model::TensorStore::load_dir(dir.path(), &Device::Cpu).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("not a file inside the checkpoint"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn tokenizer_json_crashes() {
    replay("tokenizer_json", |b, dir| {
        let p = dir.join("tokenizer.json");
        std::fs::write(&p, b).unwrap();
        one_line(tritter::untrusted::tokenizer(&p));
    });
}

#[test]
fn toml_configs_crashes() {
    replay("toml_configs", |b, dir| {
        one_line(tritter::untrusted::toml_input(b, dir))
    });
}

#[test]
fn session_crashes() {
    replay("session", |b, dir| {
        std::fs::create_dir_all(dir.join("sessions")).unwrap();
        std::fs::write(dir.join("sessions/fuzz.json"), b).unwrap();
        one_line(tritter::untrusted::session(dir, "fuzz"));
    });
}

#[test]
fn chat_template_crashes() {
    replay("chat_template", |b, _| {
        if let Ok(t) = std::str::from_utf8(b) {
            one_line(tritter::untrusted::chat_template(t));
        }
    });
}

#[test]
fn image_crashes() {
    replay("image", |b, dir| {
        let p = dir.join("attachment");
        std::fs::write(&p, b).unwrap();
        one_line(tritter::untrusted::image(&p));
    });
}

#[test]
fn audio_crashes() {
    replay("audio", |b, dir| {
        let Some((&kind, rest)) = b.split_first() else {
            return;
        };
        let name = ["clip.wav", "clip.flac", "clip.mp3", "clip.ogg"]
            .get(usize::from(kind))
            .unwrap_or(&"clip");
        let p = dir.join(name);
        std::fs::write(&p, rest).unwrap();
        one_line(tritter::untrusted::audio(&p));
        std::fs::remove_file(&p).unwrap();
    });
}
