//! `metrics.jsonl`, the run's log: one JSON object per line, a [`StepRecord`] per optimiser step
//! and an [`EvalRecord`] per evaluation, in the order they happened.
//!
//! The plots (`plot.rs`) and the tests read these rows by their field names, which must not
//! change. A resumed run first drops the rows past its checkpoint's step, so the file reads as
//! one uninterrupted run.

use super::TrainError;
use serde::Serialize;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One optimiser step's log record (a row of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// Steps completed including this one (1-based).
    pub step: u64,
    /// Mean training loss of the step's micro-batches.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Training tokens consumed so far.
    pub tokens: u64,
    /// Whether the BitLinear layers ran ternary.
    pub ternary: bool,
}

/// An evaluation record (a row of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct EvalRecord {
    pub step: u64,
    pub val_loss: f64,
    pub val_ppl: f64,
    pub val_tokens: u64,
    /// A recurrent-depth model's validation loss at 1..=8 iterations of its block (`val_loss` is
    /// at the config's `recurrent_iterations`); absent for other models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss_by_iterations: Option<Vec<f64>>,
}

/// `metrics.jsonl` open for appending rows.
pub(crate) struct MetricsLog {
    file: fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Open `path` for appending, first dropping rows past `step` (left by a run that was killed
    /// after its last checkpoint) and a torn last line. The kept rows are written to a temporary
    /// file that replaces `path` by a rename, so a kill while this runs loses no row.
    pub(crate) fn open(path: &Path, step: u64) -> Result<MetricsLog, TrainError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(TrainError::io(path, e)),
        };
        let mut kept = String::new();
        for l in text.lines().filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        }) {
            kept.push_str(l);
            kept.push('\n');
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        fs::write(&tmp, kept).map_err(|e| TrainError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
        let file = fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(MetricsLog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Append one row.
    pub(crate) fn write(&mut self, row: &impl Serialize) -> Result<(), TrainError> {
        let mut line = serde_json::to_string(row)
            .map_err(|e| TrainError::Config(format!("metrics serialisation: {e}")))?;
        line.push('\n');
        // One write call per row: a kill leaves whole rows, or a torn last one that `open` drops.
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}
