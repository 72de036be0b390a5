//! Loading a checkpoint's `tokenizer.json` (the engine's and the fuzz target's one loader).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tokenizers::Tokenizer;

/// Loads a checkpoint's `tokenizer.json`; errors name the file. The tokenizers crate panics on
/// some malformed files (found by fuzzing: a decoder with a non-string key): that is an error too.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let loaded = crate::caught::catch(|| Tokenizer::from_file(path)).map_err(|m| {
        anyhow!(
            "{}: malformed (the tokenizer library failed on it: {m})",
            path.display()
        )
    })?;
    loaded
        .map_err(|e| anyhow!("{}: {e}", path.display()))
        .context("loading the tokenizer")
}
