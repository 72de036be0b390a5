//! Ranking: PageRank over the graph whose nodes are files and whose edge `r → d` says file `r`
//! refers to a name that file `d` defines (weight `√count`, ×10 for names the user mentioned,
//! ×0.1 for `_private` names and for names defined in more than five files; a file's references
//! to its own definitions are no edge). The teleport vector favours the files the user mentioned.
//! Each edge then hands its share of `r`'s rank to the definition it points at, so a definition's
//! score is how much of the ranked code refers to it — aider's scheme. Ties are broken by file
//! rank, path and line, so a ranking is deterministic.

use std::collections::HashMap;

use crate::repomap::{Focus, RepoTags};

/// PageRank's damping factor.
const DAMPING: f64 = 0.85;
const MAX_ITERS: usize = 100;
const TOLERANCE: f64 = 1e-10;

/// One definition in the ranking: `tags.files[file].defs[def]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RankedDef {
    pub file: usize,
    pub def: usize,
    pub score: f64,
}

/// Definitions best first (referenced ones, then the rest by their file's rank), and each
/// file's rank (summing to 1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ranking {
    pub defs: Vec<RankedDef>,
    pub file_rank: Vec<f64>,
}

/// An edge of the reference graph.
struct Edge<'a> {
    from: usize,
    to: usize,
    weight: f64,
    name: &'a str,
}

fn edges<'a>(tags: &'a RepoTags, focus: &Focus) -> Vec<Edge<'a>> {
    let mut defined: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, f) in tags.files.iter().enumerate() {
        for d in &f.defs {
            let v = defined.entry(d.name.as_str()).or_default();
            if v.last() != Some(&i) {
                v.push(i);
            }
        }
    }
    let mut out = Vec::new();
    for (from, f) in tags.files.iter().enumerate() {
        for (name, n) in &f.refs {
            let Some(definers) = defined.get(name.as_str()) else {
                continue;
            };
            let mut mul = 1.0;
            if focus.names.contains(name) {
                mul *= 10.0;
            }
            if name.starts_with('_') {
                mul *= 0.1;
            }
            if definers.len() > 5 {
                mul *= 0.1;
            }
            let weight = mul * (*n as f64).sqrt();
            for &to in definers.iter().filter(|&&to| to != from) {
                out.push(Edge {
                    from,
                    to,
                    weight,
                    name,
                });
            }
        }
    }
    out
}

/// PageRank by power iteration; dangling files give their rank back through `teleport`.
fn pagerank(n: usize, edges: &[Edge], teleport: &[f64]) -> Vec<f64> {
    let mut out_w = vec![0.0; n];
    for e in edges {
        out_w[e.from] += e.weight;
    }
    let mut rank = teleport.to_vec();
    for _ in 0..MAX_ITERS {
        let dangling: f64 = (0..n).filter(|&i| out_w[i] == 0.0).map(|i| rank[i]).sum();
        let mut next: Vec<f64> = teleport
            .iter()
            .map(|t| (1.0 - DAMPING + DAMPING * dangling) * t)
            .collect();
        for e in edges {
            next[e.to] += DAMPING * rank[e.from] * e.weight / out_w[e.from];
        }
        let diff: f64 = next.iter().zip(&rank).map(|(a, b)| (a - b).abs()).sum();
        rank = next;
        if diff < TOLERANCE {
            break;
        }
    }
    rank
}

