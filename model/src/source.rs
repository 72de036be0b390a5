//! The one interface a model is built through: [`WeightSource`] hands the loader each tensor it
//! names (HF BitNet names) with the shape the config implies. Checkpoints, trainable parameters,
//! random benchmark weights and the shape recorder behind `weights::param_shapes` implement it.

use crate::bitlinear::BitWeights;
use crate::error::Result;
use candle_core::Tensor;

/// Supplies the tensors a model is built from.
pub trait WeightSource {
    /// A full-precision tensor (embedding, norm, head) as f32 with the given shape.
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// The weights of a BitLinear `[out, in]` named `name` (without the `.weight` suffix).
    fn bitlinear(&mut self, name: &str, out: usize, inp: usize) -> Result<BitWeights>;
    /// Whether a tensor is present (for optional tensors).
    fn contains(&self, name: &str) -> bool;
}
