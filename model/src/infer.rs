//! The transformer's inference path for one sequence (B = 1): the same layers as the candle
//! path in `transformer.rs` (BitLinear on the packed kernels, norms, RoPE at absolute positions),
//! with attention on the fused kernels of [`crate::attn`] over one [`attn::KvCache`] per layer, so
//! the cache can be f32/f16/bf16/INT4, roll a sliding window and keep attention sinks. Must match
//! `Transformer::forward(ids, None)` (tests: `model/tests/infer_path.rs`, logits within 1e-4
//! relative with an f32 cache and no window) and HF's incremental decode (`tests/golden_hf.rs`).
//!
//! The LM head can be kept in f16 ([`Head::F16`]) for decode: half the bytes per token of the f32
//! head, which dominates decode of large-vocabulary models.

use crate::attn::{self, AttentionMode, AttnShape, KvCacheConfig, KvKind, MaskSpec};
use crate::config::{Config, NormPlacement};
use crate::error::{Error, Result};
use crate::transformer::{Attention, Block, Transformer};
use candle_core::{DType, Tensor};
use half::f16;
use rayon::prelude::*;

/// Sinks kept when `use_attention_sinks` is set (StreamingLLM's choice).
pub const DEFAULT_SINKS: usize = 4;

fn attn_err(e: attn::AttnError) -> Error {
    Error::Invalid(format!("attention: {e}"))
}

/// Options of an [`InferenceCache`].
#[derive(Debug, Clone, PartialEq)]
pub struct CacheOptions {
    /// Storage of keys and values.
    pub kind: KvKind,
    /// Rolling window in tokens (sinks included); 0 keeps every token.
    pub window: usize,
    /// Attention sinks kept when the window rolls (needs `window > sinks`).
    pub sinks: usize,
}

impl CacheOptions {
    /// `config.json`'s choice: f32 storage, `sliding_window_size`, 4 sinks if
    /// `use_attention_sinks` (and a window).
    pub fn from_config(cfg: &Config) -> Self {
        let window = cfg.sliding_window_size;
        Self {
            kind: KvKind::F32,
            window,
            sinks: if cfg.use_attention_sinks && window > DEFAULT_SINKS {
                DEFAULT_SINKS
            } else {
                0
            },
        }
    }
}

/// The KV caches of all layers of one sequence, plus what the mask needs.
#[derive(Debug)]
pub struct InferenceCache {
    layers: Vec<attn::KvCache>,
    opts: CacheOptions,
    mode: AttentionMode,
    /// Length of the first chunk (the bidirectional prompt of `prefix_lm`).
    prefix_len: usize,
}

fn parse_mode(s: &str) -> Result<AttentionMode> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| Error::Invalid(format!("unknown attention_mode `{s}`")))
}

impl InferenceCache {
    /// Caches for every layer of `cfg` with these options.
    pub fn new(cfg: &Config, opts: &CacheOptions) -> Result<Self> {
        let layer = KvCacheConfig {
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            kind: opts.kind,
            window: opts.window,
            sinks: opts.sinks,
            rope_theta: Some(cfg.rope_theta as f32),
        };
        let layers = (0..cfg.num_layers)
            .map(|_| attn::KvCache::new(layer.clone()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(attn_err)?;
        Ok(Self {
            layers,
            opts: opts.clone(),
            mode: parse_mode(&cfg.attention_mode)?,
            prefix_len: 0,
        })
    }

    /// An f32 cache without a window (the fallback of `Transformer::new_cache`).
    pub fn unbounded(cfg: &Config) -> Self {
        let layer = KvCacheConfig {
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            kind: KvKind::F32,
            window: 0,
            sinks: 0,
            rope_theta: None,
        };
        Self {
            layers: (0..cfg.num_layers)
                .filter_map(|_| attn::KvCache::new(layer.clone()).ok())
                .collect(),
            opts: CacheOptions {
                kind: KvKind::F32,
                window: 0,
                sinks: 0,
            },
            mode: AttentionMode::Causal,
            prefix_len: 0,
        }
    }

    pub fn options(&self) -> &CacheOptions {
        &self.opts
    }

    /// Tokens held (at most the window).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens appended so far (the next token's absolute position).
    pub fn seen(&self) -> usize {
        self.layers.first().map_or(0, |c| c.seen())
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|c| c.clear());
        self.prefix_len = 0;
    }

    /// Bytes allocated by all layers.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|c| c.bytes_used()).sum()
    }

