//! The Tritter / BitNet b1.58 decoder-only transformer, matching HF transformers'
//! `BitNetForCausalLM` (`models/bitnet/modeling_bitnet.py`) for the default switches, plus
//! Tritter's own: norm placement (pre-norm, Chameleon swin-norm, BitNet SubLN), QK-Norm, gated
//! or ungated ReLU² / SwiGLU MLPs, tied or untied head.
//!
//! Shapes: ids `[B, T]`, hidden `[B, T, C]`, heads `[B, H, T, D]`. Caches store keys after RoPE,
//! so incremental decoding equals the full forward. `forward(ids, None)` is the differentiable
//! candle path; with a cache the single-sequence inference path in `infer.rs` runs instead.
//!
//! The candle path computes in the model's *compute dtype* (the embedding's dtype when loaded;
//! [`Transformer::with_compute_dtype`] changes it): f32, or bf16 for dense bf16 models and bf16
//! mixed-precision training over f32 master weights. Weights are cast to it where they are used
//! (the casts join the autograd graph, so gradients reach f32 parameters), while RMSNorm
//! statistics, the attention softmax, the logits and the loss are computed in f32. In f32 every
//! cast is a no-op. Nothing here assumes the CPU: the same code runs on any candle device.

use crate::bitlinear::BitLinear;
use crate::config::{Activation, Config, NormPlacement};
use crate::error::{Error, Result};
pub use crate::infer::{CacheOptions, InferenceCache as KvCache};
use crate::norm::RmsNorm;
use crate::rope::Rope;
use crate::weights::WeightSource;
use candle_core::{DType, Device, Tensor, D};

/// Per-layer key/value cache of the candle path (tensors in the model's compute dtype on its
/// device, keys after RoPE), used by [`Transformer::hidden_tensor_cache`]; the CPU inference
/// path uses [`crate::infer::InferenceCache`].
#[derive(Debug, Clone, Default)]
pub struct TensorKvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
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

    /// Bytes held by the cached tensors.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::Invalid(format!("cache has no layer {layer}")))?;
        let kv = match slot.take() {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
        };
        *slot = Some(kv.clone());
        Ok(kv)
    }
}

pub(crate) struct Attention {
    pub(crate) q_proj: BitLinear,
    pub(crate) k_proj: BitLinear,
    pub(crate) v_proj: BitLinear,
    pub(crate) o_proj: BitLinear,
    pub(crate) sub_norm: Option<RmsNorm>,
    pub(crate) q_norm: Option<RmsNorm>,
    pub(crate) k_norm: Option<RmsNorm>,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    causal: bool,
}

fn bitlinear(
    src: &mut dyn WeightSource,
    cfg: &Config,
    name: &str,
    out: usize,
    inp: usize,
) -> Result<BitLinear> {
    let w = src.bitlinear(name, out, inp)?;
    let norm = match cfg.bitlinear_rms_norm {
        Some(eps) => Some(RmsNorm::new(
            src.dense(&format!("{name}.rms_norm.weight"), &[inp])?,
            eps,
        )),
        None => None,
    };
    Ok(BitLinear::new(w, norm))
}

