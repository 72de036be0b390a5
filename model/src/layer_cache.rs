//! The candle path's per-layer cache ([`TensorKvCache`]): keys and values of attention layers
//! (tensors in the model's compute dtype on its device, keys after RoPE) and the fixed-size
//! states of recurrent layers (Mamba-2, Gated DeltaNet), used by
//! `Transformer::hidden_tensor_cache`. The CPU inference path has its own (`infer::InferenceCache`).
//!
//! Two ways to hold keys and values: [`TensorKvCache::new`] concatenates (the tensors stay in the
//! autograd graph, as latent training needs), [`TensorKvCache::for_inference`] writes each step
//! into a buffer that doubles when full (`slice_set`, no gradient), so a decode step copies only
//! its own keys and values, not the whole context.
//!
//! Must hold: a sequence fed in pieces through the cache gives the hidden states of one full
//! forward (`hybrid/model_tests.rs`, `infer` tests), with either kind.

use crate::error::{Error, Result};
use crate::hybrid::{GdnState, Mamba2State};
use candle_core::Tensor;

/// What one layer holds between calls.
#[derive(Debug)]
pub enum LayerState {
    /// An attention layer's keys and values `[B, H_kv, S, D]`.
    Kv(Tensor, Tensor),
    /// An attention layer's keys and values in buffers `[B, H_kv, capacity, D]` of which the
    /// first `len` positions are held (inference caches).
    KvBuf {
        k: Tensor,
        v: Tensor,
        len: usize,
    },
    Mamba2(Mamba2State),
    GatedDeltaNet(GdnState),
}

impl Clone for LayerState {
    /// A copy that shares no storage: a buffer written in place must not change a clone.
    fn clone(&self) -> Self {
        match self {
            LayerState::KvBuf { k, v, len } => match (k.copy(), v.copy()) {
                (Ok(k), Ok(v)) => LayerState::KvBuf { k, v, len: *len },
                // Out of memory while copying: the clone falls back to the held part.
                _ => LayerState::Kv(k.clone(), v.clone()),
            },
            LayerState::Kv(k, v) => LayerState::Kv(k.clone(), v.clone()),
            LayerState::Mamba2(s) => LayerState::Mamba2(s.clone()),
            LayerState::GatedDeltaNet(s) => LayerState::GatedDeltaNet(s.clone()),
        }
    }
}

impl LayerState {
    /// Bytes held (the used part of a buffer).
    fn bytes(&self) -> usize {
        let b = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        match self {
            LayerState::Kv(k, v) => b(k) + b(v),
            LayerState::KvBuf { k, v, len } => {
                let cap = k.dim(2).unwrap_or(1).max(1);
                (b(k) + b(v)) / cap * len
            }
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
    /// Keys and values in growing buffers (no gradient) rather than concatenated.
    buffered: bool,
}

impl TensorKvCache {
    /// A cache whose keys and values stay differentiable (concatenated each call).
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
            buffered: false,
        }
    }

    /// A cache for decoding: keys and values written into buffers that double when full.
    pub fn for_inference(num_layers: usize) -> Self {
        Self {
            buffered: true,
            ..Self::new(num_layers)
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

    /// Grows every attention layer's keys and values by `tokens` random positions (normal, std 1)
    /// and counts them as held: for benchmarks that time one decode step at a long context
    /// without computing the prefill. Recurrent states are left as they are (their size does
    /// not depend on the context). Layers that have seen no token yet are left empty.
    pub fn pad_attention(&mut self, tokens: usize) -> Result<()> {
        for layer in 0..self.layers.len() {
            let shape = match &self.layers[layer] {
                Some(LayerState::Kv(k, _)) | Some(LayerState::KvBuf { k, .. }) => {
                    let (b, h, _, d) = k.dims4()?;
                    Some(((b, h, tokens, d), k.dtype(), k.device().clone()))
                }
                _ => None,
            };
            if let Some((shape, dtype, device)) = shape {
                let r = || -> Result<Tensor> {
                    Ok(Tensor::randn(0f32, 1f32, shape, &device)?.to_dtype(dtype)?)
                };
                self.append(layer, &r()?, &r()?)?;
            }
        }
        self.len += tokens;
        Ok(())
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
        let buffered = self.buffered;
        let slot = self.slot(layer)?;
        let state = match (slot.take(), buffered) {
            (None, false) => LayerState::Kv(k.clone(), v.clone()),
            (Some(LayerState::Kv(pk, pv)), false) => {
                LayerState::Kv(Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?)
            }
            (None, true) => LayerState::KvBuf {
                k: grown(None, k, k.dim(2)?)?,
                v: grown(None, v, v.dim(2)?)?,
                len: 0,
            }
            .with(k, v)?,
            (Some(s @ LayerState::KvBuf { .. }), true) => s.with(k, v)?,
            (Some(_), _) => return Err(mismatch(layer)),
        };
        let out = match &state {
            LayerState::Kv(k, v) => (k.clone(), v.clone()),
            LayerState::KvBuf { k, v, len } => (k.narrow(2, 0, *len)?, v.narrow(2, 0, *len)?),
            _ => return Err(mismatch(layer)),
        };
        *slot = Some(state);
        Ok(out)
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

impl LayerState {
    /// A buffer state with `k`, `v` written after its held positions (grown first if needed).
    fn with(self, k: &Tensor, v: &Tensor) -> Result<Self> {
        let LayerState::KvBuf {
            k: mut kb,
            v: mut vb,
            len,
        } = self
        else {
            return Err(Error::Invalid("not a key/value buffer".into()));
        };
        let t = k.dim(2)?;
        if len + t > kb.dim(2)? {
            let cap = (len + t).max(2 * kb.dim(2)?);
            kb = grown(Some((&kb, len)), k, cap)?;
            vb = grown(Some((&vb, len)), v, cap)?;
        }
        kb.slice_set(&k.contiguous()?, 2, len)?;
        vb.slice_set(&v.contiguous()?, 2, len)?;
        Ok(LayerState::KvBuf {
            k: kb,
            v: vb,
            len: len + t,
        })
    }
}

/// A zeroed buffer shaped like `like` with `cap` positions, holding the first `held` positions
/// of `old` when given.
fn grown(old: Option<(&Tensor, usize)>, like: &Tensor, cap: usize) -> Result<Tensor> {
    let (b, h, _, d) = like.dims4()?;
    let buf = Tensor::zeros((b, h, cap, d), like.dtype(), like.device())?;
    if let Some((old, held)) = old {
        if held > 0 {
            buf.slice_set(&old.narrow(2, 0, held)?.contiguous()?, 2, 0)?;
        }
    }
    Ok(buf)
}

fn mismatch(layer: usize) -> Error {
    Error::Invalid(format!(
        "cache layer {layer} holds another kind of layer's state (a cache from another model?)"
    ))
}
