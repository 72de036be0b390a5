//! The map as text: the best-ranked definitions grouped by file (files in the order of their
//! best definition, definitions in line order), one `  LINE: first line of the definition` row
//! each, as many as fit a token budget under the caller's token counter (the engine's tokenizer
//! in the app). The number of definitions is the largest that fits, found by bisection (a map of
//! more definitions is the same text with rows added).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::engine::ContextSnippet;
use crate::repomap::rank::{rank, RankedDef, Ranking};
use crate::repomap::{Focus, RepoTags};

/// The text of the map of the best `n` definitions.
fn text(tags: &RepoTags, defs: &[RankedDef]) -> String {
    let mut order: Vec<usize> = Vec::new();
    let mut by_file: HashMap<usize, Vec<usize>> = HashMap::new();
    for d in defs {
        let v = by_file.entry(d.file).or_default();
        if v.is_empty() {
            order.push(d.file);
        }
        v.push(d.def);
    }
    let mut out = String::new();
    for f in order {
        let file = &tags.files[f];
        let _ = writeln!(out, "{}:", file.path);
        let mut rows = by_file.remove(&f).unwrap_or_default();
        rows.sort_unstable();
        for i in rows {
            let d = &file.defs[i];
            let _ = writeln!(out, "  {}: {}", d.line + 1, d.text);
        }
    }
    out
}

/// The map within `budget` tokens as `count` counts them (empty when not even one definition
/// fits), and how many definitions it shows.
pub fn render(
    tags: &RepoTags,
    ranking: &Ranking,
    count: &dyn Fn(&str) -> usize,
    budget: usize,
) -> (String, usize) {
    // Every row costs at least one token, so more than `budget` rows never fit.
    let (mut lo, mut hi) = (0usize, ranking.defs.len().min(budget));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(&text(tags, &ranking.defs[..mid])) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    (text(tags, &ranking.defs[..lo]), lo)
}

/// The map for a message `text` as prompt context within `budget` tokens: ranked toward the
/// files and names the message mentions; `None` when not one definition fits.
pub fn snippet(
    tags: &RepoTags,
    text: &str,
    count: &dyn Fn(&str) -> usize,
    budget: usize,
) -> Option<ContextSnippet> {
    let ranking = rank(tags, &Focus::from_text(text, tags));
    let (map, shown) = render(tags, &ranking, count, budget);
    (shown > 0).then(|| ContextSnippet {
        label: format!(
            "Repository map ({shown} of {} definitions in {} files, most referenced first)",
            ranking.defs.len(),
            tags.files.len()
        ),
        text: map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repomap::{build::build, rank::rank, synth, Focus};

    #[test]
    fn the_map_fits_its_budget_and_keeps_the_ranking_order() {
        let dir = tempfile::tempdir().unwrap();
        synth::repo(dir.path(), 60).unwrap();
        let (tags, _) = build(dir.path(), None).unwrap();
        let ranking = rank(&tags, &Focus::default());
        // Two independent counters: bytes (byte-level BPE's worst case) and words.
        let bytes = |t: &str| t.len();
        let words = |t: &str| t.split_whitespace().count();
        let counters: [&dyn Fn(&str) -> usize; 2] = [&bytes, &words];
        for count in counters {
            let mut last = 0;
            for budget in [0, 5, 40, 100, 300, 1000, 4000, 1_000_000] {
                let (map, n) = render(&tags, &ranking, count, budget);
                assert!(count(&map) <= budget, "{} > {budget}", count(&map));
                assert!(n >= last, "a larger budget never shows fewer definitions");
                last = n;
                // Maximal: one more definition would not fit.
                if n < ranking.defs.len() && n < budget {
                    assert!(count(&text(&tags, &ranking.defs[..n + 1])) > budget);
                }
                // Every shown row is one of the n best definitions.
                let rows = map.lines().filter(|l| l.starts_with("  ")).count();
                assert_eq!(rows, n);
            }
            assert_eq!(last, ranking.defs.len());
        }
        let (map, n) = render(&tags, &ranking, &bytes, 200);
        let best = &tags.files[ranking.defs[0].file];
        assert!(
            n > 0 && map.starts_with(&format!("{}:\n", best.path)),
            "{map}"
        );
    }
}
