//! Recall of the directory dedup on near duplicates planted in real source files: every
//! original gets one edited copy (renamed identifiers, dropped lines); copies whose exact word
//! 5-gram Jaccard with the original is ≥ 0.75 should share its cluster, copies below 0.5 should
//! not. Prints (and writes) the counts as JSON.
//!
//! ```text
//! cargo run --release -p tritter-model --example dedup_recall -- DIR EXT OUT.json [MAX] [BANDS ROWS]
//! ```
//!
//! DIR is a folder of package folders named `NAME-VERSION` (a Cargo registry's `src/*/`):
//! only the last version of each package is read, so versions of one package do not pair with
//! each other. Every `*.EXT` file of at least 200 words is an original (at most MAX, default
//! 3000, chosen in path order). BANDS ROWS override the split chosen for the threshold.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use tritter_model::data::config::DedupConfig;
use tritter_model::data::dedup_dir::dedup_files;
use tritter_model::data::hash::SplitMix64;
use tritter_model::data::plant::{drop_lines, rename_identifiers};
use tritter_model::data::{exact_jaccard, shingle_hashes};

const SEED: u64 = 11;

/// Files ending in `.ext` under `dir`, sorted.
fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_symlink() {
            continue;
        }
        if p.is_dir() {
            walk(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

/// The last version folder of each package (`NAME-VERSION`, name up to the last `-` before a
/// digit).
fn latest_packages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let name = d
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let base = name
            .match_indices('-')
            .filter(|(i, _)| name[i + 1..].starts_with(|c: char| c.is_ascii_digit()))
            .map(|(i, _)| name[..i].to_string())
            .next_back()
            .unwrap_or(name.clone());
        by_name.insert(base, d);
    }
    Ok(by_name.into_values().collect())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, ext, out) = match args.as_slice() {
        [d, e, o, ..] => (PathBuf::from(d), e.clone(), o.clone()),
        _ => return Err("usage: dedup_recall DIR EXT OUT.json [MAX] [BANDS ROWS]".into()),
    };
    let max: usize = args.get(3).map_or(Ok(3000), |s| s.parse())?;
    let mut cfg = DedupConfig::default();
    if let (Some(b), Some(r)) = (args.get(4), args.get(5)) {
        cfg.bands = Some(b.parse()?);
        cfg.rows = Some(r.parse()?);
    }
    let mut files = Vec::new();
    for pkg in latest_packages(&dir)? {
        walk(&pkg, &ext, &mut files);
    }
    let mut g = SplitMix64::new(SEED);
    let mut docs: Vec<String> = Vec::new();
    let mut pairs: Vec<(usize, usize, f64, &str)> = Vec::new();
    for f in &files {
        if pairs.len() >= max {
            break;
        }
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let sh = shingle_hashes(&text, cfg.shingle_size, cfg.lowercase);
        if sh.len() < 200 || text.len() > 200_000 {
            continue;
        }
        // Three light edits in four, one heavy.
        let heavy = g.next_u64().is_multiple_of(4);
        let (k, p) = if heavy {
            (8 + (g.next_u64() % 10) as usize, 0.3)
        } else {
            (
                (g.next_u64() % 4) as usize,
                (g.next_u64() % 15) as f64 / 100.0,
            )
        };
        let copy = drop_lines(&rename_identifiers(&text, k, &mut g), p, &mut g);
        let j = exact_jaccard(&sh, &shingle_hashes(&copy, cfg.shingle_size, cfg.lowercase));
        docs.push(text);
        docs.push(copy);
        pairs.push((
            docs.len() - 2,
            docs.len() - 1,
            j,
            if heavy { "heavy" } else { "light" },
        ));
    }
    let tmp = tempfile::tempdir()?;
    let (inputs, work) = (tmp.path().join("in"), tmp.path().join("work"));
    std::fs::create_dir_all(&inputs)?;
    std::fs::create_dir_all(&work)?;
    let mut shards = Vec::new();
    for (s, chunk) in docs.chunks(docs.len().div_ceil(8).max(1)).enumerate() {
        let path = inputs.join(format!("part-{s}.jsonl"));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for d in chunk {
            writeln!(w, "{}", json!({ "content": d }))?;
        }
        w.flush()?;
        shards.push(path);
    }
    let res = dedup_files(&shards, &work, &cfg, SEED)?;
    let same = |a: usize, b: usize| res.root[a] == res.root[b];
    let similar: Vec<_> = pairs.iter().filter(|p| p.2 >= 0.75).collect();
    let dissimilar: Vec<_> = pairs.iter().filter(|p| p.2 < 0.5).collect();
    let found = similar.iter().filter(|p| same(p.0, p.1)).count();
    let missed: Vec<f64> = similar
        .iter()
        .filter(|p| !same(p.0, p.1))
        .map(|p| p.2)
        .collect();
    let bins = [0.75, 0.8, 0.85, 0.9, 0.95, 1.01];
    let by_bin: Vec<_> = bins
        .windows(2)
        .map(|w| {
            let inb: Vec<_> = similar
                .iter()
                .filter(|p| p.2 >= w[0] && p.2 < w[1])
                .collect();
            let hit = inb.iter().filter(|p| same(p.0, p.1)).count();
            json!({ "jaccard": [w[0], w[1].min(1.0)], "plants": inb.len(), "found": hit })
        })
        .collect();
    let report = json!({
        "dir": dir,
        "ext": ext,
        "originals": pairs.len(),
        "lsh": res.report.lsh,
        "threshold": cfg.threshold,
        "plants_jaccard_ge_0_75": similar.len(),
        "plants_found": found,
        "recall": found as f64 / similar.len().max(1) as f64,
        "recall_by_jaccard": by_bin,
        "missed_jaccards": missed,
        "dissimilar_pairs_jaccard_lt_0_5": dissimilar.len(),
        "dissimilar_pairs_clustered": dissimilar.iter().filter(|p| same(p.0, p.1)).count(),
        "between_0_5_and_0_75": pairs.len() - similar.len() - dissimilar.len(),
        "dedup": res.report,
    });
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
