//! Training batches of packed sequences: the ids and document ids of the sequences at given
//! positions of a split, and the loss of a batch with or without the document mask
//! (`Transformer::loss_docs` / `Transformer::loss`).

use candle_core::{Device, Tensor};

use super::TrainError;
use crate::data::{Sequence, SplitReader};
use crate::transformer::Transformer;

/// The ids `[B, T]` of the sequences at `indices` and their document ids `[B, T]`.
pub(crate) fn batch_tensor(
    reader: &mut SplitReader,
    indices: &[u64],
    t: usize,
    device: &Device,
) -> Result<(Tensor, Tensor), TrainError> {
    let mut seq = Sequence::default();
    let mut ids = Vec::with_capacity(indices.len() * t);
    let mut docs = Vec::with_capacity(indices.len() * t);
    for &i in indices {
        reader.read(i, &mut seq)?;
        let n = t.min(seq.tokens.len());
        ids.extend_from_slice(&seq.tokens[..n]);
        docs.extend_from_slice(&seq.doc_ids[..n.min(seq.doc_ids.len())]);
    }
    let b = indices.len();
    if ids.len() != b * t || docs.len() != b * t {
        return Err(TrainError::Config(format!(
            "the data's sequences are shorter than train.seq_len = {t}"
        )));
    }
    Ok((
        Tensor::from_vec(ids, (b, t), device)?,
        Tensor::from_vec(docs, (b, t), device)?,
    ))
}

/// The loss of one batch: within documents and without padding when `document_mask`, else the
/// plain causal loss over the packed window.
pub(crate) fn batch_loss(
    model: &Transformer,
    (ids, docs): &(Tensor, Tensor),
    document_mask: bool,
) -> Result<Tensor, TrainError> {
    Ok(if document_mask {
        model.loss_docs(ids, docs, crate::data::shard::PAD_DOC)?
    } else {
        model.loss(ids)?
    })
}
