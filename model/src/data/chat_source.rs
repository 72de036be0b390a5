//! The `chat` source: JSONL files of conversations ([`super::chat::parse_record`]), each line a
//! document whose text is the conversation in Tritter's chat format
//! ([`super::chat::render_example`]). Unlike the `jsonl` source, a bad line is not skipped: it
//! stops the pipeline with the file, the line number and what is wrong
//! ([`super::DataError::ChatLine`]), since a half-read instruction set trains a different model.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use super::chat::{parse_record, render_example};
use super::document::{Document, SourceEvent};
use super::walk::{open_next, Walk};
use super::DataError;

/// Reads conversations, one per non-blank line, in walk order.
pub(crate) struct ChatSource {
    pub(crate) index: usize,
    pub(crate) walk: Walk,
    pub(crate) current: Option<(PathBuf, BufReader<File>, u64)>,
}

impl Iterator for ChatSource {
    type Item = SourceEvent;
    fn next(&mut self) -> Option<SourceEvent> {
        let mut line = String::new();
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
            let fatal = |message: String| {
                SourceEvent::Fatal(DataError::ChatLine {
                    path: path.clone(),
                    line: *lineno,
                    message,
                })
            };
            match reader.read_line(&mut line) {
                Ok(0) => {
                    self.current = None;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let ev = fatal(e.to_string());
                    self.current = None;
                    return Some(ev);
                }
            }
            if line.trim().is_empty() {
                continue;
            }
            return Some(match parse_record(&line) {
                Ok(turns) => SourceEvent::Doc(Document {
                    source: self.index,
                    path: format!("{}:{}", path.display(), lineno),
                    bytes: render_example(&turns).into_bytes(),
                }),
                Err(message) => fatal(message),
            });
        }
    }
}
