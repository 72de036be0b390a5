//! The Tritter / BitNet b1.58 decoder-only transformer, matching HF transformers'
//! `BitNetForCausalLM` (`models/bitnet/modeling_bitnet.py`) for the default switches, plus
//! Tritter's own: norm placement (pre-norm, Chameleon swin-norm, BitNet SubLN), QK-Norm, gated
//! or ungated ReLU² / SwiGLU MLPs, tied or untied head. The layers are in `layer.rs`.
//!
//! Shapes: ids `[B, T]`, hidden `[B, T, C]`, heads `[B, H, T, D]`. This is the differentiable
//! candle path (training, and the reference the inference paths are tested against):
//! [`Transformer::forward`] over whole sequences, [`Transformer::hidden_tensor_cache`] for
//! incremental decoding with a [`TensorKvCache`] (keys stored after RoPE, so it equals the full
//! forward). Generation runs on the inference paths built from a loaded model: the CPU's
//! `infer::CpuModel` and the GPU's `gpu::GpuModel`, which read its weights through
//! [`Transformer::layers`].
//!
//! The candle path computes in the model's *compute dtype* (the embedding's dtype when loaded;
//! [`Transformer::with_compute_dtype`] changes it): f32, or bf16 for dense bf16 models and bf16
//! mixed-precision training over f32 master weights. Weights are cast to it where they are used
//! (the casts join the autograd graph, so gradients reach f32 parameters), while RMSNorm
//! statistics, the attention softmax, the logits and the loss are computed in f32. In f32 every
//! cast is a no-op. Nothing here assumes the CPU: the same code runs on any candle device.

use crate::attn::train_op::{KeyMask, TrainMask};
use crate::bitlinear::BitWeights;
use crate::config::Config;
use crate::error::{Error, Result};
pub use crate::layer::TensorKvCache;
use crate::layer::{Block, LayerView};
use crate::norm::RmsNorm;
use crate::rope::Rope;
use crate::source::WeightSource;
use candle_core::{DType, Device, Tensor};

/// The decoder-only transformer with its LM head (cloning shares the weight tensors).
#[derive(Clone)]
pub struct Transformer {
    cfg: Config,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Tensor>,
    rope: Rope,
    device: Device,
    /// The dtype the candle path computes in (see the module docs).
    dtype: DType,
    /// Iterations of the recurrent-depth block (`Config::hybrid.depth`; 1 without one).
    iterations: usize,
}

