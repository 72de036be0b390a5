//! Helpers shared by the trainer tests (`train_loop.rs`, `train_bf16.rs`): a training config
//! over this crate's own trainer sources, and copying prepared data between runs.

use std::path::{Path, PathBuf};
use tritter_model::train::TrainConfig;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A training config writing to `run`: the given `[run]`…`[checkpoint]` sections (`head`, which
/// must not contain `dir`), then 24-token sequences over `src/train/*.rs` with a 300-entry
/// tokenizer; `extra` are `--set`-style overrides.
pub fn train_config(run: &Path, head: &str, extra: &[&str]) -> TrainConfig {
    let text = format!(
        r#"
[run]
dir = "{run}"
{head}
[data]
seq_len = 24
val_fraction = 0.1
[[data.sources]]
kind = "dir"
path = "{src}"
languages = ["rust"]
[data.tokenizer]
vocab_size = 300
image_codes = 0
audio_codes = 0
"#,
        run = run.display(),
        src = manifest_dir().join("src").join("train").display()
    );
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    TrainConfig::from_toml_str(&text, &extra, Path::new(".")).unwrap()
}

/// Copies the directory tree `src` to `dst`.
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_tree(&e.path(), &dst.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}