impl Attention {
    fn load(src: &mut dyn WeightSource, cfg: &Config, p: &str) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let q = cfg.num_heads * d;
        let kv = cfg.num_kv_heads * d;
        let norm = |src: &mut dyn WeightSource, n: &str, dim: usize| -> Result<RmsNorm> {
            Ok(RmsNorm::new(
                src.dense(&format!("{p}.{n}.weight"), &[dim])?,
                cfg.rms_norm_eps,
            ))
        };
        Ok(Self {
            q_proj: bitlinear(src, cfg, &format!("{p}.q_proj"), q, h)?,
            k_proj: bitlinear(src, cfg, &format!("{p}.k_proj"), kv, h)?,
            v_proj: bitlinear(src, cfg, &format!("{p}.v_proj"), kv, h)?,
            o_proj: bitlinear(src, cfg, &format!("{p}.o_proj"), h, q)?,
            sub_norm: match cfg.norm_placement {
                NormPlacement::Subln => Some(norm(src, "attn_sub_norm", q)?),
                _ => None,
            },
            q_norm: if cfg.qk_norm {
                Some(norm(src, "q_norm", d)?)
            } else {
                None
            },
            k_norm: if cfg.qk_norm {
                Some(norm(src, "k_norm", d)?)
            } else {
                None
            },
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: d,
            // `bidirectional` and `embedding` attend both ways. `prefix_lm` needs the prompt length,
            // which only the inference path knows (its first chunk); this full forward is causal.
            causal: !matches!(cfg.attention_mode.as_str(), "bidirectional" | "embedding"),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        cache: Option<(&mut TensorKvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t, _c) = x.dims3()?;
        let (h, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self.q_proj.forward(x)?.reshape((b, t, h, d))?;
        let k = self.k_proj.forward(x)?.reshape((b, t, hkv, d))?;
        let v = self.v_proj.forward(x)?.reshape((b, t, hkv, d))?;
        let q = match &self.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let q = rope.apply(&q.transpose(1, 2)?.contiguous()?, offset)?;
        let k = rope.apply(&k.transpose(1, 2)?.contiguous()?, offset)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let (k, v) = match cache {
            Some((c, layer)) => c.append(layer, &k, &v)?,
            None => (k, v),
        };
        let s = k.dim(2)?;
        let rep = h / hkv;
        let (k, v) = if rep > 1 {
            (
                k.unsqueeze(2)?
                    .expand((b, hkv, rep, s, d))?
                    .reshape((b, h, s, d))?,
                v.unsqueeze(2)?
                    .expand((b, hkv, rep, s, d))?
                    .reshape((b, h, s, d))?,
            )
        } else {
            (k, v)
        };
        let scale = 1.0 / (d as f64).sqrt();
        // Scores, mask and softmax in f32; the weighted sum in the compute dtype.
        let mut att = (q.matmul(&k.t()?.contiguous()?)?.to_dtype(DType::F32)? * scale)?;
        if self.causal && t > 1 {
            let past = s - t;
            let mask: Vec<u8> = (0..t)
                .flat_map(|i| (0..s).map(move |j| u8::from(j > i + past)))
                .collect();
            let mask = Tensor::from_vec(mask, (t, s), x.device())?.broadcast_as(att.shape())?;
            let neg = Tensor::new(f32::NEG_INFINITY, x.device())?.broadcast_as(att.shape())?;
            att = mask.where_cond(&neg, &att)?;
        }
        let att = candle_nn::ops::softmax(&att, D::Minus1)?.to_dtype(v.dtype())?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h * d))?;
        let y = match &self.sub_norm {
            Some(n) => n.forward(&y)?,
            None => y,
        };
        self.o_proj.forward(&y)
    }
}

pub(crate) struct Mlp {
    pub(crate) gate: Option<BitLinear>,
    pub(crate) up: BitLinear,
    pub(crate) down: BitLinear,
    pub(crate) sub_norm: Option<RmsNorm>,
    pub(crate) act: Activation,
}

impl Mlp {
    fn load(src: &mut dyn WeightSource, cfg: &Config, p: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate: if cfg.mlp_gated {
                Some(bitlinear(src, cfg, &format!("{p}.gate_proj"), i, h)?)
            } else {
                None
            },
            up: bitlinear(src, cfg, &format!("{p}.up_proj"), i, h)?,
            down: bitlinear(src, cfg, &format!("{p}.down_proj"), h, i)?,
            sub_norm: match cfg.norm_placement {
                NormPlacement::Subln => Some(RmsNorm::new(
                    src.dense(&format!("{p}.ffn_sub_norm.weight"), &[i])?,
                    cfg.rms_norm_eps,
                )),
                _ => None,
            },
            act: cfg.activation,
        })
    }

    fn act(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.act {
            Activation::Relu2 => x.relu()?.sqr()?,
            Activation::Silu => x.silu()?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hdn = match &self.gate {
            Some(g) => (self.act(&g.forward(x)?)? * self.up.forward(x)?)?,
            None => self.act(&self.up.forward(x)?)?,
        };
        let hdn = match &self.sub_norm {
            Some(n) => n.forward(&hdn)?,
            None => hdn,
        };
        self.down.forward(&hdn)
    }
}

