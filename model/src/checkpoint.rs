//! Checkpoints on disk: a directory with `config.json`, `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), `tokenizer.json` and an optional `tokenizer_config.json`.
//!
//! Loads HF BitNet checkpoints in both published forms — packed (`bitlinear` / `autobitlinear`
//! `offline`: uint8 `[out/4, in]` + `weight_scale`) and full-precision master weights
//! (`autobitlinear` / `online`). Tritter saves its own checkpoints in the packed `bitlinear` form,
//! so HF transformers loads them too. Saving is atomic: a temporary directory is written and
//! fsynced, then renamed over the target.

use crate::bitlinear::PackedLinear;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::transformer::Transformer;
use crate::weights::{param_shapes, CheckpointSource, Params, TensorStore};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A loaded inference checkpoint.
pub struct Checkpoint {
    pub config: Config,
    pub model: Transformer,
    pub dir: PathBuf,
}

/// Loads `dir` for inference (weights packed for the ternary kernels).
pub fn load_model(dir: &Path, device: &Device) -> Result<Checkpoint> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "checkpoint directory not found",
            ),
        ));
    }
    let config = Config::from_json_file(&dir.join("config.json"))?;
    let store = TensorStore::load_dir(dir, device)?;
    let mut src = CheckpointSource::new(store, &config);
    let model = Transformer::load(&config, &mut src, device)?;
    Ok(Checkpoint {
        config,
        model,
        dir: dir.to_path_buf(),
    })
}

/// Loads a checkpoint held in memory (config.json text and model.safetensors bytes), e.g. the
/// default model embedded in the binary.
pub fn load_model_from_bytes(
    config_json: &str,
    safetensors: &[u8],
    device: &Device,
) -> Result<Checkpoint> {
    let config = Config::from_json_str(config_json)?;
    let store = TensorStore::from_bytes(safetensors, "model.safetensors", device)?;
    let mut src = CheckpointSource::new(store, &config);
    let model = Transformer::load(&config, &mut src, device)?;
    Ok(Checkpoint {
        config,
        model,
        dir: PathBuf::new(),
    })
}

/// Whether `name` is the weight of a BitLinear layer: a projection of attention, the MLP or a
/// recurrent mixer (`mamba`, `linear_attn`; not Gated DeltaNet's full-precision gate projections
/// `a_proj`, `b_proj`).
fn is_bitlinear_weight(name: &str) -> bool {
    let gate = name.contains(".linear_attn.")
        && (name.ends_with(".a_proj.weight") || name.ends_with(".b_proj.weight"));
    !gate
        && name.starts_with("model.layers.")
        && name.ends_with("_proj.weight")
        && [".self_attn.", ".mlp.", ".mamba.", ".linear_attn."]
            .iter()
            .any(|p| name.contains(p))
}

/// The tensors of a packed (HF `bitlinear` / `offline`) checkpoint for these latent parameters.
pub fn packed_tensors(cfg: &Config, params: &Params) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, shape) in param_shapes(cfg) {
        let var = params
            .get(&name)
            .ok_or_else(|| Error::MissingTensor(name.clone()))?;
        let t = var.as_tensor().to_dtype(DType::F32)?;
        if is_bitlinear_weight(&name) {
            let (n, k) = (shape[0], shape[1]);
            let p = PackedLinear::from_latent(&t)?;
            let s = p.weight_scale();
            let packed =
                Tensor::from_vec(p.matrix().to_hf_packed(), (n.div_ceil(4), k), &Device::Cpu)?;
            let base = name.trim_end_matches(".weight");
            out.insert(
                format!("{base}.weight_scale"),
                Tensor::new(&[s], &Device::Cpu)?,
            );
            out.insert(name, packed);
        } else {
            out.insert(name, t.to_device(&Device::Cpu)?);
        }
    }
    Ok(out)
}

pub(crate) fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Writes a directory atomically: `fill` writes files into a temporary sibling directory, which
/// is fsynced and renamed to `dir` (replacing an existing one). A crash at any point leaves either
/// the old directory or the new one, never a partial one under `dir`'s name. A failed `fill` (a
/// full disk, a write error) removes the temporary directory and returns its error, leaving the
/// old directory as it was. Temporary siblings left by a writer that died (`.NAME.tmp-PID`,
/// `.NAME.old-PID`) are removed first: one process writes a given directory at a time.
pub fn write_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = dir
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} has no directory name", dir.display())))?
        .to_string_lossy()
        .to_string();
    remove_stale(parent, &[format!(".{name}.tmp-"), format!(".{name}.old-")])?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp).and_then(|()| sync_dir(&tmp)) {
        // Best effort: the write error is what the caller needs to see, and a directory that
        // could not be removed now is removed as stale by the next write.
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let had_old = dir.exists();
    if had_old {
        fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    sync_dir(parent)?;
    if had_old {
        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Removes the entries of `parent` whose names start with one of `prefixes` (directories or
/// files left by a writer that died).
pub fn remove_stale(parent: &Path, prefixes: &[String]) -> Result<()> {
    let rd = match fs::read_dir(parent) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(parent, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(parent, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Saves latent parameters as a packed inference checkpoint in `dir` (atomically), with the
/// tokenizer files copied from `tokenizer_dir` when given.
pub fn save_checkpoint(
    dir: &Path,
    cfg: &Config,
    params: &Params,
    tokenizer_dir: Option<&Path>,
) -> Result<()> {
    let tensors = packed_tensors(cfg, params)?;
    let config_json = serde_json::to_string_pretty(&cfg.to_config_file())
        .map_err(|e| Error::Invalid(format!("config serialisation: {e}")))?;
    write_dir_atomically(dir, |tmp| {
        write_file_synced(&tmp.join("config.json"), config_json.as_bytes())?;
        let st = tmp.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &st).map_err(|e| Error::Safetensors {
            path: st.clone(),
            msg: e.to_string(),
        })?;
        fs::File::open(&st)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&st, e))?;
        if let Some(td) = tokenizer_dir {
            for f in ["tokenizer.json", "tokenizer_config.json"] {
                let from = td.join(f);
                if from.exists() {
                    let bytes = fs::read(&from).map_err(|e| Error::io(&from, e))?;
                    write_file_synced(&tmp.join(f), &bytes)?;
                }
            }
        }
        Ok(())
    })
}
