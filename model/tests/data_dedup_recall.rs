//! Recall of the bounded-memory directory dedup on planted near duplicates: generated code
//! documents, each followed by an edited copy (renamed identifiers, dropped lines). Copies whose
//! exact word 5-gram Jaccard with their original is ≥ 0.75 must share its cluster (≥ 95%);
//! copies below 0.5 must not; and every cluster must lie inside a component of the naive
//! all-pairs graph (estimated Jaccard ≥ threshold over every pair of in-memory signatures).

use std::io::Write;

use tritter_model::data::config::DedupConfig;
use tritter_model::data::dedup_dir::{dedup_files, UnionFind};
use tritter_model::data::hash::SplitMix64;
use tritter_model::data::minhash::estimated_jaccard;
use tritter_model::data::plant::{drop_lines, rename_identifiers, synthetic_code};
use tritter_model::data::{exact_jaccard, shingle_hashes, MinHasher};

const SEED: u64 = 5;

/// Originals and edited copies: `(documents, pairs (original, copy, exact Jaccard))`.
fn corpus() -> (Vec<String>, Vec<(usize, usize, f64)>) {
    let mut g = SplitMix64::new(2024);
    let mut docs = Vec::new();
    let mut pairs = Vec::new();
    for i in 0..400 {
        let lines = 40 + (g.next_u64() % 100) as usize;
        let orig = synthetic_code(&mut g, lines);
        // Light edits for most copies; heavy ones for every fourth (the dissimilar pairs).
        let (k, p) = if i % 4 == 3 {
            (8 + (g.next_u64() % 8) as usize, 0.3)
        } else {
            (
                (g.next_u64() % 3) as usize,
                (g.next_u64() % 12) as f64 / 100.0,
            )
        };
        let copy = drop_lines(&rename_identifiers(&orig, k, &mut g), p, &mut g);
        let j = exact_jaccard(
            &shingle_hashes(&orig, 5, true),
            &shingle_hashes(&copy, 5, true),
        );
        docs.push(orig);
        docs.push(copy);
        pairs.push((docs.len() - 2, docs.len() - 1, j));
    }
    (docs, pairs)
}

#[test]
fn planted_copies_above_075_are_found_and_dissimilar_ones_are_not() {
    let (docs, pairs) = corpus();
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    // Five input shards, documents in order.
    let per = docs.len().div_ceil(5);
    let mut files = Vec::new();
    for (s, chunk) in docs.chunks(per).enumerate() {
        let path = inputs.join(format!("part-{s}.jsonl"));
        let mut f = std::fs::File::create(&path).unwrap();
        for d in chunk {
            writeln!(f, "{}", serde_json::json!({ "content": d })).unwrap();
        }
        files.push(path);
    }
    let cfg = DedupConfig {
        memory_mb: 1,
        ..DedupConfig::default()
    };
    let out = dedup_files(&files, &work, &cfg, SEED).unwrap();
    assert_eq!(out.report.documents, docs.len() as u64);
    assert_eq!(out.locate(per as u32 + 3), (1, 3));

    let similar: Vec<_> = pairs.iter().filter(|p| p.2 >= 0.75).collect();
    let dissimilar: Vec<_> = pairs.iter().filter(|p| p.2 < 0.5).collect();
    assert!(
        similar.len() >= 150 && dissimilar.len() >= 60,
        "{} {}",
        similar.len(),
        dissimilar.len()
    );
    let found = similar
        .iter()
        .filter(|p| out.root[p.1] == out.root[p.0])
        .count();
    let recall = found as f64 / similar.len() as f64;
    let false_pairs = dissimilar
        .iter()
        .filter(|p| out.root[p.1] == out.root[p.0])
        .count();
    eprintln!(
        "recall {found}/{} = {recall:.3}; dissimilar pairs clustered {false_pairs}/{}; {:?}",
        similar.len(),
        dissimilar.len(),
        out.report
    );
    assert!(recall >= 0.95, "recall {recall}");
    assert_eq!(false_pairs, 0);

    // Naive reference: every pair of signatures compared, no LSH.
    let hasher = MinHasher::new(cfg.num_perm, SEED);
    let sigs: Vec<Vec<u32>> = docs
        .iter()
        .map(|d| hasher.signature(&shingle_hashes(d, 5, true)))
        .collect();
    let mut naive = UnionFind::new(docs.len() as u32);
    let mut naive_pairs = 0;
    for a in 0..docs.len() {
        for b in a + 1..docs.len() {
            if estimated_jaccard(&sigs[a], &sigs[b]) >= cfg.threshold {
                naive.union(a as u32, b as u32);
                naive_pairs += 1;
            }
        }
    }
    assert!(naive_pairs > 0);
    for (i, &r) in out.root.iter().enumerate() {
        assert_eq!(
            naive.find(i as u32),
            naive.find(r),
            "document {i} clustered with {r} outside the naive component"
        );
    }
    // And LSH loses little of the naive graph's clustering.
    let naive_dups = (0..docs.len() as u32)
        .filter(|&i| naive.find(i) != i)
        .count() as u64;
    assert!(out.report.duplicates <= naive_dups);
    assert!(out.report.duplicates as f64 >= 0.95 * naive_dups as f64);
}