/// Ranks the definitions of `tags` for a message about `focus`.
pub fn rank(tags: &RepoTags, focus: &Focus) -> Ranking {
    let n = tags.files.len();
    if n == 0 {
        return Ranking::default();
    }
    let mut teleport: Vec<f64> = tags
        .files
        .iter()
        .map(|f| {
            if focus.files.contains(&f.path) {
                n as f64
            } else {
                1.0
            }
        })
        .collect();
    let total: f64 = teleport.iter().sum();
    teleport.iter_mut().for_each(|t| *t /= total);
    let edges = edges(tags, focus);
    let file_rank = pagerank(n, &edges, &teleport);
    let mut out_w = vec![0.0; n];
    for e in &edges {
        out_w[e.from] += e.weight;
    }
    let mut score: HashMap<(usize, &str), f64> = HashMap::new();
    for e in &edges {
        *score.entry((e.to, e.name)).or_default() += file_rank[e.from] * e.weight / out_w[e.from];
    }
    let mut defs: Vec<RankedDef> = tags
        .files
        .iter()
        .enumerate()
        .flat_map(|(fi, f)| {
            let score = &score;
            f.defs.iter().enumerate().map(move |(di, d)| RankedDef {
                file: fi,
                def: di,
                score: score.get(&(fi, d.name.as_str())).copied().unwrap_or(0.0),
            })
        })
        .collect();
    defs.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(file_rank[b.file].total_cmp(&file_rank[a.file]))
            .then(a.file.cmp(&b.file))
            .then(a.def.cmp(&b.def))
    });
    Ranking { defs, file_rank }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repomap::synth;

    fn ranked_names(tags: &RepoTags, focus: &Focus) -> Vec<String> {
        rank(tags, focus)
            .defs
            .iter()
            .map(|d| tags.files[d.file].defs[d.def].name.clone())
            .collect()
    }

    /// Occurrences of `name(` in every mapped file but the one defining it: the naive count.
    fn naive_uses(dir: &std::path::Path, name: &str) -> usize {
        let (files, _) = crate::repomap::walk::walk(dir).unwrap();
        files
            .iter()
            .map(|c| std::fs::read_to_string(&c.abs).unwrap())
            .filter(|s| !s.contains(&format!("def {name}(")) && !s.contains(&format!("fn {name}(")))
            .map(|s| s.matches(&format!("{name}(")).count())
            .sum()
    }

    #[test]
    fn the_most_referenced_symbols_rank_first() {
        let dir = tempfile::tempdir().unwrap();
        // sym_k is defined in its own file and called from k caller files (one call each), in
        // Python and in Rust.
        let counts = [3usize, 7, 1, 5, 2, 6, 4];
        synth::known_counts(dir.path(), &counts).unwrap();
        let (tags, _) = crate::repomap::build::build(dir.path(), None).unwrap();
        let names = ranked_names(&tags, &Focus::default());
        let mut expect: Vec<(usize, String)> = (0..counts.len())
            .map(|k| format!("sym_{k}"))
            .map(|n| (naive_uses(dir.path(), &n), n))
            .collect();
        expect.sort_by_key(|e| std::cmp::Reverse(e.0));
        assert_eq!(expect[0].0, 2 * 7, "the naive count sees both languages");
        // Each name is defined twice (lib_k.py, lib_k.rs): both definitions share its rank.
        let mut got: Vec<&String> = names.iter().filter(|n| n.starts_with("sym_")).collect();
        got.dedup();
        let want: Vec<&String> = expect.iter().map(|e| &e.1).collect();
        assert_eq!(got, want);
        // The referenced definitions come before every unreferenced one (the callers' own).
        let first_caller = names.iter().position(|n| n.starts_with("caller_")).unwrap();
        assert!(first_caller >= 2 * counts.len(), "{names:?}");
    }

    #[test]
    fn within_one_file_more_calls_rank_higher_and_focus_boosts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lib.py"),
            "def alpha():\n    pass\n\ndef beta():\n    pass\n\ndef gamma():\n    pass\n",
        )
        .unwrap();
        let calls = "alpha()\n".repeat(9) + &"beta()\n".repeat(4) + "gamma()\n";
        std::fs::write(dir.path().join("main.py"), calls).unwrap();
        let (tags, _) = crate::repomap::build::build(dir.path(), None).unwrap();
        assert_eq!(
            ranked_names(&tags, &Focus::default()),
            ["alpha", "beta", "gamma"]
        );
        let focus = Focus::from_text("why is gamma slow?", &tags);
        assert_eq!(ranked_names(&tags, &focus)[0], "gamma");
        let r = rank(&tags, &Focus::default());
        assert!((r.file_rank.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn an_empty_tree_ranks_nothing() {
        assert_eq!(
            rank(&RepoTags::default(), &Focus::default()),
            Ranking::default()
        );
    }
}
