//! [`CandleDecoder`]: a decoder (`decoder::Decoder`, implemented there) over the model's own
//! candle path
//! (`Transformer::hidden_tensor_cache` with a [`TensorKvCache`] that holds attention keys and
//! values beside recurrent states). It runs what the CPU inference path does not: hybrid models
//! (Mamba-2, Gated DeltaNet layers) and Granite 4's switches. Slower than the CPU path's ternary
//! kernels (candle matmuls over dense or latent weights), and exact: it is the reference the other
//! paths are checked against.
//!
//! Must match: the full forward of the same tokens (`hybrid/model_tests.rs`).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layer::TensorKvCache;
use crate::transformer::Transformer;
use candle_core::{DType, Tensor};

/// One sequence decoded step by step on the candle path.
pub struct CandleDecoder {
    model: Transformer,
    cache: TensorKvCache,
}

impl CandleDecoder {
    pub fn new(model: &Transformer) -> Self {
        Self {
            cache: TensorKvCache::for_inference(model.cache_slots()),
            model: model.clone(),
        }
    }

    /// The cache (bytes held: attention keys and values plus recurrent states).
    pub fn cache(&self) -> &TensorKvCache {
        &self.cache
    }

    fn check_room(&self, t: usize) -> Result<()> {
        let max = self.model.config().max_position_embeddings;
        let has_attention = (0..self.model.config().num_layers)
            .any(|l| self.model.config().layer_kind(l) == crate::config::LayerKind::Attention);
        if t == 0 {
            return Err(Error::Invalid("no tokens to decode".into()));
        }
        if has_attention && self.cache.len() + t > max {
            return Err(Error::Invalid(format!(
                "the sequence would be {} tokens, past the model's {max} positions",
                self.cache.len() + t
            )));
        }
        Ok(())
    }

    /// Final-normed hidden states `[T, C]` of input embeddings `x` `[1, T, C]`.
    fn hidden(&mut self, x: &Tensor) -> Result<Tensor> {
        self.check_room(x.dim(1)?)?;
        let h = self.model.hidden_tensor_cache(x, &mut self.cache)?;
        Ok(h.squeeze(0)?)
    }

    fn ids_hidden(&mut self, ids: &[u32]) -> Result<Tensor> {
        let t = Tensor::from_slice(ids, (1, ids.len()), self.model.device())?;
        let x = self.model.embed(&t)?;
        self.hidden(&x)
    }

    fn embeds_hidden(&mut self, x: Vec<f32>) -> Result<Tensor> {
        let c = self.model.config().hidden_size;
        if x.is_empty() || !x.len().is_multiple_of(c) {
            return Err(Error::Invalid(format!(
                "input embeddings of {} values are not rows of {c}",
                x.len()
            )));
        }
        let t = x.len() / c;
        let x = Tensor::from_vec(x, (1, t, c), self.model.device())?;
        self.hidden(&x)
    }

    /// Logits of the last row (`all` false) or of every row of hidden states `h` `[T, C]`.
    fn logits(&self, h: &Tensor, all: bool) -> Result<Vec<f32>> {
        let h = h.clone();
        let t = h.dim(0)?;
        let h = if all {
            h.clone()
        } else {
            h.narrow(0, t - 1, 1)?
        };
        Ok(self
            .model
            .logits_from_hidden(&h.unsqueeze(0)?)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    pub fn config(&self) -> &Config {
        self.model.config()
    }

    /// The cache, to pad for benchmarks ([`TensorKvCache::pad_attention`]).
    pub fn cache_mut(&mut self) -> &mut TensorKvCache {
        &mut self.cache
    }

    /// Empties the cache.
    pub fn reset(&mut self) -> Result<()> {
        self.cache.clear();
        Ok(())
    }

    /// Appends `ids`; the logits of the last one (`all` false) or of each.
    pub fn forward(&mut self, ids: &[u32], all: bool) -> Result<Vec<f32>> {
        let h = self.ids_hidden(ids)?;
        self.logits(&h, all)
    }

    /// Appends input embeddings (rows of `hidden_size`); logits as [`Self::forward`].
    pub fn forward_embeds(&mut self, x: Vec<f32>, all: bool) -> Result<Vec<f32>> {
        let h = self.embeds_hidden(x)?;
        self.logits(&h, all)
    }

    /// Appends `ids`; the final hidden state of the last one.
    pub fn forward_hidden(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let h = self.ids_hidden(ids)?;
        Self::last_row(&h)
    }

    /// Appends input embeddings; the final hidden state of the last row.
    pub fn forward_embeds_hidden(&mut self, x: Vec<f32>) -> Result<Vec<f32>> {
        let h = self.embeds_hidden(x)?;
        Self::last_row(&h)
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Where it runs, for people.
    pub fn device_name(&self) -> String {
        match self.model.device() {
            candle_core::Device::Cpu => "cpu (candle path)".into(),
            d => format!("{:?} (candle path)", d.location()),
        }
    }

    fn last_row(h: &Tensor) -> Result<Vec<f32>> {
        let t = h.dim(0)?;
        Ok(h.narrow(0, t - 1, 1)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }
}
