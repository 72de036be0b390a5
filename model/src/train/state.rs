//! Resumable training checkpoints: `checkpoints/step-NNNNNNNN/` in the run directory, holding
//! `params.safetensors` (f32 latent weights), `optim.safetensors` (`m.<name>`, `v.<name>`),
//! `state.json` (step, data position, tokens, seed). Written through
//! [`write_dir_atomically`](crate::checkpoint::write_dir_atomically) — every file fsynced, the
//! directory renamed into place — so a crash leaves either no `step-N` directory or a complete one;
//! half-written temporary directories start with `.` and are never picked up.

use super::optim::Moments;
use super::TrainError;
use crate::checkpoint::{remove_stale, write_dir_atomically};
use crate::config::Config;
use crate::weights::{param_shapes, Params};
use crate::Error;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Counters of a training run (everything but tensors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps completed.
    pub step: u64,
    /// Next position in the training data stream (sequences consumed).
    pub data_pos: u64,
    /// Training tokens consumed.
    pub tokens: u64,
    /// The run's seed (the data order and initialisation derive from it; no other RNG state
    /// exists: the stream is a pure function of seed and position).
    pub seed: u64,
}

const STATE: &str = "state.json";
const PARAMS: &str = "params.safetensors";
const OPTIM: &str = "optim.safetensors";

fn synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn save_tensors(map: &HashMap<String, Tensor>, path: &Path) -> Result<(), Error> {
    candle_core::safetensors::save(map, path).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// The directory name of the checkpoint after `step` steps.
pub fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// Write a training checkpoint atomically into `dir`.
pub fn save(
    dir: &Path,
    state: &TrainState,
    params: &Params,
    moments: &BTreeMap<String, Moments>,
) -> Result<(), TrainError> {
    let p: HashMap<String, Tensor> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let mut o = HashMap::new();
    for (k, m) in moments {
        o.insert(format!("m.{k}"), m.m.clone());
        o.insert(format!("v.{k}"), m.v.clone());
    }
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| TrainError::Checkpoint(format!("state serialisation: {e}")))?;
    write_dir_atomically(dir, |tmp| {
        save_tensors(&p, &tmp.join(PARAMS))?;
        save_tensors(&o, &tmp.join(OPTIM))?;
        // state.json last: a directory with it is complete even without the atomic rename.
        synced(&tmp.join(STATE), &json)
    })?;
    Ok(())
}

fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, TrainError> {
    candle_core::safetensors::load(path, device)
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", path.display())))
}

/// A loaded training checkpoint.
pub struct Loaded {
    pub state: TrainState,
    pub params: Params,
    pub moments: BTreeMap<String, Moments>,
}

/// Read the checkpoint in `dir` for a model with `cfg`, checking every tensor's presence and shape.
pub fn load(dir: &Path, cfg: &Config, device: &Device) -> Result<Loaded, TrainError> {
    let sp = dir.join(STATE);
    let text = fs::read(&sp).map_err(|e| TrainError::io(&sp, e))?;
    let state: TrainState = serde_json::from_slice(&text)
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", sp.display())))?;
    let mut pt = load_tensors(&dir.join(PARAMS), device)?;
    let mut ot = load_tensors(&dir.join(OPTIM), device)?;
    let mut params = Params::new();
    let mut moments = BTreeMap::new();
    for (name, shape) in param_shapes(cfg) {
        let take = |map: &mut HashMap<String, Tensor>, key: &str, file: &str| {
            let t = map.remove(key).ok_or_else(|| {
                TrainError::Checkpoint(format!("{}: {file} has no `{key}`", dir.display()))
            })?;
            if t.dims() != shape.as_slice() {
                return Err(TrainError::Checkpoint(format!(
                    "{}: `{key}` has shape {:?}, the model needs {shape:?}",
                    dir.display(),
                    t.dims()
                )));
            }
            Ok(t)
        };
        params.insert(&name, take(&mut pt, &name, PARAMS)?)?;
        let m = take(&mut ot, &format!("m.{name}"), OPTIM)?;
        let v = take(&mut ot, &format!("v.{name}"), OPTIM)?;
        moments.insert(name, Moments { m, v });
    }
    Ok(Loaded {
        state,
        params,
        moments,
    })
}

/// Completed checkpoints under `root`, oldest first (`step-N` directories with a `state.json`;
/// temporary `.step-N.tmp-*` directories are ignored).
pub fn list(root: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(TrainError::io(root, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| TrainError::io(root, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(n) = name
            .strip_prefix("step-")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if path.join(STATE).is_file() {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest completed checkpoint under `root`.
pub fn latest(root: &Path) -> Result<Option<(u64, PathBuf)>, TrainError> {
    Ok(list(root)?.pop())
}

/// Delete all but the newest `keep` checkpoints, and the temporary directories (`.step-…`) of
/// writes that died. A checkpoint is renamed to a hidden name before it is deleted, so a crash
/// mid-delete never leaves a partial `step-N` that [`list`] would take for a complete one.
pub fn prune(root: &Path, keep: usize) -> Result<(), TrainError> {
    let all = list(root)?;
    let n = all.len().saturating_sub(keep);
    for (step, p) in all.into_iter().take(n) {
        let doomed = root.join(format!(".step-{step:08}.del-{}", std::process::id()));
        fs::rename(&p, &doomed).map_err(|e| TrainError::io(&p, e))?;
        fs::remove_dir_all(&doomed).map_err(|e| TrainError::io(&doomed, e))?;
    }
    remove_stale(root, &[".step-".to_string()])?;
    Ok(())
}
