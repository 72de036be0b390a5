//! `tritter logits --model DIR --ids 1,2,3 --out F.safetensors`: the conformance probe. Writes the
//! f32 logits `[T, V]` of one forward pass over the given ids (no sampling, no tokenizer).

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

use crate::device::Compute;
use tritter_model::Profile;

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

/// Writes the logits of `ids`: on the CPU through the candle path (the reference form), on a GPU
/// through the model crate's decoder for it (the reference profile: f32 cache and head).
pub fn run(model_dir: &Path, ids: &str, out: &Path, compute: Compute) -> Result<()> {
    let ids = parse_ids(ids)?;
    let ck = tritter_model::load_model(model_dir, &Device::Cpu)
        .with_context(|| format!("loading model from {}", model_dir.display()))?;
    let logits = match compute {
        Compute::Cpu => {
            let t = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu)?;
            ck.model.forward(&t)?.squeeze(0)?
        }
        Compute::Cuda(_) => {
            let mut d = tritter_model::decoder::open(&ck.model, compute, Profile::Reference)
                .context("putting the model on the GPU")?;
            let v = d.step_all(&ids)?;
            Tensor::from_vec(v, (ids.len(), ck.config.vocab_size), &Device::Cpu)?
        }
    };
    let mut map = HashMap::new();
    map.insert("logits".to_string(), logits);
    candle_core::safetensors::save(&map, out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