pub(crate) struct Block {
    pub(crate) attn: Attention,
    pub(crate) mlp: Mlp,
    pub(crate) norm1: RmsNorm,
    pub(crate) norm2: RmsNorm,
    pub(crate) placement: NormPlacement,
}

impl Block {
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        cache: Option<(&mut TensorKvCache, usize)>,
    ) -> Result<Tensor> {
        match self.placement {
            NormPlacement::Pre | NormPlacement::Subln => {
                let h = (x + self
                    .attn
                    .forward(&self.norm1.forward(x)?, rope, offset, cache)?)?;
                Ok((&h + self.mlp.forward(&self.norm2.forward(&h)?)?)?)
            }
            NormPlacement::SwinNorm => {
                let h = (x + self
                    .norm1
                    .forward(&self.attn.forward(x, rope, offset, cache)?)?)?;
                Ok((&h + self.norm2.forward(&self.mlp.forward(&h)?)?)?)
            }
        }
    }
}

/// The decoder-only transformer with its LM head.
pub struct Transformer {
    pub(crate) cfg: Config,
    pub(crate) embed: Tensor,
    pub(crate) blocks: Vec<Block>,
    pub(crate) norm: RmsNorm,
    pub(crate) lm_head: Option<Tensor>,
    pub(crate) rope: Rope,
    device: Device,
    /// The dtype the candle path computes in (see the module docs).
    dtype: DType,
    /// Reduced-precision copy of the LM head for the inference path (`set_head`).
    pub(crate) head: crate::infer::Head,
}

