//! Sources and bad input: JSONL with invalid lines, Parquet (snappy and zstd, The Stack column
//! names) and a Parquet file without `content`, unreadable and missing paths — each reported
//! and counted, never a crash or a silent loss.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use tritter_model::data::config::{Language, SourceConfig, SourceKind};
use tritter_model::data::source::{open_source, SourceEvent};
use tritter_model::data::{prepare, DataConfig, Issue, IssueKind, NoProgress};

/// Columns by name: (name, optional, values; `None` = null).
type Column<'a> = (&'a str, bool, Vec<Option<&'a str>>);

fn write_parquet(path: &Path, compression: Compression, columns: &[Column]) {
    let fields: String = columns
        .iter()
        .map(|(name, opt, _)| {
            format!(
                "{} BYTE_ARRAY {} (UTF8); ",
                if *opt { "OPTIONAL" } else { "REQUIRED" },
                name
            )
        })
        .collect();
    let schema = Arc::new(parse_message_type(&format!("message schema {{ {fields} }}")).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(compression)
            .build(),
    );
    let mut writer = SerializedFileWriter::new(File::create(path).unwrap(), schema, props).unwrap();
    let mut rg = writer.next_row_group().unwrap();
    let mut i = 0;
    while let Some(mut col) = rg.next_column().unwrap() {
        let (_, opt, vals) = &columns[i];
        let present: Vec<ByteArray> = vals.iter().flatten().map(|s| ByteArray::from(*s)).collect();
        let defs: Vec<i16> = vals.iter().map(|v| v.is_some() as i16).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&present, opt.then_some(&defs[..]), None)
            .unwrap();
        col.close().unwrap();
        i += 1;
    }
    rg.close().unwrap();
    writer.close().unwrap();
}

fn source(kind: SourceKind, path: &Path, languages: Vec<Language>) -> SourceConfig {
    SourceConfig {
        kind,
        path: path.to_path_buf(),
        languages,
        license: None,
        max_docs: None,
    }
}

fn collect(cfg: &SourceConfig) -> (Vec<(String, String)>, Vec<Issue>, u64) {
    let (mut docs, mut issues, mut skipped) = (Vec::new(), Vec::new(), 0);
    for ev in open_source(0, cfg, 1 << 20) {
        match ev {
            SourceEvent::Doc(d) => docs.push((d.path, String::from_utf8(d.bytes).unwrap())),
            SourceEvent::Issue(i) => issues.push(i),
            SourceEvent::LanguageSkipped => skipped += 1,
            SourceEvent::TooLarge { path } => panic!("unexpected too large {path}"),
            SourceEvent::Fatal(e) => panic!("unexpected fatal {e}"),
        }
    }
    (docs, issues, skipped)
}

#[test]
fn parquet_with_stack_columns_reads_under_snappy_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let columns: Vec<Column> = vec![
        (
            "content",
            false,
            vec![Some("print(1)\n"), Some("fn main() {}\n"), Some("x = 2\n")],
        ),
        ("lang", true, vec![Some("Python"), Some("Rust"), None]),
        (
            "max_stars_repo_path",
            false,
            vec![Some("a/one.py"), Some("b/main.rs"), Some("c/x.py")],
        ),
        ("max_stars_count", true, vec![Some("3"), None, None]),
    ];
    write_parquet(
        &dir.path().join("0-snappy.parquet"),
        Compression::SNAPPY,
        &columns,
    );
    write_parquet(
        &dir.path().join("1-zstd.parquet"),
        Compression::ZSTD(ZstdLevel::try_new(3).unwrap()),
        &columns,
    );
    let (docs, issues, skipped) = collect(&source(SourceKind::Parquet, dir.path(), vec![]));
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(skipped, 0);
    let expect = [
        ("a/one.py", "print(1)\n"),
        ("b/main.rs", "fn main() {}\n"),
        ("c/x.py", "x = 2\n"),
    ];
    let expect: Vec<(String, String)> = expect
        .iter()
        .chain(&expect)
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    assert_eq!(docs, expect);
    // Language selection by the `lang` column: rows without one are skipped when selecting.
    let (docs, _, skipped) = collect(&source(
        SourceKind::Parquet,
        dir.path(),
        vec![Language::Rust],
    ));
    assert_eq!(docs.len(), 2);
    assert!(docs.iter().all(|(p, _)| p == "b/main.rs"));
    assert_eq!(skipped, 4);
}

