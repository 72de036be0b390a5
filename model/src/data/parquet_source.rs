//! Parquet source: The Stack / Stack-Edu files read row by row with the `parquet` crate's record
//! reader (no Arrow), projected onto the columns the pipeline uses.
//!
//! Column names must match The Stack's: `content` (required, UTF-8 string or binary), `lang` or
//! `language`, and `path` or `max_stars_repo_path`. Snappy and zstd pages are supported. A file
//! without `content` is one issue; a row that fails to decode ends the file with one issue that
//! counts the rows lost.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::Field;
use parquet::schema::types::Type;

use super::config::Language;
use super::document::{language_selected, Document, Issue, IssueKind, SourceEvent};
use super::walk::{Walk, WalkItem};

const LANG_COLUMNS: [&str; 2] = ["lang", "language"];
const PATH_COLUMNS: [&str; 2] = ["path", "max_stars_repo_path"];

struct OpenFile {
    path: String,
    rows: RowIter<'static>,
    row: u64,
    total_rows: u64,
}

pub(crate) struct ParquetSource {
    index: usize,
    walk: Walk,
    languages: Vec<Language>,
    current: Option<OpenFile>,
}

impl ParquetSource {
    pub(crate) fn new(index: usize, walk: Walk, languages: Vec<Language>) -> ParquetSource {
        ParquetSource {
            index,
            walk,
            languages,
            current: None,
        }
    }

    fn issue(&self, kind: IssueKind, path: String, message: String, lost: u64) -> SourceEvent {
        SourceEvent::Issue(Issue {
            source: self.index,
            kind,
            path,
            message,
            lost,
        })
    }

    fn open(&self, path: &Path) -> Result<OpenFile, SourceEvent> {
        let shown = path.display().to_string();
        let file = File::open(path)
            .map_err(|e| self.issue(IssueKind::UnreadableFile, shown.clone(), e.to_string(), 0))?;
        let reader = SerializedFileReader::new(file)
            .map_err(|e| self.issue(IssueKind::BadParquetFile, shown.clone(), e.to_string(), 0))?;
        let meta = reader.metadata().file_metadata();
        let total_rows = meta.num_rows().max(0) as u64;
        let root = meta.schema_descr().root_schema();
        let fields = root.get_fields();
        let find = |names: &[&str]| -> Option<Arc<Type>> {
            names
                .iter()
                .find_map(|n| fields.iter().find(|f| f.name() == *n && f.is_primitive()))
                .cloned()
        };
        let Some(content) = find(&["content"]) else {
            return Err(self.issue(
                IssueKind::BadParquetFile,
                shown,
                "no `content` column; file skipped".into(),
                total_rows,
            ));
        };
        let mut projected = vec![content];
        projected.extend(find(&LANG_COLUMNS));
        projected.extend(find(&PATH_COLUMNS));
        let bad = |e: parquet::errors::ParquetError| {
            self.issue(
                IssueKind::BadParquetFile,
                shown.clone(),
                e.to_string(),
                total_rows,
            )
        };
        let projection = Type::group_type_builder(root.name())
            .with_fields(projected)
            .build()
            .map_err(bad)?;
        let rows = RowIter::from_file_into(Box::new(reader))
            .project(Some(projection))
            .map_err(bad)?;
        Ok(OpenFile {
            path: shown,
            rows,
            row: 0,
            total_rows,
        })
    }
}

fn field_text(field: &Field) -> Option<Vec<u8>> {
    match field {
        Field::Str(s) => Some(s.as_bytes().to_vec()),
        Field::Bytes(b) => Some(b.data().to_vec()),
        _ => None,
    }
}

impl Iterator for ParquetSource {
    type Item = SourceEvent;
    fn next(&mut self) -> Option<SourceEvent> {
        loop {
            let Some(file) = self.current.as_mut() else {
                match self.walk.next()? {
                    WalkItem::Issue(i) => return Some(SourceEvent::Issue(i)),
                    WalkItem::File(p) => match self.open(&p) {
                        Ok(f) => self.current = Some(f),
                        Err(ev) => return Some(ev),
                    },
                }
                continue;
            };
            let at = format!("{}#{}", file.path, file.row);
            let row = match file.rows.next() {
                None => {
                    self.current = None;
                    continue;
                }
                Some(Ok(row)) => row,
                Some(Err(e)) => {
                    let lost = file.total_rows.saturating_sub(file.row);
                    self.current = None;
                    return Some(self.issue(
                        IssueKind::BadParquetRows,
                        at,
                        format!("{e}; rest of the file skipped"),
                        lost,
                    ));
                }
            };
            file.row += 1;
            let (mut content, mut lang, mut path) = (None, None, None);
            for (name, field) in row.get_column_iter() {
                let name = name.as_str();
                if name == "content" {
                    content = field_text(field);
                } else if LANG_COLUMNS.contains(&name) {
                    lang = field_text(field).map(|b| String::from_utf8_lossy(&b).into_owned());
                } else if PATH_COLUMNS.contains(&name) {
                    path = field_text(field).map(|b| String::from_utf8_lossy(&b).into_owned());
                }
            }
            let Some(content) = content else {
                return Some(self.issue(
                    IssueKind::BadParquetRows,
                    at,
                    "`content` is null".into(),
                    1,
                ));
            };
            if !language_selected(&self.languages, lang.as_deref()) {
                return Some(SourceEvent::LanguageSkipped);
            }
            return Some(SourceEvent::Doc(Document {
                source: self.index,
                path: path.unwrap_or(at),
                bytes: content,
            }));
        }
    }
}