impl Transformer {
    /// Builds the model from a weight source (a checkpoint or trainable parameters).
    pub fn load(cfg: &Config, src: &mut dyn WeightSource, device: &Device) -> Result<Self> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let embed = src.dense("model.embed_tokens.weight", &[v, h])?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}");
            blocks.push(Block {
                attn: Attention::load(src, cfg, &format!("{p}.self_attn"))?,
                mlp: Mlp::load(src, cfg, &format!("{p}.mlp"))?,
                norm1: RmsNorm::new(
                    src.dense(&format!("{p}.input_layernorm.weight"), &[h])?,
                    cfg.rms_norm_eps,
                ),
                norm2: RmsNorm::new(
                    src.dense(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                    cfg.rms_norm_eps,
                ),
                placement: cfg.norm_placement,
            });
        }
        let norm = RmsNorm::new(src.dense("model.norm.weight", &[h])?, cfg.rms_norm_eps);
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(src.dense("lm_head.weight", &[v, h])?)
        };
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
        let dtype = embed.dtype();
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            rope,
            device: device.clone(),
            dtype,
            head: crate::infer::Head::F32,
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

    /// A fresh inference cache with the options of `config.json` (f32, window, sinks).
    pub fn new_cache(&self) -> KvCache {
        self.new_cache_with(&CacheOptions::from_config(&self.cfg))
            .unwrap_or_else(|_| KvCache::unbounded(&self.cfg))
    }

    /// A fresh inference cache with explicit options (kind, window, sinks).
    pub fn new_cache_with(&self, opts: &CacheOptions) -> Result<KvCache> {
        KvCache::new(&self.cfg, opts)
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

    /// Final-normed hidden states `[B, T, C]` for input embeddings `[B, T, C]`. Without a cache
    /// this is the full (training) forward on candle ops; with one it is the inference path for
    /// a single sequence (B = 1) on the fused attention kernels, appending to the cache.
    pub fn hidden_from_embeds(&self, x: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.check_channels(x)?;
        match cache {
            Some(c) => self.hidden_cached(&x.to_dtype(DType::F32)?, c),
            None => {
                let mut h = x.to_dtype(self.dtype)?;
                for block in &self.blocks {
                    h = block.forward(&h, &self.rope, 0, None)?;
                }
                self.norm.forward(&h)
            }
        }
    }

    /// Final-normed hidden states through the candle path with a tensor cache (any batch size;
    /// the reference the inference path is tested against).
    pub fn hidden_tensor_cache(&self, x: &Tensor, cache: &mut TensorKvCache) -> Result<Tensor> {
        self.check_channels(x)?;
        let t = x.dim(1)?;
        let offset = cache.len();
        let mut h = x.to_dtype(self.dtype)?;
        for (l, block) in self.blocks.iter().enumerate() {
            h = block.forward(&h, &self.rope, offset, Some((&mut *cache, l)))?;
        }
        cache.len += t;
        self.norm.forward(&h)
    }

    /// Logits `[B, T, V]` from final hidden states (candle matmul in the hidden states' dtype,
    /// returned as f32).
    pub fn logits_from_hidden(&self, h: &Tensor) -> Result<Tensor> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        Ok(h.broadcast_matmul(&w.to_dtype(h.dtype())?.t()?)?
            .to_dtype(DType::F32)?)
    }

    /// Logits `[B, T, V]` for input embeddings `[B, T, C]` (latent mode, image/audio inputs).
    pub fn forward_embeds(&self, x: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let h = self.hidden_from_embeds(x, cache)?;
        self.logits_from_hidden(&h)
    }

    /// Logits `[B, T, V]` for ids `[B, T]`, appending to `cache` when given (then B = 1).
    pub fn forward(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let x = self.embed(ids)?;
        self.forward_embeds(&x, cache)
    }

    /// Logits `[V]` of the last position for a single sequence of ids (prefill / decode step),
    /// on the inference path, with the head chosen by [`Transformer::set_head`].
    pub fn forward_last(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::Invalid("no tokens to run".into()));
        }
        let t = Tensor::from_slice(ids, (1, ids.len()), &self.device)?;
        let x = self
            .embed(&t)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let h = self.hidden_rows(x, ids.len(), cache)?;
        let c = self.cfg.hidden_size;
        self.head_logits(&h[(ids.len() - 1) * c..])
    }

    /// A text embedding: the mean over positions of the final-normed hidden states of ids `[1, T]`
    /// (attention is bidirectional when the config's `attention_mode` is `embedding`).
    pub fn embedding(&self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::Invalid("no tokens to embed".into()));
        }
        let t = Tensor::from_slice(ids, (1, ids.len()), &self.device)?;
        let h = self.hidden_from_embeds(&self.embed(&t)?, None)?;
        Ok(h.to_dtype(DType::F32)?
            .squeeze(0)?
            .mean(0)?
            .to_vec1::<f32>()?)
    }

    /// Mean next-token cross-entropy of ids `[B, T]` (HF causal-LM loss: labels = ids shifted).
    pub fn loss(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t < 2 {
            return Err(Error::Invalid(
                "loss needs at least 2 tokens per sequence".into(),
            ));
        }
        let logits = self.forward(&ids.narrow(1, 0, t - 1)?, None)?;
        let targets = ids.narrow(1, 1, t - 1)?.to_dtype(DType::U32)?;
        cross_entropy(
            &logits.reshape((b * (t - 1), self.cfg.vocab_size))?,
            &targets.flatten_all()?,
        )
    }
}

/// Mean cross-entropy of logits `[N, V]` against targets `[N]`, from differentiable ops, in f32
/// whatever the logits' dtype.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = shifted.broadcast_sub(&lse)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}
