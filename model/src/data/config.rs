//! The `[data]` section of the training config: sources, quality filters, deduplication, tokenizer,
//! packing.
//!
//! Every field has a documented default; unknown keys are errors (`deny_unknown_fields`). Filter
//! defaults follow the StarCoder / The Stack cleaning rules (max line length 1000, mean line length
//! 100, alphanumeric fraction 0.25, a 1 MiB file-size cap, generator markers in the first
//! lines); near-dedup defaults follow the BigCode MinHash-LSH setup (5-word shingles, 256
//! permutations, Jaccard threshold 0.7). [`DataConfig::validate`] checks the values; the
//! pipeline calls it before it reads anything.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::lsh::{choose_bands_weighted, LshParams};

use super::DataError;

/// The whole `[data]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `[[data.sources]]`: where documents come from, read in this order. At least one.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// `[data.filter]`: quality filters.
    #[serde(default)]
    pub filter: FilterConfig,
    /// `[data.dedup]`: exact and near-duplicate removal.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// `[data.tokenizer]`: train or load the BPE tokenizer; sizes of the unified vocabulary.
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
    /// Tokens per packed training sequence. Default 2048.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Fraction of documents (by content hash, so stable under reordering) held out for
    /// validation. Default 0.01.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Seed of every random choice in the pipeline (MinHash permutations, train/val split).
    /// Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Sequences per shard file. Default 1024.
    #[serde(default = "default_shard_sequences")]
    pub shard_sequences: usize,
    /// Documents handed to the parallel filter / MinHash stage at once. Bounds memory together
    /// with `filter.max_bytes`. Default 512.
    #[serde(default = "default_batch_docs")]
    pub batch_docs: usize,
}

/// Kind of a data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A directory tree; files are selected by extension (see [`Language`]).
    Dir,
    /// A JSONL file, or a directory of `*.jsonl` files: one object per line with `content`
    /// and optional `lang` / `path`.
    Jsonl,
    /// A Parquet file, or a directory of `*.parquet` files, with The Stack's column names
    /// (`content`, `lang` or `language`, `path` or `max_stars_repo_path`).
    Parquet,
    /// Chat (instruction) data: a JSONL file, or a directory of `*.jsonl` files, one
    /// conversation per line (`{"messages": [{"role", "content"}, ...]}` or `{"problem",
    /// "solution"}`), rendered in Tritter's chat format; the loss covers the replies only. A bad
    /// line stops the pipeline with its file and line. The quality filters do not apply.
    Chat,
}

/// Programming languages the pipeline can select by file extension or by a `lang` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// `.py`, `.pyi`
    Python,
    /// `.rs`
    Rust,
    /// `.c`, `.h`
    C,
    /// `.cc`, `.cpp`, `.cxx`, `.hpp`, `.hh`
    Cpp,
    /// `.go`
    Go,
    /// `.java`
    Java,
    /// `.js`, `.mjs`
    JavaScript,
    /// `.ts`
    TypeScript,
    /// `.sh`, `.bash`
    Shell,
    /// `.md`
    Markdown,
}

impl Language {
    /// The language of a file extension (without the dot), if it is one of ours.
    pub fn from_extension(ext: &str) -> Option<Language> {
        Some(match ext {
            "py" | "pyi" => Language::Python,
            "rs" => Language::Rust,
            "c" | "h" => Language::C,
            "cc" | "cpp" | "cxx" | "hpp" | "hh" => Language::Cpp,
            "go" => Language::Go,
            "java" => Language::Java,
            "js" | "mjs" => Language::JavaScript,
            "ts" => Language::TypeScript,
            "sh" | "bash" => Language::Shell,
            "md" => Language::Markdown,
            _ => return None,
        })
    }

    /// The language of a `lang` value as The Stack spells it ("Python", "C++", "rust", ...).
    pub fn from_name(name: &str) -> Option<Language> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "python" => Language::Python,
            "rust" => Language::Rust,
            "c" => Language::C,
            "c++" | "cpp" => Language::Cpp,
            "go" => Language::Go,
            "java" => Language::Java,
            "javascript" | "js" => Language::JavaScript,
            "typescript" | "ts" => Language::TypeScript,
            "shell" | "bash" | "sh" => Language::Shell,
            "markdown" | "md" => Language::Markdown,
            _ => return None,
        })
    }
}