impl Transformer {
    /// Builds the model from a weight source (a checkpoint or trainable parameters).
    pub fn load(cfg: &Config, src: &mut dyn WeightSource, device: &Device) -> Result<Self> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        if let Some(d) = cfg.hybrid.depth {
            if !(d.start < d.end && d.end <= cfg.num_layers && d.iterations > 0) {
                return Err(Error::config(
                    "recurrent_block",
                    format!(
                        "[{}, {}] with {} iterations does not fit {} layers",
                        d.start, d.end, d.iterations, cfg.num_layers
                    ),
                ));
            }
        }
        let embed = src.dense("model.embed_tokens.weight", &[v, h])?;
        let blocks = (0..cfg.num_layers)
            .map(|l| Block::load(src, cfg, l))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(src.dense("model.norm.weight", &[h])?, cfg.rms_norm_eps);
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(src.dense("lm_head.weight", &[v, h])?)
        };
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
        let dtype = embed.dtype();
        Ok(Self {
            iterations: cfg.hybrid.depth.map_or(1, |d| d.iterations),
            cfg: cfg.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            rope,
            device: device.clone(),
            dtype,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype the candle path computes in.
    pub fn compute_dtype(&self) -> DType {
        self.dtype
    }

    /// The same model computing in `dtype` on the candle path (F32, BF16 or F16): weights keep
    /// their own dtype and are cast where used, so for f32 parameters and `BF16` this is bf16
    /// mixed precision with gradients flowing back to the f32 parameters.
    pub fn with_compute_dtype(mut self, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::Invalid(format!(
                "compute dtype {dtype:?}: expected F32, BF16 or F16"
            )));
        }
        self.dtype = dtype;
        Ok(self)
    }

    /// The same model running its recurrent-depth block `r` times (a model without one refuses
    /// any `r` but 1).
    pub fn with_iterations(mut self, r: usize) -> Result<Self> {
        if r == 0 || (self.cfg.hybrid.depth.is_none() && r != 1) {
            return Err(Error::Invalid(format!(
                "{r} iterations: the model {} (1 or more with a recurrent_block)",
                if self.cfg.hybrid.depth.is_some() {
                    "needs at least 1"
                } else {
                    "has no recurrent-depth block"
                }
            )));
        }
        self.iterations = r;
        Ok(self)
    }

    /// Iterations of the recurrent-depth block.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// Cache slots a [`TensorKvCache`] for this model needs: one per layer run.
    pub fn cache_slots(&self) -> usize {
        self.cfg.layer_schedule(self.iterations).len()
    }

    /// Every layer's weights, in order, for the inference paths that run attention-only models
    /// with RoPE and no Granite multipliers; a model needing the candle path
    /// ([`Config::needs_candle_path`]) is refused with the reason, naming `what` asked.
    pub fn layers(&self, what: &str) -> Result<Vec<LayerView<'_>>> {
        if self.cfg.needs_candle_path() {
            return Err(Error::Invalid(format!(
                "{what} runs attention-only BitNet models; this one has {} (it runs on the \
                 candle path)",
                candle_only_features(&self.cfg)
            )));
        }
        self.blocks
            .iter()
            .enumerate()
            .map(|(l, b)| {
                b.view().ok_or_else(|| {
                    Error::Invalid(format!("{what}: layer {l} is not an attention layer"))
                })
            })
            .collect()
    }

    /// The token embedding `[V, C]`.
    pub fn embeddings(&self) -> &Tensor {
        &self.embed
    }

    /// The LM head's weight `[V, C]`: the untied head, or the embedding when tied.
    pub fn head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The norm after the last layer.
    pub fn final_norm(&self) -> &RmsNorm {
        &self.norm
    }

    /// Bytes of packed ternary weights (all BitLinears) and of dense tensors (embedding, head,
    /// norms).
    pub fn weight_bytes(&self) -> (usize, usize) {
        let mut packed = 0;
        for l in self.blocks.iter().flat_map(Block::linears) {
            if let BitWeights::Packed(p) = l.weights() {
                packed += p.matrix().packed_bytes();
            }
        }
        let dense =
            (self.embed.elem_count() + self.lm_head.as_ref().map_or(0, |t| t.elem_count())) * 4;
        (packed, dense)
    }

    /// Token embeddings `[B, T, C]` of ids `[B, T]` (u32) in the compute dtype, checking the ids'
    /// range.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let flat = ids.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        if let Some(&bad) = flat.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            return Err(Error::TokenOutOfRange {
                id: bad,
                vocab: self.cfg.vocab_size,
            });
        }
        let (b, t) = ids.dims2()?;
        let idx = ids.to_dtype(DType::U32)?.flatten_all()?;
        Ok(self
            .embed
            .index_select(&idx, 0)?
            .reshape((b, t, self.cfg.hidden_size))?
            .to_dtype(self.dtype)?)
    }

    fn check_channels(&self, x: &Tensor) -> Result<()> {
        let c = x.dims3()?.2;
        if c != self.cfg.hidden_size {
            return Err(Error::Invalid(format!(
                "input embeddings have {c} channels, model has {}",
                self.cfg.hidden_size
            )));
        }
        Ok(())
    }

    /// Final-normed hidden states `[B, T, C]` for input embeddings `[B, T, C]`: the full
    /// (training) forward on candle ops.
    pub fn hidden_from_embeds(&self, x: &Tensor) -> Result<Tensor> {
        self.hidden_from_embeds_masked(x, None)
    }

    /// [`Transformer::hidden_from_embeds`] with `blocked` `[B, T, T]` (u8, 1 = the key is
    /// hidden from the query) in place of the built-in causal (and window) mask: the whole mask
    /// of a packed batch ([`Transformer::packed_mask`]).
    pub fn hidden_from_embeds_masked(
        &self,
        x: &Tensor,
        blocked: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.hidden_with_mask(x, blocked.map(KeyMask::Blocked))
    }

    /// [`Transformer::hidden_from_embeds`] with `mask` in place of the built-in one.
    fn hidden_with_mask(&self, x: &Tensor, mask: Option<KeyMask>) -> Result<Tensor> {
        self.check_channels(x)?;
        let mut h = self.enter(x)?;
        for l in self.cfg.layer_schedule(self.iterations) {
            h = self.blocks[l].forward(&h, &self.rope, 0, None, mask)?;
        }
        self.norm.forward(&h)
    }

    /// Final-normed hidden states through the candle path with a tensor cache (any batch size;
    /// the reference the inference path is tested against).
    pub fn hidden_tensor_cache(&self, x: &Tensor, cache: &mut TensorKvCache) -> Result<Tensor> {
        self.check_channels(x)?;
        let t = x.dim(1)?;
        let offset = cache.len();
        let mut h = self.enter(x)?;
        for (slot, l) in self
            .cfg
            .layer_schedule(self.iterations)
            .into_iter()
            .enumerate()
        {
            h = self.blocks[l].forward(&h, &self.rope, offset, Some((&mut *cache, slot)), None)?;
        }
        cache.advance(t);
        self.norm.forward(&h)
    }

    /// The input of the first layer: embeddings in the compute dtype, times Granite's
    /// `embedding_multiplier` (1 elsewhere; HF multiplies `inputs_embeds` alike).
    fn enter(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(self.dtype)?;
        match self.cfg.hybrid.scales.embedding {
            1.0 => Ok(x),
            m => Ok((x * m)?),
        }
    }

    /// Logits `[B, T, V]` from final hidden states (candle matmul in the hidden states' dtype,
    /// returned as f32; divided by Granite's `logits_scaling`).
    pub fn logits_from_hidden(&self, h: &Tensor) -> Result<Tensor> {
        let w = self.head_weight();
        let logits = h
            .broadcast_matmul(&w.to_dtype(h.dtype())?.t()?)?
            .to_dtype(DType::F32)?;
        match self.cfg.hybrid.scales.logits_divisor {
            1.0 => Ok(logits),
            d => Ok((logits / d)?),
        }
    }

    /// Logits `[B, T, V]` for input embeddings `[B, T, C]` (latent mode, image/audio inputs).
    pub fn forward_embeds(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.hidden_from_embeds(x)?;
        self.logits_from_hidden(&h)
    }

    /// Logits `[B, T, V]` for ids `[B, T]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.embed(ids)?;
        self.forward_embeds(&x)
    }

    /// A text embedding: the mean over positions of the final-normed hidden states of ids `[1, T]`
    /// (attention is bidirectional when the config's `attention_mode` is `embedding`).
    pub fn embedding(&self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::Invalid("no tokens to embed".into()));
        }
        let t = Tensor::from_slice(ids, (1, ids.len()), &self.device)?;
        let h = self.hidden_from_embeds(&self.embed(&t)?)?;
        Ok(h.to_dtype(DType::F32)?
            .squeeze(0)?
            .mean(0)?
            .to_vec1::<f32>()?)
    }

    /// Logits `[B, T, V]` of packed ids `[B, T]` whose positions belong to the documents `docs`
    /// `[B, T]`: each position attends only to its own document ([`document_mask`]). Positions
    /// keep their place in the sequence (RoPE depends on the distance between positions only, so
    /// a document's logits equal those of the document run alone, up to rounding).
    pub fn forward_docs(&self, ids: &Tensor, docs: &Tensor) -> Result<Tensor> {
        self.forward_packed(ids, docs, None)
    }

    /// [`Transformer::forward_docs`] with per-token flags `[B, T]` (the shards' flag channel):
    /// under `prefix_lm` each document's [`FLAG_PREFIX`](crate::data::chat::FLAG_PREFIX) tokens
    /// attend bidirectionally; the window and sinks of the config apply (the mask of
    /// [`Self::packed_mask`], passed to the layers as a [`TrainMask`]).
    pub fn forward_packed(
        &self,
        ids: &Tensor,
        docs: &Tensor,
        flags: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.logits_from_hidden(&self.hidden_packed(ids, docs, flags)?)
    }

    /// The final hidden states `[B, T, C]` of [`Self::forward_packed`].
    fn hidden_packed(&self, ids: &Tensor, docs: &Tensor, flags: Option<&Tensor>) -> Result<Tensor> {
        let x = self.embed(ids)?;
        let mask = self.train_mask(docs, flags)?;
        self.hidden_with_mask(&x, Some(KeyMask::Train(&mask)))
    }

    /// The mask of packed rows as the layers take it: a description (the fused CPU attention
    /// reads it; the composed path builds [`Self::packed_mask`]'s tensor from it).
    fn train_mask(&self, docs: &Tensor, flags: Option<&Tensor>) -> Result<TrainMask> {
        let b = docs.dim(0)?;
        let docs = docs.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let flags = match flags {
            Some(f) => f.to_dtype(DType::U32)?.to_vec2::<u32>()?,
            None => vec![vec![]; b],
        };
        TrainMask::packed(self.packed_spec(), &docs, &flags)
    }

    fn packed_spec(&self) -> crate::attn::packed::PackedSpec {
        crate::attn::packed::PackedSpec {
            mode: self.cfg.attention_mode,
            window: self.cfg.sliding_window_size,
            sinks: if self.cfg.use_attention_sinks {
                crate::config::ATTENTION_SINKS
            } else {
                0
            },
        }
    }

    /// The whole attention mask `[B, T, T]` (u8, 1 = hidden) of packed rows with document ids
    /// `docs` and flags `flags` `[B, T]`: each document masked as the inference path masks it
    /// alone (the config's `attention_mode`, `sliding_window_size`, sinks; `attn::packed`).
    pub fn packed_mask(&self, docs: &Tensor, flags: Option<&Tensor>) -> Result<Tensor> {
        let (b, t) = docs.dims2()?;
        let docs = docs.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let flags = match flags {
            Some(f) => f.to_dtype(DType::U32)?.to_vec2::<u32>()?,
            None => vec![vec![]; b],
        };
        let spec = self.packed_spec();
        let mut out = Vec::with_capacity(b * t * t);
        for (d, f) in docs.iter().zip(&flags) {
            out.extend(
                crate::attn::packed::blocked_row(d, f, spec)
                    .map_err(|e| Error::Invalid(e.to_string()))?,
            );
        }
        Ok(Tensor::from_vec(out, (b, t, t), &self.device)?)
    }
}

