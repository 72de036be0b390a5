//! Training batches of packed sequences: the ids, document ids and flags of the sequences at
//! given positions of a split, and the loss of a batch with or without the document mask
//! (`Transformer::loss_packed`: each document masked as inference masks it alone, the loss on
//! flagged targets only / `Transformer::loss`); the recurrent-depth count a step draws.

use candle_core::{Device, Tensor};

use super::TrainError;
use crate::data::{Sequence, SplitReader};
use crate::transformer::Transformer;

/// A batch: ids, document ids and flags, each `[B, T]`.
pub(crate) type Batch = (Tensor, Tensor, Tensor);

/// A batch in host memory, as the loader thread builds it: ids, document ids and flags of `b`
/// sequences of `t` tokens, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostBatch {
    pub b: usize,
    pub t: usize,
    pub ids: Vec<u32>,
    pub docs: Vec<u32>,
    pub flags: Vec<u32>,
}

impl HostBatch {
    /// The three `[B, T]` tensors on `device`.
    pub(crate) fn into_device(self, device: &Device) -> Result<Batch, TrainError> {
        let shape = (self.b, self.t);
        Ok((
            Tensor::from_vec(self.ids, shape, device)?,
            Tensor::from_vec(self.docs, shape, device)?,
            Tensor::from_vec(self.flags, shape, device)?,
        ))
    }
}

/// The ids of the sequences at `indices`, their document ids and their flags, `t` tokens each.
pub(crate) fn batch_host(
    reader: &mut SplitReader,
    indices: &[u64],
    t: usize,
) -> Result<HostBatch, TrainError> {
    let mut seq = Sequence::default();
    let mut ids = Vec::with_capacity(indices.len() * t);
    let mut docs = Vec::with_capacity(indices.len() * t);
    let mut flags = Vec::with_capacity(indices.len() * t);
    for &i in indices {
        reader.read(i, &mut seq)?;
        let n = t.min(seq.tokens.len());
        ids.extend_from_slice(&seq.tokens[..n]);
        docs.extend_from_slice(&seq.doc_ids[..n.min(seq.doc_ids.len())]);
        flags.extend_from_slice(&seq.flags[..n.min(seq.flags.len())]);
    }
    let b = indices.len();
    if ids.len() != b * t || docs.len() != b * t || flags.len() != b * t {
        return Err(TrainError::Config(format!(
            "the data's sequences are shorter than train.seq_len = {t}"
        )));
    }
    Ok(HostBatch {
        b,
        t,
        ids,
        docs,
        flags,
    })
}

/// The ids `[B, T]` of the sequences at `indices`, their document ids and their flags `[B, T]`.
pub(crate) fn batch_tensor(
    reader: &mut SplitReader,
    indices: &[u64],
    t: usize,
    device: &Device,
) -> Result<Batch, TrainError> {
    batch_host(reader, indices, t)?.into_device(device)
}

/// The loss of one batch: within documents, on the flagged targets (no padding, a chat
/// example's replies) when `document_mask`, else the plain causal loss over the packed window.
pub(crate) fn batch_loss(
    model: &Transformer,
    (ids, docs, flags): &Batch,
    document_mask: bool,
) -> Result<Tensor, TrainError> {
    Ok(if document_mask {
        model.loss_packed(ids, docs, flags)?
    } else {
        model.loss(ids)?
    })
}

/// The iterations of a recurrent-depth block at step `step`: uniform over `1..=max`, a pure
/// function of the seed and the step (splitmix64), so a resumed run samples what an
/// uninterrupted one did.
pub fn sampled_iterations(seed: u64, step: u64, max: usize) -> usize {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step.wrapping_add(1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    1 + (z % max.max(1) as u64) as usize
}
