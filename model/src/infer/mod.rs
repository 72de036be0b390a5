//! The transformer's inference path on the CPU for one sequence (B = 1): [`CpuModel`], built from
//! a loaded [`Transformer`] (its packed weights shared, not copied) with its own KV caches. The
//! same layers as the candle path (BitLinear on the packed kernels, norms, RoPE at absolute
//! positions, `layer.rs`), with attention on the fused kernels of [`crate::attn`] over one
//! [`attn::KvCache`](crate::attn::KvCache) per layer, so the cache can be f32/f16/bf16/INT4, roll
//! a sliding window and keep attention sinks. Must match `Transformer::forward` (tests:
//! `model/tests/infer_path.rs`, logits within 1e-4 relative with an f32 cache and no window) and
//! HF's incremental decode (`tests/golden_hf.rs`).
//!
//! The LM head can be kept in f16 or int8 ([`HeadKind`]) for decode: the f32 head dominates the
//! bytes per token of large-vocabulary models.

mod cache;
mod head;
mod layer;

pub use cache::{CacheOptions, InferenceCache, DEFAULT_SINKS};
pub use head::{gemv_f16, Head, HeadKind};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::rope::Rope;
use crate::transformer::Transformer;
use candle_core::{DType, Tensor};
use layer::{HostNorm, Layer};

/// The CPU inference model of one sequence: a transformer's weights in the slice form, its LM
/// head at a chosen precision and the KV caches of the sequence.
pub struct CpuModel {
    cfg: Config,
    /// The token embedding `[V, C]` (the model's tensor).
    embed: Tensor,
    /// The model's compute dtype (embeddings are rounded through it, as the candle path does).
    dtype: DType,
    rope: Rope,
    layers: Vec<Layer>,
    norm: HostNorm,
    /// The f32 head weights `[V, C]` the reduced heads are made from.
    head_weight: Tensor,
    head: Head,
    cache: InferenceCache,
}

impl CpuModel {
    /// The CPU path for `model` with the cache `config.json` asks for and the f32 head.
    pub fn new(model: &Transformer) -> Result<Self> {
        let opts = CacheOptions::from_config(model.config());
        Self::with_options(model, &opts, HeadKind::F32)
    }

    /// The CPU path for `model` with explicit cache options and head precision.
    pub fn with_options(model: &Transformer, cache: &CacheOptions, head: HeadKind) -> Result<Self> {
        let cfg = model.config().clone();
        let layers = model
            .layers("the CPU inference path")?
            .iter()
            .map(Layer::new)
            .collect::<Result<Vec<_>>>()?;
        let hidden = cfg.hidden_size;
        Ok(Self {
            embed: model.embeddings().clone(),
            dtype: model.compute_dtype(),
            rope: Rope::new(cfg.head_dim, cfg.rope_theta),
            layers,
            norm: HostNorm::new(model.final_norm())?,
            head_weight: model.head_weight().clone(),
            head: Head::new(model.head_weight(), head, hidden)?,
            cache: InferenceCache::new(&cfg, cache)?,
            cfg,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Chooses the LM head's precision (an f16 or int8 copy is made from the f32 weights).
    pub fn set_head(&mut self, kind: HeadKind) -> Result<()> {
        self.head = Head::new(&self.head_weight, kind, self.cfg.hidden_size)?;
        Ok(())
    }

    /// The head precision in use.
    pub fn head_kind(&self) -> HeadKind {
        self.head.kind()
    }

    /// Bytes of the LM head read per decoded token.
    pub fn head_bytes(&self) -> usize {
        self.head.bytes(self.cfg.vocab_size, self.cfg.hidden_size)
    }

    /// Starts a fresh sequence with a new cache of these options.
    pub fn set_cache(&mut self, opts: &CacheOptions) -> Result<()> {
        self.cache = InferenceCache::new(&self.cfg, opts)?;
        Ok(())
    }

    /// The caches of the current sequence.
    pub fn cache(&self) -> &InferenceCache {
        &self.cache
    }

    /// Starts a fresh sequence (a new cache with the same options).
    pub fn reset(&mut self) -> Result<()> {
        let opts = self.cache.options().clone();
        self.set_cache(&opts)
    }

    /// Appends `ids` and returns the logits of the last position (`all`: of every position,
    /// `[T][V]`).
    pub fn forward(&mut self, ids: &[u32], all: bool) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::Invalid("no tokens to run".into()));
        }
        let x = self.embed_rows(ids)?;
        self.forward_embeds(x, all)
    }

