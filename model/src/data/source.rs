//! Document sources: directory trees (language chosen by extension), JSONL files, Parquet
//! files with The Stack's column names, and chat data (`chat_source`).
//!
//! Every source is a streaming iterator of [`SourceEvent`]s in a deterministic order (directory
//! entries sorted by name), holding at most one document (or one Parquet batch) at a time.
//! Unreadable files, invalid JSONL lines and malformed Parquet files become [`Issue`]s: counted,
//! reported, skipped — never a crash and never a silent loss.
//!
//! The types every source yields live in `document`, the shared file walk in `walk`; this module
//! dispatches to the Parquet source (`parquet_source`), which depends on those two, not on this.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use serde::Deserialize;

use super::chat_source::ChatSource;
use super::config::{Language, SourceConfig, SourceKind};
use super::document::language_selected;
pub use super::document::{Document, Issue, IssueKind, SourceEvent};
use super::parquet_source::ParquetSource;
use super::walk::{open_next, unreadable, Walk, WalkItem};

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
        SourceKind::Parquet => Box::new(ParquetSource::new(
            index,
            Walk::new(index, &cfg.path, Some("parquet")),
            languages,
        )),
        SourceKind::Chat => Box::new(ChatSource {
            index,
            walk: Walk::new(index, &cfg.path, Some("jsonl")),
            current: None,
        }),
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
                match open_next(&mut self.walk, self.index)? {
                    Ok((p, r)) => self.current = Some((p, r, 0)),
                    Err(i) => return Some(SourceEvent::Issue(i)),
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