/// One `[[data.sources]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `dir`, `jsonl` or `parquet`.
    pub kind: SourceKind,
    /// File or directory to read.
    pub path: PathBuf,
    /// Languages to keep. For `dir` the default is `["python", "rust"]`; for `jsonl` / `parquet`
    /// an empty list (the default) keeps every document, otherwise documents whose `lang` is
    /// missing or not listed are skipped (and counted).
    #[serde(default)]
    pub languages: Vec<Language>,
    /// SPDX licence of the source, if known. For `dir` sources without one, a LICENSE / COPYING
    /// file at (or one level above) the root is inspected.
    #[serde(default)]
    pub license: Option<String>,
    /// Stop after this many documents from this source (all by default).
    #[serde(default)]
    pub max_docs: Option<u64>,
}

impl SourceConfig {
    /// The languages this source keeps; empty means all.
    pub fn effective_languages(&self) -> Vec<Language> {
        if self.languages.is_empty() && self.kind == SourceKind::Dir {
            vec![Language::Python, Language::Rust]
        } else {
            self.languages.clone()
        }
    }
}

/// `[data.filter]`: StarCoder / The Stack quality filters. A document failing any rule is
/// dropped and counted under that rule (the first failing rule, in the order of the fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Reject content that is not UTF-8 or holds NUL bytes (binary files). Default true.
    pub reject_binary: bool,
    /// Smallest accepted file, bytes. Default 1 (drops empty files).
    pub min_bytes: u64,
    /// Largest accepted file, bytes. Default 1 MiB (The Stack v1 cap); larger files are
    /// rejected from their size without being read.
    pub max_bytes: u64,
    /// Longest accepted line, in characters. Default 1000 (StarCoder).
    pub max_line_length: usize,
    /// Largest accepted mean line length, characters. Default 100 (StarCoder).
    pub max_mean_line_length: f64,
    /// Smallest accepted fraction of alphanumeric characters. Default 0.25 (StarCoder).
    pub min_alnum_fraction: f64,
    /// How many leading lines are searched for `autogen_markers`. Default 5 (StarCoder).
    pub autogen_lines: usize,
    /// Case-insensitive markers of generated files. Default: "auto-generated", "autogenerated",
    /// "automatically generated", "generated automatically", "this file is generated",
    /// "generated by", "do not edit".
    pub autogen_markers: Vec<String>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            reject_binary: true,
            min_bytes: 1,
            max_bytes: 1 << 20,
            max_line_length: 1000,
            max_mean_line_length: 100.0,
            min_alnum_fraction: 0.25,
            autogen_lines: 5,
            autogen_markers: [
                "auto-generated",
                "autogenerated",
                "automatically generated",
                "generated automatically",
                "this file is generated",
                "generated by",
                "do not edit",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

/// `[data.dedup]`: exact (content hash) and near-duplicate (MinHash-LSH) removal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Drop byte-identical documents (128-bit content hash). Default true.
    pub exact: bool,
    /// Drop near duplicates with MinHash-LSH. Default true.
    pub near: bool,
    /// MinHash permutations (signature length). Default 256.
    pub num_perm: usize,
    /// Words per shingle. Default 5.
    pub shingle_size: usize,
    /// Lower-case words before shingling. Default true (as BigCode's dedup).
    pub lowercase: bool,
    /// Jaccard similarity at which two documents count as duplicates. Default 0.7.
    pub threshold: f64,
    /// Weight of the false-positive area (candidate probability below `threshold`) when the
    /// band/row split is chosen. Default 0.1: verification removes false positives, so they
    /// cost only a signature comparison, while a missed pair is lost.
    pub false_positive_weight: f64,
    /// Weight of the false-negative area (miss probability above `threshold`). Default 0.9
    /// (32 bands × 8 rows at 0.7 and 256 permutations; 0.5 / 0.5 gives datasketch's default
    /// 25 × 10).
    pub false_negative_weight: f64,
    /// LSH bands; with `rows` overrides the split chosen for `threshold` (both or neither).
    pub bands: Option<usize>,
    /// LSH rows per band; see `bands`.
    pub rows: Option<usize>,
    /// Keep only LSH candidate pairs whose MinHash-estimated Jaccard reaches `threshold`
    /// (removes most LSH false positives). Default true.
    pub verify: bool,
    /// Memory for LSH band keys (16 bytes per document and band) before they are spilled to
    /// sorted runs on disk, in MiB. Default 256. Signatures always live in a temporary file.
    pub memory_mb: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            exact: true,
            near: true,
            num_perm: 256,
            shingle_size: 5,
            lowercase: true,
            threshold: 0.7,
            false_positive_weight: 0.1,
            false_negative_weight: 0.9,
            bands: None,
            rows: None,
            verify: true,
            memory_mb: 256,
        }
    }
}

