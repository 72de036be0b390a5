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
use crate::bitlinear::{BitLinear, BitWeights};
use crate::config::Activation;
use crate::config::{Config, NormPlacement};
use crate::error::{Error, Result};
use crate::norm::RmsNorm;
use crate::transformer::{Attention, Block, Mlp, Transformer};
use candle_core::{DType, Tensor};
use half::f16;

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
    /// An int8 copy with one scale per row (a quarter of the f32 bytes).
    Int8(tritter_kernels::I8Rows),
}

impl Head {
    pub fn name(&self) -> &'static str {
        match self {
            Head::F32 => "f32",
            Head::F16(_) => "f16",
            Head::Int8(_) => "int8",
        }
    }
}

/// `out[r] = Σ_c w[r, c] · x[c]` for f16 rows (`tritter_kernels::gemv_f16`).
pub fn gemv_f16(w: &[f16], x: &[f32], out: &mut [f32]) -> Result<()> {
    tritter_kernels::gemv_f16(w, x, out).map_err(|e| Error::Kernel(format!("f16 head: {e}")))
}

/// `w · x / sqrt(mean(x²) + eps)` over rows of `dim` (as `RmsNorm::forward`, on slices).
fn rms_rows(x: &mut [f32], dim: usize, w: &[f32], eps: f64) {
    for row in x.chunks_exact_mut(dim) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let inv = 1.0 / (ms + eps as f32).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v = *v * inv * g;
        }
    }
}

