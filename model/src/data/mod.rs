//! Training-data pipeline (ROADMAP phase 6.1): sources → quality filters → exact and MinHash-LSH
//! near deduplication → byte-level BPE tokenizer → packing into fixed-length sequences with
//! document ids → shards the trainer streams.
//!
//! The crate never prints: long stages report through [`Progress`], bad input becomes an
//! [`Issue`] that is counted and listed in the manifest. Entry point: [`prepare`]; readers for
//! the trainer: [`ShardSet`].

pub mod chat;
mod chat_source;
pub mod config;
pub mod dedup_dir;
mod document;
pub mod filter;
pub mod hash;
pub mod lsh;
pub mod lsh_disk;
pub mod manifest;
pub mod minhash;
mod pack;
mod parquet_source;
pub mod pipeline;
pub mod plant;
pub mod shard;
pub mod source;
mod spool;
pub mod tokenizer;
mod walk;

pub use config::{
    DataConfig, DedupConfig, FilterConfig, Language, SourceConfig, SourceKind, TokenizerConfig,
};
pub use filter::{FilterRule, QualityFilter};
pub use lsh::{
    choose_bands, choose_bands_weighted, find_duplicate_pairs, greedy_keep, DuplicatePair,
    LshParams,
};
pub use manifest::Manifest;
pub use minhash::{exact_jaccard, shingle_hashes, MinHasher};
pub use pipeline::prepare;
pub use shard::{Sequence, ShardSet, Split, SplitReader};
pub use source::{Document, Issue, IssueKind};

use std::path::PathBuf;

/// Errors of the data pipeline. Bad *documents* are not errors (they become [`Issue`]s); these
/// stop the run.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The `[data]` config is invalid.
    #[error("invalid data config: {message}")]
    Config {
        /// What was wrong.
        message: String,
    },
    /// An I/O error on a file the pipeline owns (run directory, shards, spool).
    #[error("{op} {path}: {cause}")]
    Io {
        /// What was being done ("write", "read", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause, in the message (not a `#[source]`: that would print it twice in the
        /// binary's one-line error chain).
        cause: std::io::Error,
    },
    /// Tokenizer training, loading or encoding failed.
    #[error("tokenizer: {message}")]
    Tokenizer {
        /// What failed.
        message: String,
    },
    /// A shard or shard index is malformed.
    #[error("shard {path}: {message}")]
    Shard {
        /// The shard or index file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A sequence index past the end of a split.
    #[error("sequence {index} out of range: the {split} split has {len}")]
    SequenceOutOfRange {
        /// Index asked for.
        index: u64,
        /// Split name.
        split: &'static str,
        /// Sequences in the split.
        len: u64,
    },
    /// The vocabulary layout is inconsistent with the tokenizer.
    #[error(transparent)]
    Vocab(#[from] crate::vocab::VocabError),
    /// The corpus has no document left after filtering and deduplication.
    /// A line of a chat source that is not a usable conversation.
    #[error("chat data {path}:{line}: {message}")]
    ChatLine {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("no documents left after filtering and deduplication ({read} read)")]
    EmptyCorpus {
        /// Documents read.
        read: u64,
    },
}

impl DataError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            op,
            path: path.into(),
            cause: source,
        }
    }
}

/// Pipeline stages, for progress reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading, filtering, exact dedup and MinHash of every source.
    Read,
    /// LSH banding and candidate verification.
    NearDedup,
    /// BPE training (or loading).
    Tokenizer,
    /// Tokenising, packing and writing shards.
    Pack,
}

impl Stage {
    /// Short name for display.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Read => "read + filter + minhash",
            Stage::NearDedup => "near-dedup (LSH)",
            Stage::Tokenizer => "tokenizer",
            Stage::Pack => "tokenise + pack",
        }
    }
}

/// Receives progress of long stages. Implemented by the binary (progress bars); must be cheap.
pub trait Progress: Sync {
    /// A stage begins; `total` units of work if known.
    fn start(&self, stage: Stage, total: Option<u64>);
    /// `n` more units of the current stage are done.
    fn advance(&self, n: u64);
    /// The current stage is finished.
    fn finish(&self, stage: Stage);
    /// Bad input was skipped (also recorded in the manifest).
    fn issue(&self, _issue: &Issue) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _stage: Stage, _total: Option<u64>) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self, _stage: Stage) {}
}
