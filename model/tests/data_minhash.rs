//! MinHash estimates against exact Jaccard on random set pairs, and LSH recall / precision at
//! the default threshold against the S-curve it is designed for.

use tritter_model::data::hash::SplitMix64;
use tritter_model::data::lsh::{choose_bands, find_duplicate_pairs};
use tritter_model::data::minhash::estimated_jaccard;
use tritter_model::data::{exact_jaccard, MinHasher};

/// Two sorted sets of `size` elements with Jaccard close to `target`.
fn pair(g: &mut SplitMix64, size: usize, target: f64) -> (Vec<u64>, Vec<u64>) {
    // |A∩B| = s, |A| = |B| = size  =>  J = s / (2 size − s)
    let shared = ((2.0 * size as f64 * target) / (1.0 + target)).round() as usize;
    let common: Vec<u64> = (0..shared).map(|_| g.next_u64()).collect();
    let mut a = common.clone();
    let mut b = common;
    a.extend((shared..size).map(|_| g.next_u64()));
    b.extend((shared..size).map(|_| g.next_u64()));
    a.sort_unstable();
    a.dedup();
    b.sort_unstable();
    b.dedup();
    (a, b)
}

#[test]
fn estimate_tracks_exact_jaccard_on_random_pairs() {
    let mut g = SplitMix64::new(42);
    let hasher = MinHasher::new(256, 7);
    let mut errors = Vec::new();
    let mut worst_z: f64 = 0.0;
    for k in 0..300 {
        let target = (k % 19 + 1) as f64 / 20.0;
        let size = 200 + (g.next_u64() % 800) as usize;
        let (a, b) = pair(&mut g, size, target);
        let exact = exact_jaccard(&a, &b);
        let est = estimated_jaccard(&hasher.signature(&a), &hasher.signature(&b));
        let sigma = (exact * (1.0 - exact) / 256.0).sqrt().max(1e-3);
        worst_z = worst_z.max((est - exact).abs() / sigma);
        errors.push(est - exact);
    }
    let n = errors.len() as f64;
    let mean = errors.iter().sum::<f64>() / n;
    let rmse = (errors.iter().map(|e| e * e).sum::<f64>() / n).sqrt();
    // Unbiased (the mean of 300 errors of σ ≤ 0.031 has σ ≈ 0.0018), spread as binomial(256, J).
    assert!(mean.abs() < 0.008, "bias {mean}");
    assert!(rmse < 0.03, "rmse {rmse}");
    assert!(worst_z < 4.5, "worst error {worst_z} σ");
}

#[test]
fn identical_and_disjoint_sets_estimate_exactly() {
    let mut g = SplitMix64::new(3);
    let hasher = MinHasher::new(256, 0);
    let (a, _) = pair(&mut g, 500, 0.5);
    let mut c: Vec<u64> = (0..500).map(|_| g.next_u64()).collect();
    c.sort_unstable();
    let sa = hasher.signature(&a);
    assert_eq!(estimated_jaccard(&sa, &sa), 1.0);
    // Disjoint 500-sets: an equal entry needs a 32-bit collision of two minima.
    assert!(estimated_jaccard(&sa, &hasher.signature(&c)) <= 2.0 / 256.0);
}

#[test]
fn lsh_finds_similar_pairs_and_skips_dissimilar_ones() {
    let mut g = SplitMix64::new(11);
    let hasher = MinHasher::new(256, 5);
    let params = choose_bands(0.7, 256);
    let mut sigs = Vec::new();
    let mut truth = Vec::new();
    // Pairs (2i, 2i+1) at Jaccard 0.9 (must be found) or 0.3 (must not).
    for i in 0..60u32 {
        let dup = i % 2 == 0;
        let (a, b) = pair(&mut g, 400, if dup { 0.9 } else { 0.3 });
        sigs.extend(hasher.signature(&a));
        sigs.extend(hasher.signature(&b));
        truth.push((2 * i, 2 * i + 1, dup));
    }
    let found = find_duplicate_pairs(&sigs, 256, params, 0.7, true);
    for (a, b, dup) in truth {
        let hit = found.iter().any(|p| p.a == a && p.b == b);
        assert_eq!(hit, dup, "pair {a},{b}");
    }
    // Nothing pairs across unrelated documents.
    assert!(found.iter().all(|p| p.b == p.a + 1 && p.a % 4 == 0));
}