fn norm_vec(n: &RmsNorm) -> Result<Vec<f32>> {
    Ok(n.weight()
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

fn rms(n: &RmsNorm, x: &[f32], dim: usize) -> Result<Vec<f32>> {
    let mut y = x.to_vec();
    rms_rows(&mut y, dim, &norm_vec(n)?, n.eps());
    Ok(y)
}

/// A BitLinear on `m` rows of `x`: packed weights straight on the kernels, latent ones through
/// the candle form.
fn linear(l: &BitLinear, x: &[f32], m: usize) -> Result<Vec<f32>> {
    let k = x.len() / m.max(1);
    let normed;
    let x = match l.norm() {
        Some(n) => {
            normed = rms(n, x, k)?;
            &normed[..]
        }
        None => x,
    };
    match l.weights() {
        BitWeights::Packed(p) => {
            let w = p.matrix();
            if w.k() != k {
                return Err(Error::Invalid(format!(
                    "BitLinear input has {k} features, weights expect {}",
                    w.k()
                )));
            }
            let mut out = vec![0f32; m * w.n()];
            tritter_kernels::ternary_matmul(w, p.weight_scale(), x, m, &mut out)
                .map_err(|e| Error::Kernel(e.to_string()))?;
            Ok(out)
        }
        BitWeights::Latent(_) | BitWeights::Dense(_) => {
            let t = Tensor::from_slice(x, (m, k), &candle_core::Device::Cpu)?;
            let plain = BitLinear::new(l.weights().clone(), None);
            Ok(plain.forward(&t)?.flatten_all()?.to_vec1::<f32>()?)
        }
    }
}

/// `[T, H, D]` → `[H, T, D]`.
fn to_heads(x: &[f32], t: usize, h: usize, d: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for i in 0..t {
        for j in 0..h {
            y[(j * t + i) * d..][..d].copy_from_slice(&x[(i * h + j) * d..][..d]);
        }
    }
    y
}

/// HF rotate-half RoPE of `[H, T, D]` at positions `offset..offset+T` (as `Rope::apply`).
fn rope_heads(x: &mut [f32], t: usize, d: usize, theta: f64, offset: usize) {
    let half = d / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1f32 / (theta as f32).powf((2 * i) as f32 / d as f32))
        .collect();
    let tables: Vec<(f32, f32)> = (0..t)
        .flat_map(|p| {
            let pos = (offset + p) as f32;
            inv.iter().map(move |f| (pos * f).sin_cos())
        })
        .collect();
    for (r, row) in x.chunks_exact_mut(d).enumerate() {
        let tab = &tables[(r % t) * half..][..half];
        for (i, &(s, c)) in tab.iter().enumerate() {
            let (a, b) = (row[i], row[i + half]);
            row[i] = a * c - b * s;
            row[i + half] = b * c + a * s;
        }
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

impl Attention {
    /// Attention of `x` `[T, C]` appended to `cache` (keys rotated at absolute positions).
    fn forward_infer(
        &self,
        x: &[f32],
        t: usize,
        theta: f64,
        cache: &mut attn::KvCache,
        spec: &MaskSpec,
    ) -> Result<Vec<f32>> {
        let (h, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let mut q = linear(&self.q_proj, x, t)?;
        let mut k = linear(&self.k_proj, x, t)?;
        let v = linear(&self.v_proj, x, t)?;
        if let Some(n) = &self.q_norm {
            rms_rows(&mut q, d, &norm_vec(n)?, n.eps());
        }
        if let Some(n) = &self.k_norm {
            rms_rows(&mut k, d, &norm_vec(n)?, n.eps());
        }
        let offset = cache.seen();
        let mut qv = to_heads(&q, t, h, d);
        let mut kv = to_heads(&k, t, hkv, d);
        let vv = to_heads(&v, t, hkv, d);
        rope_heads(&mut qv, t, d, theta, offset);
        rope_heads(&mut kv, t, d, theta, offset);
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
        // [H, T, D] → [T, H·D]
        let mut y = vec![0f32; t * h * d];
        for j in 0..h {
            for i in 0..t {
                y[(i * h + j) * d..][..d].copy_from_slice(&out[(j * t + i) * d..][..d]);
            }
        }
        if let Some(n) = &self.sub_norm {
            rms_rows(&mut y, h * d, &norm_vec(n)?, n.eps());
        }
        linear(&self.o_proj, &y, t)
    }
}

impl Mlp {
    fn forward_infer(&self, x: &[f32], t: usize) -> Result<Vec<f32>> {
        let act = |v: f32| match self.act {
            Activation::Relu2 => {
                let r = v.max(0.0);
                r * r
            }
            Activation::Silu => v / (1.0 + (-v).exp()),
        };
        let mut hdn = linear(&self.up, x, t)?;
        match &self.gate {
            Some(g) => {
                let gv = linear(g, x, t)?;
                hdn.iter_mut().zip(&gv).for_each(|(u, g)| *u *= act(*g));
            }
            None => hdn.iter_mut().for_each(|u| *u = act(*u)),
        }
        if let Some(n) = &self.sub_norm {
            let dim = hdn.len() / t.max(1);
            rms_rows(&mut hdn, dim, &norm_vec(n)?, n.eps());
        }
        linear(&self.down, &hdn, t)
    }
}

impl Block {
    fn forward_infer(
        &self,
        x: &mut [f32],
        t: usize,
        theta: f64,
        cache: &mut attn::KvCache,
        spec: &MaskSpec,
    ) -> Result<()> {
        let c = x.len() / t.max(1);
        match self.placement {
            NormPlacement::Pre | NormPlacement::Subln => {
                let a = self
                    .attn
                    .forward_infer(&rms(&self.norm1, x, c)?, t, theta, cache, spec)?;
                add(x, &a);
                let f = self.mlp.forward_infer(&rms(&self.norm2, x, c)?, t)?;
                add(x, &f);
            }
            NormPlacement::SwinNorm => {
                let a = self.attn.forward_infer(x, t, theta, cache, spec)?;
                add(x, &rms(&self.norm1, &a, c)?);
                let f = self.mlp.forward_infer(x, t)?;
                add(x, &rms(&self.norm2, &f, c)?);
            }
        }
        Ok(())
    }
}

impl Transformer {
    /// The inference path: final-normed hidden `[1, T, C]` for embeddings `[1, T, C]`.
    pub(crate) fn hidden_cached(&self, x: &Tensor, cache: &mut InferenceCache) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        if b != 1 {
            return Err(Error::Invalid(format!(
                "the cached inference path runs one sequence, got a batch of {b}"
            )));
        }
        let xv = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let h = self.hidden_rows(xv, t, cache)?;
        Ok(Tensor::from_vec(h, (1, t, c), x.device())?)
    }

    /// The inference path on rows: final-normed hidden `[T, C]` for embeddings `[T, C]`.
    pub(crate) fn hidden_rows(
        &self,
        mut x: Vec<f32>,
        t: usize,
        cache: &mut InferenceCache,
    ) -> Result<Vec<f32>> {
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
        let theta = self.cfg.rope_theta;
        for (block, c) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            block.forward_infer(&mut x, t, theta, c, &spec)?;
        }
        rms_rows(
            &mut x,
            self.cfg.hidden_size,
            &norm_vec(&self.norm)?,
            self.norm.eps(),
        );
        Ok(x)
    }

    /// Chooses the LM head of [`Transformer::forward_last`]: `"f32"`, `"f16"` or `"int8"`
    /// (per-row absmax scales).
    pub fn set_head(&mut self, kind: &str) -> Result<()> {
        self.head = match kind {
            "f32" => Head::F32,
            "f16" => {
                let w = self.lm_head.as_ref().unwrap_or(&self.embed);
                Head::F16(w.to_dtype(DType::F16)?.flatten_all()?.to_vec1::<f16>()?)
            }
            "int8" => {
                let w = self.lm_head.as_ref().unwrap_or(&self.embed);
                let v = w.flatten_all()?.to_vec1::<f32>()?;
                Head::Int8(
                    tritter_kernels::I8Rows::quantize(&v, self.cfg.hidden_size)
                        .map_err(|e| Error::Kernel(format!("int8 head: {e}")))?,
                )
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown head precision `{other}` (expected f32, f16 or int8)"
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
        match &self.head {
            Head::F32 => v * c * 4,
            Head::F16(_) => v * c * 2,
            Head::Int8(q) => q.bytes(),
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
                let w = self.lm_head.as_ref().unwrap_or(&self.embed);
                let (storage, layout) = w.storage_and_layout();
                if let (candle_core::Storage::Cpu(cpu), Some((a, b))) =
                    (&*storage, layout.contiguous_offsets())
                {
                    if let Ok(all) = cpu.as_slice::<f32>() {
                        let mut out = vec![0f32; self.cfg.vocab_size];
                        tritter_kernels::gemv_f32(&all[a..b], h, &mut out)
                            .map_err(|e| Error::Kernel(format!("f32 head: {e}")))?;
                        return Ok(out);
                    }
                }
                drop(storage);
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
            Head::Int8(q) => {
                let mut out = vec![0f32; self.cfg.vocab_size];
                tritter_kernels::gemv_i8(q, h, &mut out)
                    .map_err(|e| Error::Kernel(format!("int8 head: {e}")))?;
                Ok(out)
            }
        }
    }
}