    fn spec(&self) -> MaskSpec {
        MaskSpec {
            mode: self.mode,
            window: self.opts.window,
            sinks: self.opts.sinks,
            prefix_len: self.prefix_len,
            doc_ids: None,
        }
    }
}

/// Precision of the LM head on the inference path.
#[derive(Debug, Clone, Default)]
pub enum Head {
    /// The f32 weights (candle matmul).
    #[default]
    F32,
    /// An f16 copy `[V, C]`, GEMV with f32 accumulation.
    F16(Vec<f16>),
}

impl Head {
    pub fn name(&self) -> &'static str {
        match self {
            Head::F32 => "f32",
            Head::F16(_) => "f16",
        }
    }
}

/// `out[r] = Σ_c w[r, c] · x[c]` for f16 rows; rows in parallel, 32-wide f32 partial sums.
pub fn gemv_f16(w: &[f16], x: &[f32], out: &mut [f32]) -> Result<()> {
    let c = x.len();
    if c == 0 || w.len() != out.len() * c {
        return Err(Error::Invalid(format!(
            "f16 GEMV: weights hold {} values, expected {} rows × {c}",
            w.len(),
            out.len()
        )));
    }
    const CHUNK: usize = 256;
    out.par_chunks_mut(16).enumerate().for_each(|(i, o)| {
        let mut buf = [0f32; CHUNK];
        for (j, y) in o.iter_mut().enumerate() {
            let row = &w[(i * 16 + j) * c..][..c];
            let mut acc = [0f32; 32];
            for (wc, xc) in row.chunks(CHUNK).zip(x.chunks(CHUNK)) {
                let b = &mut buf[..wc.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(wc, b);
                for (wb, xb) in b.chunks(32).zip(xc.chunks(32)) {
                    for ((a, p), q) in acc.iter_mut().zip(wb).zip(xb) {
                        *a += p * q;
                    }
                }
            }
            *y = acc.iter().sum();
        }
    });
    Ok(())
}

fn to_heads(t: &Tensor, heads: usize, len: usize, d: usize) -> Result<Vec<f32>> {
    // [1, T, H, D] → [H, T, D]
    Ok(t.reshape((len, heads, d))?
        .transpose(0, 1)?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

impl Attention {
    /// Attention of `x` `[1, T, C]` appended to `cache` (keys rotated at absolute positions).
    fn forward_infer(
        &self,
        x: &Tensor,
        rope: &crate::rope::Rope,
        cache: &mut attn::KvCache,
        spec: &MaskSpec,
    ) -> Result<Tensor> {
        let t = x.dim(1)?;
        let (h, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self.q_proj.forward(x)?.reshape((1, t, h, d))?;
        let k = self.k_proj.forward(x)?.reshape((1, t, hkv, d))?;
        let v = self.v_proj.forward(x)?.reshape((1, t, hkv, d))?;
        let q = match &self.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let offset = cache.seen();
        let q = rope.apply(&q.transpose(1, 2)?.contiguous()?, offset)?;
        let k = rope.apply(&k.transpose(1, 2)?.contiguous()?, offset)?;
        let qv = q.flatten_all()?.to_vec1::<f32>()?;
        let kv = k.flatten_all()?.to_vec1::<f32>()?;
        let vv = to_heads(&v, hkv, t, d)?;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; h * t * d];
        if cache.seen() == 0 {
            let mask = spec.mask().map_err(attn_err)?;
            let shape = AttnShape {
                heads: h,
                kv_heads: hkv,
                q_len: t,
                kv_len: t,
                head_dim: d,
            };
            attn::attention_prefill(&qv, &kv, &vv, shape, &mask, scale, 0, &mut out)
                .map_err(attn_err)?;
            cache.append(&kv, &vv, t).map_err(attn_err)?;
        } else {
            cache.append(&kv, &vv, t).map_err(attn_err)?;
            attn::attention_cached(&qv, h, t, cache, scale, &mut out).map_err(attn_err)?;
        }
        let y = Tensor::from_vec(out, (h, t, d), x.device())?
            .transpose(0, 1)?
            .reshape((1, t, h * d))?;
        let y = match &self.sub_norm {
            Some(n) => n.forward(&y)?,
            None => y,
        };
        self.o_proj.forward(&y)
    }
}

impl Block {
    fn forward_infer(
        &self,
        x: &Tensor,
        rope: &crate::rope::Rope,
        cache: &mut attn::KvCache,
        spec: &MaskSpec,
    ) -> Result<Tensor> {
        match self.placement {
            NormPlacement::Pre | NormPlacement::Subln => {
                let a = self
                    .attn
                    .forward_infer(&self.norm1.forward(x)?, rope, cache, spec)?;
                let h = (x + a)?;
                Ok((&h + self.mlp.forward(&self.norm2.forward(&h)?)?)?)
            }
            NormPlacement::SwinNorm => {
                let a = self.attn.forward_infer(x, rope, cache, spec)?;
                let h = (x + self.norm1.forward(&a)?)?;
                Ok((&h + self.norm2.forward(&self.mlp.forward(&h)?)?)?)
            }
        }
    }
}

impl Transformer {
    /// The inference path: final-normed hidden `[1, T, C]` for embeddings `[1, T, C]`.
    pub(crate) fn hidden_cached(&self, x: &Tensor, cache: &mut InferenceCache) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        if b != 1 {
            return Err(Error::Invalid(format!(
                "the cached inference path runs one sequence, got a batch of {b}"
            )));
        }
        if cache.layers.len() != self.blocks.len() {
            return Err(Error::Invalid(format!(
                "cache has {} layers, model has {}",
                cache.layers.len(),
                self.blocks.len()
            )));
        }
        if cache.seen() == 0 {
            cache.prefix_len = t;
        }
        let spec = cache.spec();
        let x = x.to_dtype(DType::F32)?;
        let mut h = x;
        for (block, c) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            h = block.forward_infer(&h, &self.rope, c, &spec)?;
        }
        self.norm.forward(&h)
    }

    /// Chooses the LM head of [`Transformer::forward_last`]: `"f32"` or `"f16"`.
    pub fn set_head(&mut self, kind: &str) -> Result<()> {
        self.head = match kind {
            "f32" => Head::F32,
            "f16" => {
                let w = self.lm_head.as_ref().unwrap_or(&self.embed);
                Head::F16(w.to_dtype(DType::F16)?.flatten_all()?.to_vec1::<f16>()?)
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown head precision `{other}` (expected f32 or f16)"
                )))
            }
        };
        Ok(())
    }

    /// The head precision in use.
    pub fn head_name(&self) -> &'static str {
        self.head.name()
    }

    /// Bytes of the LM head read per decoded token.
    pub fn head_bytes(&self) -> usize {
        let (v, c) = (self.cfg.vocab_size, self.cfg.hidden_size);
        match self.head {
            Head::F32 => v * c * 4,
            Head::F16(_) => v * c * 2,
        }
    }

    /// Bytes of packed ternary weights (all BitLinears) and of dense tensors (embedding, head,
    /// norms).
    pub fn weight_bytes(&self) -> (usize, usize) {
        let mut packed = 0;
        for b in &self.blocks {
            let a = &b.attn;
            let mut lins = vec![
                &a.q_proj,
                &a.k_proj,
                &a.v_proj,
                &a.o_proj,
                &b.mlp.up,
                &b.mlp.down,
            ];
            if let Some(g) = &b.mlp.gate {
                lins.push(g);
            }
            for l in lins {
                if let crate::bitlinear::BitWeights::Packed(p) = l.weights() {
                    packed += p.matrix().packed_bytes();
                }
            }
        }
        let dense =
            (self.embed.elem_count() + self.lm_head.as_ref().map_or(0, |t| t.elem_count())) * 4;
        (packed, dense)
    }

    /// Logits `[V]` of one final hidden row with the chosen head.
    pub(crate) fn head_logits(&self, h: &[f32]) -> Result<Vec<f32>> {
        match &self.head {
            Head::F32 => {
                let x = Tensor::from_slice(h, (1, h.len()), self.device())?;
                Ok(self
                    .logits_from_hidden(&x)?
                    .flatten_all()?
                    .to_vec1::<f32>()?)
            }
            Head::F16(w) => {
                let mut out = vec![0f32; self.cfg.vocab_size];
                gemv_f16(w, h, &mut out)?;
                Ok(out)
            }
        }
    }
}
