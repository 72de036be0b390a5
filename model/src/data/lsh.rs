//! Locality-sensitive hashing over MinHash signatures: band/row split, candidate pairs,
//! verification, and the deterministic choice of which document of a duplicate group is kept.
//!
//! Must match datasketch's `MinHashLSH`: the `(bands, rows)` split minimises
//! `w_fp · ∫₀ᵗ P(s) ds + w_fn · ∫ₜ¹ (1 − P(s)) ds` with `P(s) = 1 − (1 − s^r)^b` (its and
//! text-dedup's `_optimal_param` / `optimal_param`; [`choose_bands`] is the equal-weight case),
//! and two documents are candidates when all `r` values of at least one band agree. The band
//! key ([`band_key`]) is shared with the on-disk index (`lsh_disk`).

use rayon::prelude::*;

use super::hash::combine;
use super::minhash::estimated_jaccard;

/// A band/row split of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LshParams {
    /// Number of bands.
    pub bands: usize,
    /// Signature entries per band.
    pub rows: usize,
}

/// Composite Simpson integral of `f` over `[lo, hi]`.
fn integrate(f: impl Fn(f64) -> f64, lo: f64, hi: f64) -> f64 {
    const N: usize = 256;
    let h = (hi - lo) / N as f64;
    let mut sum = f(lo) + f(hi);
    for i in 1..N {
        let w = if i % 2 == 1 { 4.0 } else { 2.0 };
        sum += w * f(lo + i as f64 * h);
    }
    sum * h / 3.0
}

/// The split of `num_perm` entries that minimises the equally weighted false-positive and
/// false-negative areas for Jaccard `threshold`.
pub fn choose_bands(threshold: f64, num_perm: usize) -> LshParams {
    choose_bands_weighted(threshold, num_perm, 0.5, 0.5)
}

/// The split of `num_perm` entries that minimises `fp_weight` × the false-positive area
/// (candidate probability below `threshold`) plus `fn_weight` × the false-negative area
/// (miss probability above it). Ties keep the first split in `(bands, rows)` order, as
/// datasketch does.
pub fn choose_bands_weighted(
    threshold: f64,
    num_perm: usize,
    fp_weight: f64,
    fn_weight: f64,
) -> LshParams {
    let mut best = (f64::INFINITY, LshParams { bands: 1, rows: 1 });
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let p = |s: f64| 1.0 - (1.0 - s.powi(r as i32)).powi(b as i32);
            let fp = integrate(p, 0.0, threshold);
            let fneg = integrate(|s| 1.0 - p(s), threshold, 1.0);
            let err = fp_weight * fp + fn_weight * fneg;
            if err < best.0 {
                best = (err, LshParams { bands: b, rows: r });
            }
        }
    }
    best.1
}

/// The bucket key of band `band` of signature `sig` (its `rows` entries, hashed in order).
pub fn band_key(sig: &[u32], params: LshParams, band: usize) -> u64 {
    let lo = band * params.rows;
    let band_vals = &sig[lo..lo + params.rows];
    let mut vals = [0u64; 64];
    if band_vals.len() <= vals.len() {
        for (v, &s) in vals.iter_mut().zip(band_vals) {
            *v = s as u64;
        }
        combine(&vals[..band_vals.len()])
    } else {
        let v: Vec<u64> = band_vals.iter().map(|&s| s as u64).collect();
        combine(&v)
    }
}

/// Two documents (indices into the signature table, `a < b`) found to be near duplicates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DuplicatePair {
    /// The earlier document.
    pub a: u32,
    /// The later document.
    pub b: u32,
    /// MinHash estimate of their Jaccard similarity.
    pub jaccard: f64,
}

/// All candidate pairs of `sigs` (row-major, `num_perm` entries per document), sorted by
/// `(a, b)`; with `verify`, only those whose estimated Jaccard reaches `threshold`.
///
/// Deterministic: bands are processed in parallel but the result is sorted. A band bucket of
/// `k` documents yields `k(k−1)/2` pairs, so memory follows the duplicate structure, not only
/// the corpus size.
pub fn find_duplicate_pairs(
    sigs: &[u32],
    num_perm: usize,
    params: LshParams,
    threshold: f64,
    verify: bool,
) -> Vec<DuplicatePair> {
    if num_perm == 0 {
        return Vec::new();
    }
    let n = sigs.len() / num_perm;
    let sig = |i: usize| &sigs[i * num_perm..(i + 1) * num_perm];
    let mut pairs: Vec<(u32, u32)> = (0..params.bands)
        .into_par_iter()
        .flat_map_iter(|band| {
            let mut keys: Vec<(u64, u32)> = (0..n)
                .map(|i| (band_key(sig(i), params, band), i as u32))
                .collect();
            keys.sort_unstable();
            let mut out = Vec::new();
            let mut start = 0;
            while start < keys.len() {
                let mut end = start + 1;
                while end < keys.len() && keys[end].0 == keys[start].0 {
                    end += 1;
                }
                for x in start..end {
                    for y in x + 1..end {
                        out.push((keys[x].1, keys[y].1));
                    }
                }
                start = end;
            }
            out
        })
        .collect();
    pairs.par_sort_unstable();
    pairs.dedup();
    pairs
        .into_par_iter()
        .filter_map(|(a, b)| {
            let j = estimated_jaccard(sig(a as usize), sig(b as usize));
            (!verify || j >= threshold).then_some(DuplicatePair { a, b, jaccard: j })
        })
        .collect()
}

