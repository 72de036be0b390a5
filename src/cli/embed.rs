//! `tritter embed --model DIR "TEXT"`: a text embedding (mean-pooled final hidden states; the
//! attention is bidirectional for checkpoints whose `attention_mode` is `embedding`), printed as
//! one JSON object `{"model", "tokens", "dim", "embedding"}`.

use anyhow::{anyhow, Context, Result};
use candle_core::Device;
use std::path::Path;

pub fn run(model_dir: Option<&Path>, text: &str, device: &Device) -> Result<()> {
    if text.trim().is_empty() {
        anyhow::bail!("embed: the text is empty");
    }
    let (model, tokenizer, name) = match model_dir {
        Some(dir) => {
            let ck = tritter_model::load_model(dir, device)
                .with_context(|| format!("loading model {}", dir.display()))?;
            let p = dir.join("tokenizer.json");
            let tk = crate::engine::model::load_tokenizer(&p)?;
            (ck.model, tk, dir.display().to_string())
        }
        None => {
            let (m, tk) = crate::engine::default_model::parts(device)?;
            (m, tk, "tritter-tiny".to_string())
        }
    };
    let ids = tokenizer
        .encode(text, false)
        .map_err(|e| anyhow!("tokenizer: {e}"))?
        .get_ids()
        .to_vec();
    let emb = model.embedding(&ids)?;
    let out = serde_json::json!({
        "model": name,
        "tokens": ids.len(),
        "dim": emb.len(),
        "attention_mode": model.config().attention_mode,
        "embedding": emb,
    });
    println!("{out}");
    Ok(())
}