/// What in `cfg` only the candle path runs, for people: "2 mamba2 layers, no RoPE".
pub fn candle_only_features(cfg: &Config) -> String {
    use crate::config::{LayerKind, MlpLayout};
    let mut out = vec![];
    for kind in [LayerKind::Mamba2, LayerKind::GatedDeltaNet] {
        let n = (0..cfg.num_layers)
            .filter(|&l| cfg.layer_kind(l) == kind)
            .count();
        if n > 0 {
            out.push(format!(
                "{n} {} layer{}",
                kind.name(),
                if n == 1 { "" } else { "s" }
            ));
        }
    }
    let h = &cfg.hybrid;
    if let Some(d) = h.depth {
        out.push(format!(
            "a recurrent-depth block (layers {}..{})",
            d.start, d.end
        ));
    }
    if !h.scales.is_default() {
        out.push("Granite's multipliers".into());
    }
    if !h.use_rope {
        out.push("no RoPE".into());
    }
    if h.mlp_layout == MlpLayout::Fused {
        out.push("a fused shared_mlp".into());
    }
    out.join(", ")
}

/// The document mask of packed sequences: `[B, T, T]` u8, 1 where query `i` and key `j` belong to
/// different documents (`docs` `[B, T]` u32, one id per position, as the shard format stores them).
/// The packed forward masks with [`TrainMask::packed`] instead, which adds the causal part and
/// the window (and equals [`Transformer::packed_mask`]).
pub fn document_mask(docs: &Tensor) -> Result<Tensor> {
    let (b, t) = docs.dims2()?;
    let q = docs.unsqueeze(2)?.broadcast_as((b, t, t))?;
    let k = docs.unsqueeze(1)?.broadcast_as((b, t, t))?;
    Ok(q.ne(&k)?)
}

mod loss;
pub use loss::{
    cross_entropy, cross_entropy_composed, cross_entropy_weighted, cross_entropy_weighted_composed,
};

#[cfg(test)]
mod doc_tests;
