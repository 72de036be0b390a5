//! Training (ROADMAP phase 6.2): from-scratch training and quantisation-aware training of the
//! same [`Transformer`](crate::Transformer) used for inference, with AdamW, warm-up + decay
//! schedules, gradient accumulation and clipping, validation, atomic resumable checkpoints and a
//! packed ternary export (`final/`) that `load_model` reads.
//!
//! The crate never prints: the loop reports through [`Observer`]; the binary draws the progress
//! bar. Resuming from a checkpoint must reproduce an uninterrupted run's losses exactly (CPU, same
//! seed): the checkpoint holds the latent weights, both Adam moments, the step and the data
//! position, and the data order is a pure function of (seed, position).

pub mod audio_text;
pub(crate) mod batch;
pub mod codec;
pub mod codec_distill;
pub mod config;
pub mod head_xent;
pub mod image_text;
pub mod latent;
pub mod latent_loop;
pub mod metrics;
pub mod optim;
mod optim_fused;
pub mod plot;
mod prefetch;
pub mod sample;
pub mod state;
pub mod trainer;
pub mod xent;

pub use config::{QatMode, TrainConfig};
pub use optim::{AdamW, AdamWParams};
pub use trainer::{Event, Observer, Outcome, StepRecord, Trainer};

use crate::bitlinear::BitWeights;
use crate::error::Result as ModelResult;
use crate::weights::{Params, WeightSource};
use candle_core::Tensor;
use std::path::PathBuf;

/// Errors of the trainer.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The training config is invalid.
    #[error("training config: {0}")]
    Config(String),
    /// A file of the run directory could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        /// The cause, in the message (not a `#[source]`: that would print it twice in the
        /// binary's one-line error chain).
        cause: std::io::Error,
    },
    /// A training checkpoint is missing, malformed or does not fit the model.
    #[error("loss plot: {0}")]
    Plot(String),
    #[error("training checkpoint: {0}")]
    Checkpoint(String),
    /// The device (`train.device` or `--device`) cannot be opened.
    #[error("{setting}: {msg}")]
    Device { setting: String, msg: String },
    /// The loss became NaN or infinite.
    #[error("loss is {loss} at step {step}: stopped; the last good checkpoint is kept ({last})")]
    NonFinite { step: u64, loss: f32, last: String },
    /// Model errors (loading, forward pass, saving).
    #[error(transparent)]
    Model(#[from] crate::Error),
    /// Data pipeline errors (shards, tokenizer).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Tensor errors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            cause: source,
        }
    }
}

/// Trainable parameters seen as full-precision linear layers (no ternary quantisation): the
/// baseline of the ternary-vs-full-precision comparison and the warm-up phase of
/// `fp_then_ternary`.
pub struct FullPrecision<'a>(pub &'a Params);

impl WeightSource for FullPrecision<'_> {
    fn dense(&mut self, name: &str, shape: &[usize]) -> ModelResult<Tensor> {
        let mut p = self.0;
        p.dense(name, shape)
    }

    fn contains(&self, name: &str) -> bool {
        (&self.0).contains(name)
    }

    fn bitlinear(&mut self, name: &str, out: usize, inp: usize) -> ModelResult<BitWeights> {
        Ok(BitWeights::Dense(
            self.dense(&format!("{name}.weight"), &[out, inp])?,
        ))
    }
}
