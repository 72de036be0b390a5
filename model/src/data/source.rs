//! Document sources: directory trees (language chosen by extension), JSONL files, and Parquet
//! files with The Stack's column names.
//!
//! Every source is a streaming iterator of [`SourceEvent`]s in a deterministic order (directory
//! entries sorted by name), holding at most one document (or one Parquet batch) at a time.
//! Unreadable files, invalid JSONL lines and malformed Parquet files become [`Issue`]s: counted,
//! reported, skipped — never a crash and never a silent loss.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{Language, SourceConfig, SourceKind};

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
}

/// Open source `index` as a stream of events. `max_bytes` lets directory sources reject large
/// files from their metadata alone.
pub fn open_source(
    index: usize,
    cfg: &SourceConfig,
    max_bytes: u64,
) -> Box<dyn Iterator<Item = SourceEvent> + Send> {
    let languages = cfg.effective_languages();
    let events: Box<dyn Iterator<Item = SourceEvent> + Send> = match cfg.kind {
        SourceKind::Dir => Box::new(DirSource {
            index,
            walk: Walk::new(index, &cfg.path, None),
            languages,
            max_bytes,
        }),
        SourceKind::Jsonl => Box::new(JsonlSource {
            index,
            walk: Walk::new(index, &cfg.path, Some("jsonl")),
            languages,
            current: None,
        }),
        SourceKind::Parquet => Box::new(super::parquet_source::ParquetSource::new(
            index,
            Walk::new(index, &cfg.path, Some("parquet")),
            languages,
        )),
    };
    match cfg.max_docs {
        Some(max) => Box::new(LimitDocs {
            inner: events,
            left: max,
        }),
        None => events,
    }
}

struct LimitDocs {
    inner: Box<dyn Iterator<Item = SourceEvent> + Send>,
    left: u64,
}

impl Iterator for LimitDocs {
    type Item = SourceEvent;
    fn next(&mut self) -> Option<SourceEvent> {
        if self.left == 0 {
            return None;
        }
        let ev = self.inner.next()?;
        if matches!(ev, SourceEvent::Doc(_) | SourceEvent::TooLarge { .. }) {
            self.left -= 1;
        }
        Some(ev)
    }
}

/// Whether a document with `lang` passes the language selection `languages` (empty = all).
pub(crate) fn language_selected(languages: &[Language], lang: Option<&str>) -> bool {
    languages.is_empty()
        || lang
            .and_then(Language::from_name)
            .is_some_and(|l| languages.contains(&l))
}

/// Depth-first walk over the files under a path, in sorted order; a plain file yields itself.
/// Hidden entries (names starting with '.') are skipped. With `ext`, only files with that
/// extension are yielded (unless the root itself is a file).
pub(crate) struct Walk {
    index: usize,
    root: PathBuf,
    stack: Vec<PathBuf>,
    ext: Option<&'static str>,
    root_missing: bool,
}

impl Walk {
    pub(crate) fn new(index: usize, root: &Path, ext: Option<&'static str>) -> Walk {
        let missing = !root.exists();
        Walk {
            index,
            root: root.to_path_buf(),
            stack: if missing {
                Vec::new()
            } else {
                vec![root.to_path_buf()]
            },
            ext,
            root_missing: missing,
        }
    }
}

/// An item of a walk: a file to read, or an issue.
pub(crate) enum WalkItem {
    File(PathBuf),
    Issue(Issue),
}

impl Iterator for Walk {
    type Item = WalkItem;
    fn next(&mut self) -> Option<WalkItem> {
        if self.root_missing {
            self.root_missing = false;
            return Some(WalkItem::Issue(Issue {
                source: self.index,
                kind: IssueKind::MissingSource,
                path: self.root.display().to_string(),
                message: "source path does not exist".into(),
                lost: 0,
            }));
        }
        while let Some(path) = self.stack.pop() {
            // The root is followed if it is a link; links inside the tree are not.
            let meta = if path == self.root {
                std::fs::metadata(&path)
            } else {
                std::fs::symlink_metadata(&path)
            };
            let meta = match meta {
                Ok(m) => m,
                Err(e) => return Some(unreadable(self.index, &path, &e)),
            };
            if meta.is_dir() {
                let entries = match std::fs::read_dir(&path) {
                    Ok(rd) => rd,
                    Err(e) => return Some(unreadable(self.index, &path, &e)),
                };
                let mut children = Vec::new();
                for entry in entries {
                    match entry {
                        Ok(e) => {
                            if !e.file_name().to_string_lossy().starts_with('.') {
                                children.push(e.path());
                            }
                        }
                        Err(e) => return Some(unreadable(self.index, &path, &e)),
                    }
                }
                children.sort();
                children.reverse();
                self.stack.extend(children);
                continue;
            }
            if meta.is_file() {
                let wanted = match self.ext {
                    Some(ext) => path == self.root || path.extension().is_some_and(|e| e == ext),
                    None => true,
                };
                if wanted {
                    return Some(WalkItem::File(path));
                }
            }
            // Symlinks and special files are not followed: a tree walk must terminate.
        }
        None
    }
}