/// Linux only: `/proc/self/mem` opens but fails to read at offset 0 (EIO), even for root, which
/// makes a dependable unreadable file.
#[cfg(target_os = "linux")]
#[test]
fn bad_input_is_reported_and_counted_never_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("docs.jsonl");
    std::fs::write(
        &jsonl,
        b"{\"content\": \"def ok():\\n    return 1\\n\", \"path\": \"ok.py\"}\n\
          {\"content\": \"def broken(\n\
          \n\
          {\"text\": \"no content field\"}\n\
          {\"content\": 42}\n\
          {\"content\": \"bad \xff utf8\"}\n\
          {\"content\": \"fn second() -> u8 {\\n    2\\n}\\n\", \"lang\": \"Rust\"}\n",
    )
    .unwrap();
    let no_content = dir.path().join("nocontent.parquet");
    write_parquet(
        &no_content,
        Compression::SNAPPY,
        &[
            ("text", false, vec![Some("a"), Some("b")]),
            ("lang", false, vec![Some("Python"), Some("Python")]),
        ],
    );
    let not_parquet = dir.path().join("garbage.parquet");
    std::fs::write(&not_parquet, b"this is not a parquet file at all").unwrap();

    let cfg = DataConfig::from_toml_str(&format!(
        r#"
seq_len = 16
val_fraction = 0.0
[[sources]]
kind = "jsonl"
path = "{jsonl}"
[[sources]]
kind = "parquet"
path = "{pq}"
[[sources]]
kind = "dir"
path = "{missing}"
[[sources]]
kind = "jsonl"
path = "/proc/self/mem"
[tokenizer]
vocab_size = 300
"#,
        jsonl = jsonl.display(),
        pq = dir.path().display(),
        missing = dir.path().join("does-not-exist").display(),
    ))
    .unwrap();
    let run = tempfile::tempdir().unwrap();
    let m = prepare(&cfg, run.path(), &NoProgress).unwrap();

    let s = &m.sources;
    assert_eq!(s[0].documents, 2);
    assert_eq!(s[0].issues.get(&IssueKind::InvalidLine), Some(&4));
    assert_eq!(s[0].lost_documents, 4);
    assert_eq!(s[1].issues.get(&IssueKind::BadParquetFile), Some(&2));
    assert_eq!(s[1].lost_documents, 2); // the two rows of the file without `content`
    assert_eq!(s[2].issues.get(&IssueKind::MissingSource), Some(&1));
    assert_eq!(s[3].issues.get(&IssueKind::UnreadableFile), Some(&1));
    assert_eq!(m.issues_total, 8);
    assert_eq!(m.issues.len(), 8);
    let lines: Vec<&str> = m
        .issues
        .iter()
        .filter(|i| i.kind == IssueKind::InvalidLine)
        .map(|i| i.path.rsplit(':').next().unwrap())
        .collect();
    assert_eq!(lines, ["2", "4", "5", "6"]);
    assert!(m
        .issues
        .iter()
        .any(|i| i.path.ends_with("nocontent.parquet") && i.message.contains("content")));
    assert_eq!(m.tokens.train_documents, 2);
}

#[test]
fn jsonl_fields_language_selection_and_max_docs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    std::fs::write(
        &path,
        "{\"content\": \"a = 1\\n\", \"lang\": \"Python\", \"path\": \"x/a.py\"}\n\
         {\"content\": \"fn b() {}\\n\", \"language\": \"Rust\"}\n\
         {\"content\": \"c = 3\\n\", \"lang\": \"python\", \"extra\": [1, 2]}\n\
         {\"content\": \"no lang\\n\"}\n",
    )
    .unwrap();
    let (docs, issues, skipped) = collect(&source(SourceKind::Jsonl, &path, vec![]));
    assert!(issues.is_empty());
    assert_eq!(skipped, 0);
    let shown = path.display().to_string();
    let paths: Vec<String> = docs.iter().map(|d| d.0.clone()).collect();
    assert_eq!(
        paths,
        [
            "x/a.py".to_string(),
            format!("{shown}:2"),
            format!("{shown}:3"),
            format!("{shown}:4")
        ]
    );
    let (docs, _, skipped) = collect(&source(SourceKind::Jsonl, &path, vec![Language::Python]));
    assert_eq!(docs.len(), 2);
    assert_eq!(skipped, 2);
    let mut limited = source(SourceKind::Jsonl, &path, vec![]);
    limited.max_docs = Some(3);
    assert_eq!(collect(&limited).0.len(), 3);
}
