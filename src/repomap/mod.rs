//! The repo map (aider's idea): the definitions of a project's `.py` and `.rs` files that the rest
//! of its code refers to most, ranked and cut to a token budget, for the prompt's context. This
//! file states what the steps share; beside it: `walk` (the files, `.gitignore`d, hidden, huge and
//! non-source files left out), `tags` (definitions and references of one file by tree-sitter tag
//! queries), `build` (tags for a whole tree, re-parsing only files whose size or mtime changed),
//! `rank` (PageRank over the file reference graph, boosted toward files and names the user
//! mentioned), `render` (the best definitions as text within a token budget) and `synth`
//! (synthetic repositories with known reference counts, for the tests and the benchmark).
//!
//! What it must match: a definition's line is the source line where its name stands (1-based in
//! the text); references are counted per name, as the tag queries capture them, so a name defined
//! in several files is a reference to each of them. Nothing here runs or imports the code it reads.

pub mod build;
pub mod rank;
pub mod render;
pub mod synth;
pub mod tags;
pub mod walk;

use std::path::PathBuf;
use std::time::SystemTime;

/// Files larger than this are left out of the map (generated code, data dumps).
pub const MAX_FILE_BYTES: u64 = 256 * 1024;
/// At most this many source files are mapped (a map started in a home folder stays bounded).
pub const MAX_FILES: usize = 20_000;
/// A definition's line is cut to this many characters in the map.
pub const MAX_LINE_CHARS: usize = 100;

/// Why the map could not be built at all (a single bad file is skipped, never an error).
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("cannot read the folder {path}: {cause}")]
    Root { path: PathBuf, cause: String },
    #[error("tree-sitter: {0}")]
    Grammar(String),
}

/// The languages the map reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    Rust,
    Python,
}

impl Lang {
    /// By file extension (`rs`, `py`, `pyi`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "rs" => Some(Self::Rust),
            "py" | "pyi" => Some(Self::Python),
            _ => None,
        }
    }
}

/// One definition: its name, what it is (`fn`, `struct`, `class`, ...), its 0-based line and
/// that line's text (trimmed, at most `MAX_LINE_CHARS` characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Def {
    pub name: String,
    pub kind: &'static str,
    pub line: usize,
    pub text: String,
}

/// The tags of one file, with the size and mtime they were read at (the cache key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileTags {
    /// Relative to the mapped folder, `/`-separated.
    pub path: String,
    pub size: u64,
    pub mtime: Option<SystemTime>,
    pub defs: Vec<Def>,
    /// Referenced names with how often each occurs, sorted by name.
    pub refs: Vec<(String, usize)>,
}

/// The tags of a folder's source files, sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoTags {
    pub root: PathBuf,
    pub files: Vec<std::sync::Arc<FileTags>>,
}

/// What a build did and how long it took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildStats {
    /// Source files mapped (parsed now or reused).
    pub files: usize,
    /// Files parsed by this build (the others were unchanged and reused).
    pub parsed: usize,
    /// Files left out: binary, not UTF-8, unreadable, or grown past the size limit.
    pub skipped: usize,
    /// Candidate files over `MAX_FILE_BYTES`, or past `MAX_FILES`.
    pub too_large: usize,
    pub defs: usize,
    pub refs: usize,
    pub walk_ms: f64,
    pub parse_ms: f64,
    pub total_ms: f64,
}

/// What the user's message points at: files (relative paths) and names it mentions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Focus {
    pub files: Vec<String>,
    pub names: std::collections::HashSet<String>,
}

impl Focus {
    /// The words of `text` that look like identifiers (at least 3 characters), as names, and
    /// the mapped paths it names.
    pub fn from_text(text: &str, tags: &RepoTags) -> Self {
        let names = text
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| w.len() >= 3 && !w.starts_with(|c: char| c.is_ascii_digit()))
            .map(str::to_string)
            .collect();
        let files = tags
            .files
            .iter()
            .filter(|f| text.contains(f.path.as_str()))
            .map(|f| f.path.clone())
            .collect();
        Self { files, names }
    }
}
