//! Refusing a checkpoint too large for this machine's memory before loading it. Loading holds
//! the checkpoint's tensors as read (every `*.safetensors` file of the directory, at their size
//! on disk) while the model's own form is built (the planner's weight bytes,
//! `tritter_model::plan::ModelDims::weight_bytes`), plus the planner's runtime overhead; the KV
//! cache grows with the conversation and is not counted here. Compared with the memory the
//! kernel says is available (`MemAvailable` of `/proc/meminfo`); where that is unknown (not
//! Linux) nothing is refused.
//!
//! Must match: the planner's numbers (`tritter plan --model DIR`), which the message quotes.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tritter_model::plan::{ModelDims, PlanOptions};

/// What loading the checkpoint in a directory needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadNeed {
    /// The checkpoint's tensor files as read.
    pub files: u64,
    /// The model as loaded (ternary weights packed, f16 embeddings), by the planner.
    pub weights: u64,
    /// The planner's runtime overhead.
    pub overhead: u64,
}

impl LoadNeed {
    pub fn total(&self) -> u64 {
        self.files + self.weights + self.overhead
    }
}

/// The need of the checkpoint in `dir` (its `config.json` and tensor files; nothing is loaded).
pub fn load_need(dir: &Path) -> Result<LoadNeed> {
    let cfg = tritter_model::Config::from_json_file(&dir.join("config.json"))?;
    let mut files = 0u64;
    let rd = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in rd {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".safetensors") {
            files += entry
                .metadata()
                .with_context(|| format!("reading {}", entry.path().display()))?
                .len();
        }
    }
    Ok(LoadNeed {
        files,
        weights: ModelDims::from_config(&cfg).weight_bytes(),
        overhead: PlanOptions::new(0).overhead,
    })
}

/// `MemAvailable` of `/proc/meminfo` in bytes, when the machine says.
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Fails, with the planner's numbers, when loading `dir` needs more than `available` bytes.
pub fn check(dir: &Path, available: Option<u64>) -> Result<()> {
    let Some(have) = available else {
        return Ok(());
    };
    let need = load_need(dir)?;
    if need.total() > have {
        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
        bail!(
            "{} needs about {:.2} GiB of memory to load ({:.2} GiB of tensor files as read, \
             {:.2} GiB of weights as loaded, {:.2} GiB overhead; see `tritter plan --model`), \
             but only {:.2} GiB is available; not loaded",
            dir.display(),
            gib(need.total()),
            gib(need.files),
            gib(need.weights),
            gib(need.overhead),
            gib(have)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_bigger_than_memory_is_refused_with_the_planners_numbers() {
        let dir = tempfile::tempdir().unwrap();
        crate::engine::model::tests::checkpoint(dir.path());
        let need = load_need(dir.path()).unwrap();
        // Independent statement: the file on disk and the planner's own figures.
        let file = std::fs::metadata(dir.path().join("model.safetensors"))
            .unwrap()
            .len();
        assert_eq!(need.files, file);
        let cfg = tritter_model::Config::from_json_file(&dir.path().join("config.json")).unwrap();
        assert_eq!(need.weights, ModelDims::from_config(&cfg).weight_bytes());
        assert_eq!(need.overhead, 512 << 20);
        check(dir.path(), Some(need.total())).unwrap();
        check(dir.path(), None).unwrap();
        let e = check(dir.path(), Some(need.total() - 1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs about 0.50 GiB") && e.contains("not loaded"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        assert!(available().is_some_and(|b| b > 0) || !Path::new("/proc/meminfo").exists());
    }
}
