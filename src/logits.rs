//! `tritter logits --model DIR --ids 1,2,3 --out F.safetensors`: the conformance probe. Writes the
//! f32 logits `[T, V]` of one forward pass over the given ids (no sampling, no tokenizer).

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Parses `1,2,3` (spaces allowed) into token ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .with_context(|| format!("--ids: `{t}` is not a token id"))
        })
        .collect::<Result<Vec<u32>>>()?;
    if ids.is_empty() {
        bail!("--ids: no token ids given");
    }
    Ok(ids)
}

pub fn run(model_dir: &Path, ids: &str, out: &Path, device: &Device) -> Result<()> {
    let ids = parse_ids(ids)?;
    let ck = tritter_model::load_model(model_dir, device)
        .with_context(|| format!("loading model from {}", model_dir.display()))?;
    let t = Tensor::from_slice(&ids, (1, ids.len()), device)?;
    let logits = ck
        .model
        .forward(&t, None)?
        .squeeze(0)?
        .to_device(&Device::Cpu)?;
    let mut map = HashMap::new();
    map.insert("logits".to_string(), logits);
    candle_core::safetensors::save(&map, out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