/// `[data.tokenizer]`: BPE training or loading, and the sizes of the unified vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    /// Load this `tokenizer.json` instead of training one.
    pub path: Option<PathBuf>,
    /// Size of the text (BPE) part of the vocabulary when training, including the 256 byte
    /// tokens. Default 32000.
    pub vocab_size: usize,
    /// Merges need at least this many occurrences. Default 2.
    pub min_frequency: u64,
    /// Train on at most this many bytes of the filtered corpus (all by default).
    pub max_train_bytes: Option<u64>,
    /// Image VQ codes in the unified vocabulary. Default 8192.
    pub image_codes: u32,
    /// Audio codec codes in the unified vocabulary. Default 4096.
    pub audio_codes: u32,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            path: None,
            vocab_size: 32000,
            min_frequency: 2,
            max_train_bytes: None,
            image_codes: 8192,
            audio_codes: 4096,
        }
    }
}

fn default_seq_len() -> usize {
    2048
}
fn default_val_fraction() -> f64 {
    0.01
}
fn default_shard_sequences() -> usize {
    1024
}
fn default_batch_docs() -> usize {
    512
}

impl DataConfig {
    /// Parse a `[data]` table given as TOML text (the table's own content, not the whole file).
    pub fn from_toml_str(text: &str) -> Result<DataConfig, DataError> {
        let cfg: DataConfig = toml::from_str(text).map_err(|e| DataError::Config {
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Deserialize from the `data` value of an already parsed training config.
    pub fn from_toml_value(value: toml::Value) -> Result<DataConfig, DataError> {
        let cfg: DataConfig = value
            .try_into()
            .map_err(|e: toml::de::Error| DataError::Config {
                message: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check value ranges and combinations; the first problem is returned.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |message: String| Err(DataError::Config { message });
        if self.sources.is_empty() {
            return bad("data.sources is empty: add at least one [[data.sources]]".into());
        }
        if self.seq_len < 2 {
            return bad(format!(
                "data.seq_len must be at least 2, got {}",
                self.seq_len
            ));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!(
                "data.val_fraction must be in [0, 1), got {}",
                self.val_fraction
            ));
        }
        if self.shard_sequences == 0 || self.batch_docs == 0 {
            return bad("data.shard_sequences and data.batch_docs must be positive".into());
        }
        let f = &self.filter;
        if f.min_bytes > f.max_bytes {
            return bad(format!(
                "data.filter.min_bytes ({}) exceeds max_bytes ({})",
                f.min_bytes, f.max_bytes
            ));
        }
        if !(0.0..=1.0).contains(&f.min_alnum_fraction) {
            return bad(format!(
                "data.filter.min_alnum_fraction must be in [0, 1], got {}",
                f.min_alnum_fraction
            ));
        }
        let d = &self.dedup;
        if d.num_perm == 0 || d.shingle_size == 0 {
            return bad("data.dedup.num_perm and shingle_size must be positive".into());
        }
        if !(d.threshold > 0.0 && d.threshold < 1.0) {
            return bad(format!(
                "data.dedup.threshold must be in (0, 1), got {}",
                d.threshold
            ));
        }
        let weights = [d.false_positive_weight, d.false_negative_weight];
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || weights.iter().sum::<f64>() <= 0.0
        {
            return bad(format!(
                "data.dedup.false_positive_weight and false_negative_weight must be finite, \
                 non-negative and not both zero, got {} and {}",
                d.false_positive_weight, d.false_negative_weight
            ));
        }
        if d.memory_mb == 0 {
            return bad("data.dedup.memory_mb must be positive".into());
        }
        match (d.bands, d.rows) {
            (None, None) => {}
            (Some(b), Some(r)) if b > 0 && r > 0 && b * r <= d.num_perm => {}
            (Some(b), Some(r)) => {
                return bad(format!(
                "data.dedup.bands × rows = {b} × {r} must be positive and at most num_perm ({})",
                d.num_perm
            ))
            }
            _ => return bad("data.dedup.bands and rows must be given together".into()),
        }
        let t = &self.tokenizer;
        if t.path.is_none() && t.vocab_size < 257 {
            return bad(format!(
                "data.tokenizer.vocab_size must exceed the 256 byte tokens, got {}",
                t.vocab_size
            ));
        }
        Ok(())
    }
}

/// The LSH split the config asks for (explicit, or chosen for the threshold).
pub fn lsh_params(dedup: &DedupConfig) -> LshParams {
    match (dedup.bands, dedup.rows) {
        (Some(bands), Some(rows)) => LshParams { bands, rows },
        _ => choose_bands_weighted(
            dedup.threshold,
            dedup.num_perm,
            dedup.false_positive_weight,
            dedup.false_negative_weight,
        ),
    }
}
