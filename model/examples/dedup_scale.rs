//! The bounded-memory directory dedup at scale: generate a deterministic synthetic corpus of
//! JSONL shards with planted near duplicates, then dedup it and report documents/s, peak RSS
//! (`VmHWM`) and the planted copies found.
//!
//! ```text
//! cargo run --release -p tritter-model --example dedup_scale -- generate DIR [DOCS] [FILES]
//! cargo run --release -p tritter-model --example dedup_scale -- run DIR MEMORY_MB [OUT.json]
//! ```
//!
//! Document `i` has 150–349 words from a Zipf-like vocabulary of 50,000 synthetic words, 12 per
//! line; every tenth document (`i % 10 == 9`) is instead a copy of an earlier original with 3%
//! of its lines dropped and 1% of its words replaced. Run one budget per process so `VmHWM` is
//! that run's peak.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde_json::json;
use tritter_model::data::config::DedupConfig;
use tritter_model::data::dedup_dir::{dedup_files, input_files};
use tritter_model::data::hash::{fmix64, unit_interval, SplitMix64};
use tritter_model::data::plant::{drop_lines, synthetic_text, synthetic_vocabulary};
use tritter_model::data::{exact_jaccard, shingle_hashes};

const SEED: u64 = 1;

/// The original that planted copy `i` copies (an earlier document that is not itself a copy).
fn source_of(i: u64) -> u64 {
    let s = fmix64(i ^ 0x5EED) % i;
    if s % 10 == 9 {
        s - 1
    } else {
        s
    }
}

fn is_copy(i: u64) -> bool {
    i % 10 == 9
}

fn original(i: u64, vocab: &[String]) -> String {
    let mut g = SplitMix64::new(fmix64(i.wrapping_add(0xD0C)));
    let words = 150 + (g.next_u64() % 200) as usize;
    synthetic_text(&mut g, words, vocab)
}

fn document(i: u64, vocab: &[String]) -> String {
    if !is_copy(i) {
        return original(i, vocab);
    }
    let mut g = SplitMix64::new(fmix64(i ^ 0xC0FE));
    let kept = drop_lines(&original(source_of(i), vocab), 0.03, &mut g);
    kept.split_inclusive([' ', '\n'])
        .map(|w| {
            if unit_interval(g.next_u64()) < 0.01 {
                let end = if w.ends_with('\n') { "\n" } else { " " };
                format!(
                    "{}{end}",
                    vocab[(g.next_u64() % vocab.len() as u64) as usize]
                )
            } else {
                w.to_string()
            }
        })
        .collect()
}

fn vocabulary() -> Vec<String> {
    synthetic_vocabulary(&mut SplitMix64::new(77), 50_000)
}

fn generate(dir: &Path, docs: u64, files: u64) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let vocab = vocabulary();
    let per = docs.div_ceil(files);
    let t = Instant::now();
    (0..files)
        .into_par_iter()
        .map(|f| -> std::io::Result<()> {
            let path = dir.join(format!("part-{f:05}.jsonl"));
            let mut w = BufWriter::new(std::fs::File::create(path)?);
            for i in f * per..((f + 1) * per).min(docs) {
                let rec = json!({ "content": document(i, &vocab) });
                writeln!(w, "{rec}")?;
            }
            w.flush()
        })
        .collect::<std::io::Result<()>>()?;
    println!(
        "{docs} documents in {files} files: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Peak resident set size of this process (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn run(dir: &Path, memory_mb: usize, out: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let files = input_files(dir)?;
    let work = tempfile::tempdir_in(dir.parent().unwrap_or(Path::new(".")))?;
    let cfg = DedupConfig {
        memory_mb,
        ..DedupConfig::default()
    };
    let t = Instant::now();
    let res = dedup_files(&files, work.path(), &cfg, SEED)?;
    let seconds = t.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    let n = res.report.documents;
    let (mut copies, mut found, mut false_dups) = (0u64, 0u64, 0u64);
    for i in 0..n {
        let r = res.root[i as usize] as u64;
        if is_copy(i) {
            copies += 1;
            found += u64::from(res.root[source_of(i) as usize] as u64 == r);
        } else if r != i {
            // An original clustered under an earlier document: not planted.
            false_dups += 1;
        }
    }
    // After the measurement: the exact word 5-gram Jaccard of every planted copy.
    let vocab = vocabulary();
    let above: Vec<(bool, bool)> = (0..n)
        .into_par_iter()
        .filter(|&i| is_copy(i))
        .map(|i| {
            let a = shingle_hashes(&original(source_of(i), &vocab), 5, true);
            let b = shingle_hashes(&document(i, &vocab), 5, true);
            let hit = res.root[source_of(i) as usize] == res.root[i as usize];
            (exact_jaccard(&a, &b) >= 0.75, hit)
        })
        .collect();
    let plants = above.iter().filter(|p| p.0).count();
    let plants_found = above.iter().filter(|p| p.0 && p.1).count();
    let report = json!({
        "documents": n,
        "files": files.len(),
        "threads": rayon::current_num_threads(),
        "memory_mb": memory_mb,
        "seconds": seconds,
        "docs_per_s": n as f64 / seconds,
        "peak_rss_mib": peak,
        "planted_copies": copies,
        "planted_found": found,
        "planted_recall": found as f64 / copies.max(1) as f64,
        "unplanted_duplicates": false_dups,
        "planted_jaccard_ge_0_75": plants,
        "planted_jaccard_ge_0_75_found": plants_found,
        "dedup": res.report,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(o) = out {
        std::fs::write(o, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: dedup_scale generate DIR [DOCS] [FILES] | run DIR MEMORY_MB [OUT.json]";
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["generate", dir, rest @ ..] => {
            let docs = rest.first().map_or(Ok(1_000_000), |s| s.parse())?;
            let files = rest.get(1).map_or(Ok(64), |s| s.parse())?;
            generate(&PathBuf::from(dir), docs, files)
        }
        ["run", dir, mb, rest @ ..] => run(&PathBuf::from(dir), mb.parse()?, rest.first().copied()),
        _ => Err(usage.into()),
    }
}
