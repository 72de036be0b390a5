//! The candle path's per-layer cache ([`TensorKvCache`]): keys and values of attention layers
//! (tensors in the model's compute dtype on its device, keys after RoPE) and the fixed-size
//! states of recurrent layers (Mamba-2, Gated DeltaNet), used by
//! `Transformer::hidden_tensor_cache`. The CPU inference path has its own (`infer::InferenceCache`).
//!
//! Must hold: a sequence fed in pieces through the cache gives the hidden states of one full
//! forward (`hybrid/model_tests.rs`, `infer` tests).

use crate::error::{Error, Result};
use crate::hybrid::{GdnState, Mamba2State};
use candle_core::Tensor;

/// What one layer holds between calls.
#[derive(Debug, Clone)]
pub enum LayerState {
    /// An attention layer's keys and values `[B, H_kv, S, D]`.
    Kv(Tensor, Tensor),
    Mamba2(Mamba2State),
    GatedDeltaNet(GdnState),
}

impl LayerState {
    fn bytes(&self) -> usize {
        let b = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        match self {
            LayerState::Kv(k, v) => b(k) + b(v),
            LayerState::Mamba2(s) => b(&s.conv) + b(&s.ssm),
            LayerState::GatedDeltaNet(s) => b(&s.conv) + b(&s.s),
        }
    }
}

/// Per-layer cache of the candle path: attention keys and values grow with the sequence,
/// recurrent states do not.
#[derive(Debug, Clone, Default)]
pub struct TensorKvCache {
    layers: Vec<Option<LayerState>>,
    len: usize,
}

impl TensorKvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }

    /// Bytes held by the cached tensors and states.
    pub fn bytes(&self) -> usize {
        self.layers.iter().flatten().map(LayerState::bytes).sum()
    }

    /// Bytes held by layer `l` (0 before its first token).
    pub fn layer_bytes(&self, l: usize) -> usize {
        self.layers
            .get(l)
            .and_then(Option::as_ref)
            .map_or(0, LayerState::bytes)
    }

    /// Records `t` more tokens once every layer has appended them.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    fn slot(&mut self, layer: usize) -> Result<&mut Option<LayerState>> {
        self.layers
            .get_mut(layer)
            .ok_or_else(|| Error::Invalid(format!("cache has no layer {layer}")))
    }

    /// Appends keys and values to attention layer `layer` and returns all of them.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let slot = self.slot(layer)?;
        let kv = match slot.take() {
            None => (k.clone(), v.clone()),
            Some(LayerState::Kv(pk, pv)) => {
                (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?)
            }
            Some(_) => return Err(mismatch(layer)),
        };
        *slot = Some(LayerState::Kv(kv.0.clone(), kv.1.clone()));
        Ok(kv)
    }

    /// The Mamba-2 state of layer `layer` (`None` before its first token).
    pub(crate) fn mamba2(&self, layer: usize) -> Result<Option<&Mamba2State>> {
        match self.layers.get(layer) {
            None => Err(Error::Invalid(format!("cache has no layer {layer}"))),
            Some(None) => Ok(None),
            Some(Some(LayerState::Mamba2(s))) => Ok(Some(s)),
            Some(Some(_)) => Err(mismatch(layer)),
        }
    }

    /// The Gated DeltaNet state of layer `layer` (`None` before its first token).
    pub(crate) fn gdn(&self, layer: usize) -> Result<Option<&GdnState>> {
        match self.layers.get(layer) {
            None => Err(Error::Invalid(format!("cache has no layer {layer}"))),
            Some(None) => Ok(None),
            Some(Some(LayerState::GatedDeltaNet(s))) => Ok(Some(s)),
            Some(Some(_)) => Err(mismatch(layer)),
        }
    }

    /// Replaces layer `layer`'s recurrent state.
    pub(crate) fn set(&mut self, layer: usize, state: LayerState) -> Result<()> {
        *self.slot(layer)? = Some(state);
        Ok(())
    }
}

fn mismatch(layer: usize) -> Error {
    Error::Invalid(format!(
        "cache layer {layer} holds another kind of layer's state (a cache from another model?)"
    ))
}
