//! What every source yields: [`Document`]s, [`Issue`]s for skipped bad input, and the
//! [`SourceEvent`]s that carry them; plus the language selection JSONL and Parquet rows pass.
//!
//! Shared by the directory and JSONL sources (`source`) and the Parquet source
//! (`parquet_source`): both depend on this module, it depends on neither. The issue kinds are
//! serialised into `manifest.json` (snake_case names) and must keep their spelling.

use serde::{Deserialize, Serialize};

use super::config::Language;

/// A document as read from a source, before filtering.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Index of the source in `data.sources`.
    pub source: usize,
    /// Where it came from: a file path, `FILE:LINE` / the record's `path` for JSONL,
    /// `path` / `max_stars_repo_path` / `FILE#ROW` for Parquet.
    pub path: String,
    /// Raw content.
    pub bytes: Vec<u8>,
}

/// Kinds of skipped bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// A file or directory that could not be opened or read.
    UnreadableFile,
    /// A JSONL line that is not a JSON object with a string `content`.
    InvalidLine,
    /// A Parquet file that cannot be used as a whole (bad footer, no `content` column).
    BadParquetFile,
    /// Parquet rows that could not be decoded (the rest of the file is skipped and counted).
    BadParquetRows,
    /// The source path itself does not exist.
    MissingSource,
}

/// One piece of bad input that was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// Index of the source in `data.sources`.
    pub source: usize,
    /// What kind of problem.
    pub kind: IssueKind,
    /// The file (with `:LINE` for JSONL lines, `#ROW` for Parquet rows).
    pub path: String,
    /// One-line description.
    pub message: String,
    /// Documents (lines, rows) lost with it, where known; 0 for a whole unreadable file.
    pub lost: u64,
}

/// What a source produces.
#[derive(Debug)]
pub enum SourceEvent {
    /// A document to filter.
    Doc(Document),
    /// A file rejected from its size before being read (`filter.max_bytes`).
    TooLarge {
        /// The file.
        path: String,
    },
    /// A document whose language is not selected.
    LanguageSkipped,
    /// Bad input, skipped.
    Issue(Issue),
    /// Bad input that stops the pipeline (a chat source's unusable line).
    Fatal(super::DataError),
}

/// Whether a document with `lang` passes the language selection `languages` (empty = all).
pub(crate) fn language_selected(languages: &[Language], lang: Option<&str>) -> bool {
    languages.is_empty()
        || lang
            .and_then(Language::from_name)
            .is_some_and(|l| languages.contains(&l))
}
