//! Stage 4 of the pipeline: encode the kept documents in parallel batches and pack them into the
//! train and val shards, then write the shard index.
//!
//! Plain documents are encoded as training text (special-token strings stay text), each followed
//! by eos, and may continue into the next sequence. Chat documents (a `chat` source's rendered
//! conversations) are encoded by [`super::chat::encode_chat`] with per-token flags, followed by
//! eos (no flag), and are never split: one that does not fit the rest of a sequence starts the
//! next (the rest is padding), one longer than `seq_len` is left out and counted
//! (`chat_too_long` in the manifest). Any chat source makes the shards version 2 (with the flag
//! channel).

use rayon::prelude::*;
use tokenizers::Tokenizer;

use super::chat::{encode_chat, parse_rendered};
use super::config::DataConfig;
use super::manifest::TokenCounts;
use super::shard::{self, Packer, ShardIndex, Split, PAD_DOC};
use super::tokenizer;
use super::{DataError, Progress};
use crate::vocab::{Special, VocabLayout};

/// Which accepted documents survive near dedup, and which of those go to validation.
pub(super) struct Selection {
    /// Dropped as a near duplicate, by document id.
    pub(super) dropped: Vec<bool>,
    /// In the validation split, by document id.
    pub(super) is_val: Vec<bool>,
    /// From a `chat` source, by document id.
    pub(super) chat: Vec<bool>,
    /// Documents kept.
    pub(super) kept: u64,
}

/// One encoded document: its id, ids and (chat documents) flags.
type Encoded = (u32, Vec<u32>, Option<Vec<u32>>);

/// Encode and pack the documents `next` yields in batches (empty at the end).
pub(super) fn pack(
    cfg: &DataConfig,
    data_dir: &std::path::Path,
    tok: &Tokenizer,
    layout: &VocabLayout,
    sel: &Selection,
    next: &mut dyn FnMut() -> Result<Vec<(u32, String)>, DataError>,
    progress: &dyn Progress,
) -> Result<TokenCounts, DataError> {
    let encoder = tokenizer::data_encoder(tok);
    let eos = layout.special_id(Special::Eos);
    let pad = layout.special_id(Special::Pad);
    let flags = sel.chat.iter().any(|&c| c);
    let packer = |split| Packer::new(data_dir, split, cfg.seq_len, cfg.shard_sequences, pad);
    let (mut train, mut val) = (packer(Split::Train)?, packer(Split::Val)?);
    if flags {
        train = train.with_flags();
        val = val.with_flags();
    }
    let mut counts = TokenCounts::default();
    loop {
        let batch = next()?;
        if batch.is_empty() {
            break;
        }
        let encoded: Vec<Result<Encoded, DataError>> = batch
            .par_iter()
            .map(|(id, text)| {
                if sel.chat[*id as usize] {
                    let turns = parse_rendered(text).map_err(|message| DataError::Tokenizer {
                        message: format!("chat document {id}: {message}"),
                    })?;
                    let mut c = encode_chat(tok, &turns)?;
                    c.ids.push(eos);
                    c.flags.push(0);
                    return Ok((*id, c.ids, Some(c.flags)));
                }
                let mut ids = tokenizer::encode(&encoder, text)?;
                ids.push(eos);
                Ok((*id, ids, None))
            })
            .collect();
        let n = encoded.len() as u64;
        for item in encoded {
            let (id, ids, flags) = item?;
            let is_val = sel.is_val[id as usize];
            let p = if is_val { &mut val } else { &mut train };
            let packed = match &flags {
                Some(f) => p.push_whole(id, &ids, f)?,
                None => p.push(id, &ids).map(|()| true)?,
            };
            match (packed, is_val) {
                (false, _) => counts.chat_too_long += 1,
                (true, true) => counts.val_documents += 1,
                (true, false) => counts.train_documents += 1,
            }
        }
        progress.advance(n);
    }
    let train = train.finish()?;
    let val = val.finish()?;
    counts.train_tokens = train.tokens;
    counts.val_tokens = val.tokens;
    counts.train_sequences = train.sequences;
    counts.val_sequences = val.sequences;
    let index = ShardIndex {
        version: if flags {
            shard::VERSION_FLAGS
        } else {
            shard::VERSION
        },
        seq_len: cfg.seq_len as u32,
        pad_id: pad,
        pad_doc: PAD_DOC,
        train,
        val,
    };
    shard::write_index(data_dir, &index)?;
    Ok(counts)
}
