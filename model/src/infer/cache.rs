//! The KV caches of one sequence on the CPU inference path: one [`attn::KvCache`] per layer
//! (f32/f16/bf16/INT4 storage, optionally a rolling window with attention sinks) plus what the
//! attention mask needs (the mode, and the prompt length for `prefix_lm`).

use crate::attn::{self, AttentionMode, KvCacheConfig, KvKind, MaskSpec};
use crate::config::Config;
use crate::error::{Error, Result};

/// Sinks kept when `use_attention_sinks` is set (StreamingLLM's choice).
pub const DEFAULT_SINKS: usize = crate::config::ATTENTION_SINKS;

pub(super) fn attn_err(e: attn::AttnError) -> Error {
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
    /// `use_attention_sinks`. Sinks without a window larger than them are not dropped quietly:
    /// `config.json` is rejected when it asks for them, and a cache built from such a
    /// hand-made [`Config`] fails.
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            kind: KvKind::F32,
            window: cfg.sliding_window_size,
            sinks: if cfg.use_attention_sinks {
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
    pub(super) layers: Vec<attn::KvCache>,
    opts: CacheOptions,
    mode: AttentionMode,
    /// Length of the first chunk (the bidirectional prompt of `prefix_lm`).
    pub(super) prefix_len: usize,
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
            mode: cfg.attention_mode,
            prefix_len: 0,
        })
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

    pub(super) fn spec(&self) -> MaskSpec {
        MaskSpec {
            mode: self.mode,
            window: self.opts.window,
            sinks: self.opts.sinks,
            prefix_len: self.prefix_len,
            doc_ids: None,
        }
    }
}
