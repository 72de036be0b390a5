//! Shingling and MinHash signatures (Broder 1997) for near-duplicate detection.
//!
//! Shingles are `n` consecutive words, where words are maximal runs of ASCII `[A-Za-z0-9_]`
//! (BigCode's `NON_ALPHA` split), optionally lower-cased; a document with fewer than `n` words
//! has one shingle of all of them. Each shingle is hashed to 64 bits; permutation `i` is the
//! multiply-shift hash `(a_i · x + b_i) mod 2^64 >> 32` with odd `a_i` and `b_i` drawn from
//! SplitMix64(seed). `P[min_i(A) = min_i(B)] ≈ J(A, B)`, so the fraction of equal signature
//! entries estimates the Jaccard similarity of the shingle sets ([`exact_jaccard`]).

use super::hash::{combine, hash_bytes, SplitMix64};

const WORD_SEED: u64 = 0x7772_6473;

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The words of `text` (runs of `[A-Za-z0-9_]`), hashed.
fn word_hashes(text: &str, lowercase: bool) -> Vec<u64> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 6);
    let mut buf = Vec::with_capacity(64);
    let mut i = 0;
    while i < bytes.len() {
        if !is_word_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word_byte(bytes[i]) {
            i += 1;
        }
        let word = &bytes[start..i];
        if lowercase && word.iter().any(u8::is_ascii_uppercase) {
            buf.clear();
            buf.extend(word.iter().map(u8::to_ascii_lowercase));
            out.push(hash_bytes(WORD_SEED, &buf));
        } else {
            out.push(hash_bytes(WORD_SEED, word));
        }
    }
    out
}

/// The set of `n`-word shingle hashes of `text`, sorted and without repeats.
pub fn shingle_hashes(text: &str, n: usize, lowercase: bool) -> Vec<u64> {
    let words = word_hashes(text, lowercase);
    let mut shingles: Vec<u64> = if words.is_empty() {
        Vec::new()
    } else if words.len() < n {
        vec![combine(&words)]
    } else {
        words.windows(n.max(1)).map(combine).collect()
    };
    shingles.sort_unstable();
    shingles.dedup();
    shingles
}

/// Jaccard similarity of two sorted, repeat-free sets.
pub fn exact_jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// Fraction of equal entries of two signatures: the MinHash estimate of Jaccard similarity.
pub fn estimated_jaccard(a: &[u32], b: &[u32]) -> f64 {
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    equal as f64 / a.len().max(1) as f64
}

/// Computes signatures for a fixed set of seeded permutations.
#[derive(Debug, Clone)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    /// `num_perm` permutations drawn from `seed`.
    pub fn new(num_perm: usize, seed: u64) -> MinHasher {
        let mut g = SplitMix64::new(seed ^ 0x4D49_4E48_4153_48);
        let mut a = Vec::with_capacity(num_perm);
        let mut b = Vec::with_capacity(num_perm);
        for _ in 0..num_perm {
            a.push(g.next_u64() | 1);
            b.push(g.next_u64());
        }
        MinHasher { a, b }
    }

    /// Signature length.
    pub fn num_perm(&self) -> usize {
        self.a.len()
    }

    /// Write the signature of a shingle set into `sig` (length `num_perm`); an empty set gives
    /// all `u32::MAX`.
    pub fn signature_into(&self, shingles: &[u64], sig: &mut [u32]) {
        sig.fill(u32::MAX);
        let n = self.a.len().min(sig.len());
        let (a, b, sig) = (&self.a[..n], &self.b[..n], &mut sig[..n]);
        for &x in shingles {
            // Straight-line loop over equal-length slices: the compiler vectorises it.
            for ((s, &ai), &bi) in sig.iter_mut().zip(a).zip(b) {
                let v = (ai.wrapping_mul(x).wrapping_add(bi) >> 32) as u32;
                *s = (*s).min(v);
            }
        }
    }

    /// The signature of a shingle set.
    pub fn signature(&self, shingles: &[u64]) -> Vec<u32> {
        let mut sig = vec![0; self.a.len()];
        self.signature_into(shingles, &mut sig);
        sig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_bigcode_non_alpha() {
        // re.split("[^A-Za-z_0-9]+", "Foo.bar(x_1) é+2") -> Foo bar x_1 2
        let expect: Vec<u64> = ["foo", "bar", "x_1", "2"]
            .iter()
            .map(|w| hash_bytes(WORD_SEED, w.as_bytes()))
            .collect();
        assert_eq!(word_hashes("Foo.bar(x_1) é+2", true), expect);
        assert_ne!(word_hashes("Foo", false), word_hashes("foo", false));
    }

    #[test]
    fn shingles_count_distinct_windows() {
        let s = shingle_hashes("a b c a b c a b", 3, true);
        // windows: abc bca cab abc bca cab -> 3 distinct
        assert_eq!(s.len(), 3);
        assert_eq!(shingle_hashes("a b", 5, true).len(), 1);
        assert!(shingle_hashes("  ;; ", 5, true).is_empty());
    }

    #[test]
    fn exact_jaccard_matches_hand_count() {
        assert_eq!(exact_jaccard(&[1, 2, 3, 4], &[3, 4, 5, 6]), 2.0 / 6.0);
        assert_eq!(exact_jaccard(&[1], &[1]), 1.0);
        assert_eq!(exact_jaccard(&[1], &[2]), 0.0);
    }

    #[test]
    fn identical_sets_have_identical_signatures_and_seed_matters() {
        let m = MinHasher::new(64, 1);
        let s = shingle_hashes("the quick brown fox jumps over the lazy dog", 2, true);
        assert_eq!(m.signature(&s), m.signature(&s));
        assert_ne!(m.signature(&s), MinHasher::new(64, 2).signature(&s));
        assert!(m.signature(&[]).iter().all(|&v| v == u32::MAX));
    }
}