fn unreadable(index: usize, path: &Path, e: &std::io::Error) -> WalkItem {
    WalkItem::Issue(Issue {
        source: index,
        kind: IssueKind::UnreadableFile,
        path: path.display().to_string(),
        message: e.to_string(),
        lost: 0,
    })
}

struct DirSource {
    index: usize,
    walk: Walk,
    languages: Vec<Language>,
    max_bytes: u64,
}

impl Iterator for DirSource {
    type Item = SourceEvent;
    fn next(&mut self) -> Option<SourceEvent> {
        loop {
            let path = match self.walk.next()? {
                WalkItem::Issue(i) => return Some(SourceEvent::Issue(i)),
                WalkItem::File(p) => p,
            };
            let lang = path
                .extension()
                .and_then(|e| e.to_str())
                .and_then(Language::from_extension);
            if !lang.is_some_and(|l| self.languages.is_empty() || self.languages.contains(&l)) {
                continue;
            }
            let shown = path.display().to_string();
            let read = File::open(&path).and_then(|f| {
                let len = f.metadata()?.len();
                if len > self.max_bytes {
                    return Ok(None);
                }
                let mut bytes = Vec::with_capacity(len as usize);
                // Read at most one byte past the cap: a file that grew is still rejected.
                f.take(self.max_bytes + 1).read_to_end(&mut bytes)?;
                Ok(Some(bytes))
            });
            return Some(match read {
                Ok(Some(bytes)) => SourceEvent::Doc(Document {
                    source: self.index,
                    path: shown,
                    bytes,
                }),
                Ok(None) => SourceEvent::TooLarge { path: shown },
                Err(e) => match unreadable(self.index, &path, &e) {
                    WalkItem::Issue(i) => SourceEvent::Issue(i),
                    WalkItem::File(_) => continue,
                },
            });
        }
    }
}

#[derive(Deserialize)]
struct JsonlRecord {
    content: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

struct JsonlSource {
    index: usize,
    walk: Walk,
    languages: Vec<Language>,
    current: Option<(PathBuf, BufReader<File>, u64)>,
}

impl Iterator for JsonlSource {
    type Item = SourceEvent;
    fn next(&mut self) -> Option<SourceEvent> {
        let mut line = Vec::new();
        loop {
            let Some((path, reader, lineno)) = self.current.as_mut() else {
                match self.walk.next()? {
                    WalkItem::Issue(i) => return Some(SourceEvent::Issue(i)),
                    WalkItem::File(p) => match File::open(&p) {
                        Ok(f) => self.current = Some((p, BufReader::new(f), 0)),
                        Err(e) => {
                            if let WalkItem::Issue(i) = unreadable(self.index, &p, &e) {
                                return Some(SourceEvent::Issue(i));
                            }
                        }
                    },
                }
                continue;
            };
            line.clear();
            *lineno += 1;
            let at = format!("{}:{}", path.display(), lineno);
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    self.current = None;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let issue = Issue {
                        source: self.index,
                        kind: IssueKind::UnreadableFile,
                        path: at,
                        message: format!("{e}; rest of the file skipped"),
                        lost: 0,
                    };
                    self.current = None;
                    return Some(SourceEvent::Issue(issue));
                }
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(match serde_json::from_slice::<JsonlRecord>(&line) {
                Ok(rec) => {
                    let lang = rec.lang.as_deref().or(rec.language.as_deref());
                    if !language_selected(&self.languages, lang) {
                        SourceEvent::LanguageSkipped
                    } else {
                        SourceEvent::Doc(Document {
                            source: self.index,
                            path: rec.path.unwrap_or(at),
                            bytes: rec.content.into_bytes(),
                        })
                    }
                }
                Err(e) => SourceEvent::Issue(Issue {
                    source: self.index,
                    kind: IssueKind::InvalidLine,
                    path: at,
                    message: e.to_string(),
                    lost: 1,
                }),
            });
        }
    }
}
