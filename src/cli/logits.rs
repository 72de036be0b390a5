//! `tritter logits --model DIR --ids 1,2,3 --out F.safetensors`: the conformance probe. Writes the
//! f32 logits `[T, V]` of one forward pass over the given ids (no sampling, no tokenizer).

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

use crate::device::Compute;

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
/// through the CUDA model (f32 cache and head).
pub fn run(model_dir: &Path, ids: &str, out: &Path, compute: Compute) -> Result<()> {
    let ids = parse_ids(ids)?;
    let ck = tritter_model::load_model(model_dir, &Device::Cpu)
        .with_context(|| format!("loading model from {}", model_dir.display()))?;
    let logits = match compute {
        Compute::Cpu => {
            let t = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu)?;
            ck.model.forward(&t, None)?.squeeze(0)?
        }
        Compute::Cuda(n) => gpu_logits(&ck.model, &ids, n)?,
    };
    let mut map = HashMap::new();
    map.insert("logits".to_string(), logits);
    candle_core::safetensors::save(&map, out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

#[cfg(feature = "cuda")]
fn gpu_logits(model: &tritter_model::Transformer, ids: &[u32], ordinal: usize) -> Result<Tensor> {
    use tritter_model::gpu::{GpuModel, GpuOptions};
    let mut g = GpuModel::new(model, GpuOptions::reference(model.config()), ordinal)
        .context("putting the model on the GPU")?;
    let v = g.forward(ids, true)?;
    Ok(Tensor::from_vec(
        v,
        (ids.len(), model.config().vocab_size),
        &Device::Cpu,
    )?)
}

#[cfg(not(feature = "cuda"))]
fn gpu_logits(_: &tritter_model::Transformer, _: &[u32], _: usize) -> Result<Tensor> {
    Err(crate::device::no_cuda("cuda"))
}