/// Which documents to keep: scanning in index order, a document is dropped when it pairs with
/// an earlier *kept* document, and it is attributed to the earliest such one. Returns, for each
/// of the `n` documents, `None` (kept) or `Some((kept index, estimated Jaccard))`.
///
/// Unlike union-find clustering, every dropped document is itself similar to the document it
/// is attributed to.
pub fn greedy_keep(n: usize, pairs: &[DuplicatePair]) -> Vec<Option<(u32, f64)>> {
    let mut by_later: Vec<&DuplicatePair> = pairs.iter().collect();
    by_later.sort_by_key(|p| (p.b, p.a));
    let mut dropped_by: Vec<Option<(u32, f64)>> = vec![None; n];
    for p in by_later {
        let (a, b) = (p.a as usize, p.b as usize);
        if a >= n || b >= n {
            continue;
        }
        if dropped_by[b].is_none() && dropped_by[a].is_none() {
            dropped_by[b] = Some((p.a, p.jaccard));
        }
    }
    dropped_by
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_for_default_threshold_matches_datasketch() {
        // (b, r) of datasketch 2.0.0 MinHashLSH(threshold, num_perm)
        let check = |t, n, bands, rows| assert_eq!(choose_bands(t, n), LshParams { bands, rows });
        check(0.7, 256, 25, 10);
        check(0.5, 128, 25, 5);
        check(0.8, 64, 5, 11);
    }

    #[test]
    fn weighted_split_matches_datasketch_optimal_param() {
        // datasketch 2.0.0 `lsh._optimal_param(threshold, num_perm, fp_weight, fn_weight)`
        // (scipy quad integrals), run once and recorded here.
        let check = |t, n, wfp, wfn, bands, rows| {
            assert_eq!(
                choose_bands_weighted(t, n, wfp, wfn),
                LshParams { bands, rows },
                "t {t} num_perm {n} weights {wfp}/{wfn}"
            )
        };
        check(0.7, 256, 0.1, 0.9, 32, 8);
        check(0.7, 256, 0.3, 0.7, 28, 9);
        check(0.7, 128, 0.2, 0.8, 18, 7);
        check(0.8, 64, 0.3, 0.7, 7, 9);
        check(0.5, 128, 0.2, 0.8, 30, 4);
        check(0.6, 256, 0.1, 0.9, 42, 6);
        check(0.9, 256, 0.1, 0.9, 13, 19);
    }

    #[test]
    fn identical_signatures_pair_and_disjoint_do_not() {
        let p = 8;
        let mut sigs = vec![0u32; 3 * p];
        for i in 0..p {
            sigs[i] = i as u32;
            sigs[p + i] = i as u32;
            sigs[2 * p + i] = 100 + i as u32;
        }
        let params = LshParams { bands: 4, rows: 2 };
        let pairs = find_duplicate_pairs(&sigs, p, params, 0.7, true);
        assert_eq!(
            pairs,
            vec![DuplicatePair {
                a: 0,
                b: 1,
                jaccard: 1.0
            }]
        );
    }

    #[test]
    fn greedy_keeps_first_and_does_not_chain_through_dropped() {
        // 0~1, 1~2 (but not 0~2): 1 is dropped for 0; 2 only pairs with dropped 1, so it stays.
        let pairs = [
            DuplicatePair {
                a: 0,
                b: 1,
                jaccard: 0.8,
            },
            DuplicatePair {
                a: 1,
                b: 2,
                jaccard: 0.8,
            },
            DuplicatePair {
                a: 0,
                b: 3,
                jaccard: 0.9,
            },
            DuplicatePair {
                a: 2,
                b: 3,
                jaccard: 0.95,
            },
        ];
        let keep = greedy_keep(4, &pairs);
        assert_eq!(keep, vec![None, Some((0, 0.8)), None, Some((0, 0.9))]);
    }
}
