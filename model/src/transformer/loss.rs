//! The training losses of [`Transformer`]: next-token cross-entropy of plain, document-packed
//! and flagged (chat) batches, and the cross-entropy functions on logits they share with the
//! multimodal and latent trainers. On the CPU in f32 the head and the loss run as one op
//! ([`crate::train::head_xent`]: no `[N, V]` logits); elsewhere the logits are made
//! ([`Transformer::logits_from_hidden`]) and the loss taken from them. Must match Hugging Face's
//! causal-LM loss (labels = ids shifted; golden tests) and, fused, the composed path.

use candle_core::{DType, Tensor, D};

use super::Transformer;
use crate::error::{Error, Result};

impl Transformer {
    /// Mean cross-entropy of the logits of final hidden states `h` `[B, T, C]` against targets
    /// `[B·T]`, over the rows whose weight (`[B·T]`, 0 or 1) is 1 when given.
    pub fn head_loss(
        &self,
        h: &Tensor,
        targets: &Tensor,
        weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t, c) = h.dims3()?;
        let w = self.head_weight();
        let flat = h.reshape((b * t, c))?;
        if crate::train::head_xent::fits(&flat, w) {
            let scale = (1.0 / self.cfg.hybrid.scales.logits_divisor) as f32;
            return Ok(crate::train::head_xent::head_cross_entropy(
                &flat, w, targets, weights, scale,
            )?);
        }
        let logits = self
            .logits_from_hidden(h)?
            .reshape((b * t, self.cfg.vocab_size))?;
        match weights {
            Some(wt) => cross_entropy_weighted(&logits, targets, wt),
            None => cross_entropy(&logits, targets),
        }
    }

    /// Mean next-token cross-entropy of packed ids `[B, T]` with document ids and flags `[B, T]`
    /// ([`Self::forward_packed`]) over the targets flagged
    /// [`FLAG_TARGET`](crate::data::chat::FLAG_TARGET) — under `prefix_lm` less those inside a
    /// prefix, which the positions before them see — normalised by their number.
    pub fn loss_packed(&self, ids: &Tensor, docs: &Tensor, flags: &Tensor) -> Result<Tensor> {
        use crate::data::chat::{FLAG_PREFIX, FLAG_TARGET};
        let (b, t) = ids.dims2()?;
        if t < 2 {
            return Err(Error::Invalid(
                "loss needs at least 2 tokens per sequence".into(),
            ));
        }
        let flags = flags.to_dtype(DType::U32)?;
        let h = self.hidden_packed(
            &ids.narrow(1, 0, t - 1)?,
            &docs.narrow(1, 0, t - 1)?,
            Some(&flags.narrow(1, 0, t - 1)?),
        )?;
        let targets = ids.narrow(1, 1, t - 1)?.to_dtype(DType::U32)?;
        let prefix_lm = self.cfg.attention_mode == crate::attn::AttentionMode::PrefixLm;
        let weights: Vec<f32> = flags
            .narrow(1, 1, t - 1)?
            .flatten_all()?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|f| {
                let hidden = prefix_lm && f & FLAG_PREFIX != 0;
                f32::from(u8::from(f & FLAG_TARGET != 0 && !hidden))
            })
            .collect();
        let weights = Tensor::from_vec(weights, b * (t - 1), &self.device)?;
        self.head_loss(&h, &targets.flatten_all()?, Some(&weights))
    }

    /// [`Transformer::loss`] of packed sequences: attention within each document
    /// ([`Transformer::forward_docs`]), and no loss on targets that are padding (document id
    /// `pad_doc`). A position still predicts the next document's first token from its own
    /// (the end-of-document token is followed by the next document, as when run one by one).
    pub fn loss_docs(&self, ids: &Tensor, docs: &Tensor, pad_doc: u32) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t < 2 {
            return Err(Error::Invalid(
                "loss needs at least 2 tokens per sequence".into(),
            ));
        }
        let docs = docs.to_dtype(DType::U32)?;
        let h = self.hidden_packed(&ids.narrow(1, 0, t - 1)?, &docs.narrow(1, 0, t - 1)?, None)?;
        let targets = ids.narrow(1, 1, t - 1)?.to_dtype(DType::U32)?;
        let pad = Tensor::full(pad_doc, (b, t - 1), ids.device())?;
        let weights = docs.narrow(1, 1, t - 1)?.ne(&pad)?.to_dtype(DType::F32)?;
        self.head_loss(&h, &targets.flatten_all()?, Some(&weights.flatten_all()?))
    }

    /// Mean next-token cross-entropy of ids `[B, T]` (HF causal-LM loss: labels = ids shifted).
    pub fn loss(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        if t < 2 {
            return Err(Error::Invalid(
                "loss needs at least 2 tokens per sequence".into(),
            ));
        }
        let h = self.hidden_from_embeds(&self.embed(&ids.narrow(1, 0, t - 1)?)?)?;
        let targets = ids.narrow(1, 1, t - 1)?.to_dtype(DType::U32)?;
        self.head_loss(&h, &targets.flatten_all()?, None)
    }
}

/// `log p(target)` of each row of logits `[N, V]` for targets `[N]`: `[N, 1]`, in f32 whatever
/// the logits' dtype (differentiable).
fn target_log_probs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = shifted.broadcast_sub(&lse)?;
    Ok(logp.gather(&targets.unsqueeze(1)?, 1)?)
}

/// Mean cross-entropy of logits `[N, V]` against targets `[N]` over the rows where `weights`
/// `[N]` (f32, 0 or 1) is 1: the fused op ([`crate::train::xent`]) for f32 CPU logits, else
/// [`cross_entropy_weighted_composed`].
pub fn cross_entropy_weighted(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    if crate::train::xent::fits(logits) {
        return Ok(crate::train::xent::cross_entropy(
            logits,
            targets,
            Some(weights),
        )?);
    }
    cross_entropy_weighted_composed(logits, targets, weights)
}

/// [`cross_entropy_weighted`] from differentiable candle ops (CUDA, bf16; the reference of the
/// fused op).
pub fn cross_entropy_weighted_composed(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    let picked = target_log_probs(logits, targets)?.squeeze(1)?;
    let n = weights.sum_all()?.to_scalar::<f32>()?;
    if n <= 0.0 {
        return Err(Error::Invalid("a batch with no position to predict".into()));
    }
    Ok(((picked * weights)?.sum_all()? / f64::from(n))?.neg()?)
}

/// Mean cross-entropy of logits `[N, V]` against targets `[N]`, in f32 whatever the logits'
/// dtype: the fused op ([`crate::train::xent`]) for f32 CPU logits, else
/// [`cross_entropy_composed`].
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if crate::train::xent::fits(logits) {
        return Ok(crate::train::xent::cross_entropy(logits, targets, None)?);
    }
    cross_entropy_composed(logits, targets)
}

/// [`cross_entropy`] from differentiable candle ops (CUDA, bf16; the reference of the fused op).
pub fn cross_entropy_composed(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(target_log_probs(logits, targets)?.mean_all()?.neg()?)
}