    /// Appends the input embeddings `x` `[T, C]` (latent mode, image/audio inputs) and returns
    /// the logits of the last position (`all`: of every position, `[T][V]`).
    pub fn forward_embeds(&mut self, x: Vec<f32>, all: bool) -> Result<Vec<f32>> {
        let c = self.cfg.hidden_size;
        let t = self.rows_of(&x)?;
        let h = self.hidden_rows(x, t)?;
        if !all {
            return self.head.logits(&h[(t - 1) * c..], self.cfg.vocab_size);
        }
        let mut out = Vec::with_capacity(t * self.cfg.vocab_size);
        for row in h.chunks_exact(c) {
            out.extend(self.head.logits(row, self.cfg.vocab_size)?);
        }
        Ok(out)
    }

    /// Appends `ids` and returns the final hidden state `[C]` of the last one: after the final
    /// norm, before the LM head (which is not run). Latent (Coconut) mode feeds this state back
    /// as the next input embedding, as the reference feeds the last entry of HF's
    /// `hidden_states`, which is after GPT-2's final layer norm.
    pub fn forward_hidden(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::Invalid("no tokens to run".into()));
        }
        let x = self.embed_rows(ids)?;
        self.forward_embeds_hidden(x)
    }

    /// Appends the input embeddings `x` `[T, C]` and returns the final hidden state `[C]` of the
    /// last position (see [`CpuModel::forward_hidden`]): one latent step when `x` is a thought.
    pub fn forward_embeds_hidden(&mut self, x: Vec<f32>) -> Result<Vec<f32>> {
        let c = self.cfg.hidden_size;
        let t = self.rows_of(&x)?;
        let mut h = self.hidden_rows(x, t)?;
        Ok(h.split_off((t - 1) * c))
    }

    /// Rows of `hidden_size` in `x`, which must be a whole, non-zero number of them.
    fn rows_of(&self, x: &[f32]) -> Result<usize> {
        let c = self.cfg.hidden_size;
        if x.is_empty() || !x.len().is_multiple_of(c) {
            return Err(Error::Invalid(format!(
                "input embeddings of {} values are not rows of {c} channels",
                x.len()
            )));
        }
        Ok(x.len() / c)
    }

    /// Final-normed hidden states `[1, T, C]` for input embeddings `[1, T, C]`, appended to the
    /// sequence (the inference path's form of `Transformer::hidden_from_embeds`).
    pub fn hidden(&mut self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        if b != 1 || c != self.cfg.hidden_size {
            return Err(Error::Invalid(format!(
                "the CPU inference path runs one sequence of {} channels, got [{b}, {t}, {c}]",
                self.cfg.hidden_size
            )));
        }
        let xv = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let h = self.hidden_rows(xv, t)?;
        Ok(Tensor::from_vec(h, (1, t, c), x.device())?)
    }

    /// The embeddings of `ids` as f32 rows `[T, C]`, through the compute dtype as
    /// `Transformer::embed` gives them.
    fn embed_rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let vocab = self.cfg.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id: bad, vocab });
        }
        let idx = Tensor::from_slice(ids, ids.len(), self.embed.device())?;
        Ok(self
            .embed
            .index_select(&idx, 0)?
            .to_dtype(self.dtype)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// Final-normed hidden rows `[T, C]` for embedding rows `[T, C]`.
    fn hidden_rows(&mut self, mut x: Vec<f32>, t: usize) -> Result<Vec<f32>> {
        let cache = &mut self.cache;
        if cache.layers.len() != self.layers.len() {
            return Err(Error::Invalid(format!(
                "cache has {} layers, model has {}",
                cache.layers.len(),
                self.layers.len()
            )));
        }
        if cache.seen() == 0 {
            cache.prefix_len = t;
        }
        let spec = cache.spec();
        for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
            layer.forward(&mut x, t, &self.rope, c, &spec)?;
        }
        self.norm.apply(&mut x, self.cfg.hidden_size);
        Ok(x)
    }
}
