//! `data/manifest.json`: what the pipeline read, dropped and wrote — per-source counts,
//! per-rule rejections, exact and near duplicates with the document each duplicates, token
//! counts, the tokenizer's vocabulary, and source licences where known.
//!
//! Field names are the contract with readers of the run directory (trainer, reports, tests).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::{SourceConfig, SourceKind};
use super::document::{Issue, IssueKind};
use super::filter::FilterRule;
use super::lsh::LshParams;

/// Issues listed in full; beyond this only counted.
pub const MAX_LISTED_ISSUES: usize = 1000;

/// Counts of one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStats {
    /// `dir`, `jsonl` or `parquet`.
    pub kind: String,
    /// The configured path.
    pub path: String,
    /// Documents read (including files rejected from their size alone).
    pub documents: u64,
    /// Documents skipped because their language was not selected.
    pub language_skipped: u64,
    /// Rejections per filter rule.
    pub rejected: BTreeMap<FilterRule, u64>,
    /// Dropped as byte-identical to an earlier document.
    pub exact_duplicates: u64,
    /// Dropped as near duplicates.
    pub near_duplicates: u64,
    /// Documents kept.
    pub kept: u64,
    /// Bytes of the kept documents.
    pub kept_bytes: u64,
    /// Skipped bad input per kind.
    pub issues: BTreeMap<IssueKind, u64>,
    /// Documents (lines, rows) known lost with bad input.
    pub lost_documents: u64,
    /// SPDX licence where known.
    pub license: Option<String>,
    /// Where the licence came from: "config", a LICENSE file, or "unknown".
    pub license_origin: String,
}

/// A dropped duplicate and the kept document it duplicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateEntry {
    /// Path of the dropped document.
    pub dropped: String,
    /// Path of the kept document.
    pub kept: String,
    /// MinHash-estimated Jaccard (near duplicates only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub jaccard: Option<f64>,
}

/// Dedup settings as run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DedupSummary {
    /// Permutations.
    pub num_perm: usize,
    /// Words per shingle.
    pub shingle_size: usize,
    /// Jaccard threshold.
    pub threshold: f64,
    /// Band/row split used.
    pub lsh: LshParams,
    /// Seed of the permutations.
    pub seed: u64,
    /// Candidate pairs that passed verification.
    pub duplicate_pairs: u64,
}

/// Token and sequence counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenCounts {
    /// Non-padding training tokens (eos included).
    pub train_tokens: u64,
    /// Non-padding validation tokens.
    pub val_tokens: u64,
    /// Training sequences.
    pub train_sequences: u64,
    /// Validation sequences.
    pub val_sequences: u64,
    /// Training documents.
    pub train_documents: u64,
    /// Validation documents.
    pub val_documents: u64,
    /// Chat examples left out: longer than `seq_len` (they are never split).
    #[serde(default)]
    pub chat_too_long: u64,
}

/// The tokenizer and the unified vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerSummary {
    /// File, relative to the data directory.
    pub file: String,
    /// Trained here (true) or loaded (false).
    pub trained: bool,
    /// Text (BPE) ids.
    pub text_vocab_size: u32,
    /// The whole unified vocabulary (model embedding rows).
    pub vocab_size: u32,
    /// Special token → id.
    pub special_tokens: BTreeMap<String, u32>,
    /// Image code ids `[start, end)`.
    pub image_codes: [u32; 2],
    /// Audio code ids `[start, end)`.
    pub audio_codes: [u32; 2],
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Per source, in config order.
    pub sources: Vec<SourceStats>,
    /// Rejections per rule over all sources.
    pub filter_rejections: BTreeMap<FilterRule, u64>,
    /// Byte-identical documents dropped.
    pub exact_duplicates: Vec<DuplicateEntry>,
    /// Near duplicates dropped.
    pub near_duplicates: Vec<DuplicateEntry>,
    /// Dedup settings.
    pub dedup: DedupSummary,
    /// Token counts.
    pub tokens: TokenCounts,
    /// Tokenizer and vocabulary.
    pub tokenizer: TokenizerSummary,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Skipped bad input (first [`MAX_LISTED_ISSUES`]).
    pub issues: Vec<Issue>,
    /// All skipped bad input, counted.
    pub issues_total: u64,
}

impl SourceStats {
    /// Empty stats for a configured source, with its licence resolved.
    pub fn for_source(cfg: &SourceConfig) -> SourceStats {
        let (license, origin) = match &cfg.license {
            Some(l) => (Some(l.clone()), "config".to_string()),
            None if cfg.kind == SourceKind::Dir => match detect_license(&cfg.path) {
                Some((l, file)) => (Some(l), file),
                None => (None, "unknown".into()),
            },
            None => (None, "unknown".into()),
        };
        SourceStats {
            kind: match cfg.kind {
                SourceKind::Dir => "dir",
                SourceKind::Jsonl => "jsonl",
                SourceKind::Parquet => "parquet",
                SourceKind::Chat => "chat",
            }
            .into(),
            path: cfg.path.display().to_string(),
            license,
            license_origin: origin,
            ..SourceStats::default()
        }
    }
}

const LICENSE_FILES: [&str; 6] = [
    "LICENSE",
    "LICENSE.txt",
    "LICENSE.md",
    "COPYING",
    "COPYING.txt",
    "LICENCE",
];

/// Look for a licence file in `root` or its parent and name its licence (SPDX id) from its
/// opening text. Returns the licence and the file it came from.
pub fn detect_license(root: &Path) -> Option<(String, String)> {
    let dirs = [Some(root), root.parent()];
    for dir in dirs.into_iter().flatten() {
        for name in LICENSE_FILES {
            let path = dir.join(name);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(16 * 1024)]).to_lowercase();
            return Some((
                classify_license(&head).to_string(),
                path.display().to_string(),
            ));
        }
    }
    None
}

/// SPDX id of a licence text (lower-cased); "LicenseRef-unknown" when not recognised.
pub fn classify_license(text: &str) -> &'static str {
    let has = |s: &str| text.contains(s);
    if has("python software foundation license") {
        "PSF-2.0"
    } else if has("apache license") && has("version 2.0") {
        "Apache-2.0"
    } else if has("gnu lesser general public license") {
        "LGPL"
    } else if has("gnu general public license") && has("version 3") {
        "GPL-3.0"
    } else if has("gnu general public license") && has("version 2") {
        "GPL-2.0"
    } else if has("mozilla public license") {
        "MPL-2.0"
    } else if has("permission is hereby granted, free of charge") {
        "MIT"
    } else if has("redistribution and use in source and binary forms") {
        if has("neither the name") {
            "BSD-3-Clause"
        } else {
            "BSD-2-Clause"
        }
    } else {
        "LicenseRef-unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licences_are_recognised_from_their_text() {
        let check = |text: &str, id: &str| assert_eq!(classify_license(&text.to_lowercase()), id);
        check(
            "MIT License\n\nPermission is hereby granted, free of charge, to any",
            "MIT",
        );
        check("Apache License\nVersion 2.0, January 2004", "Apache-2.0");
        check("PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2", "PSF-2.0");
        check(
            "Redistribution and use in source and binary forms ... Neither the name",
            "BSD-3-Clause",
        );
        check("all rights reserved", "LicenseRef-unknown");
    }

    #[test]
    fn licence_file_in_the_root_is_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("LICENSE"),
            "MIT License\nPermission is hereby granted, free of charge",
        )
        .unwrap();
        let (id, file) = detect_license(dir.path()).unwrap();
        assert_eq!(id, "MIT");
        assert!(file.ends_with("LICENSE"));
    }
}
