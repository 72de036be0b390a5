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
    /// all `u32::MAX`. Uses the widest SIMD the CPU has (chosen at run time); every path gives
    /// the same bits as [`signature_scalar`].
    pub fn signature_into(&self, shingles: &[u64], sig: &mut [u32]) {
        let n = self.a.len().min(sig.len());
        let (a, b, sig) = (&self.a[..n], &self.b[..n], &mut sig[..n]);
        simd::signature(a, b, shingles, sig);
    }

    /// The signature of a shingle set.
    pub fn signature(&self, shingles: &[u64]) -> Vec<u32> {
        let mut sig = vec![0; self.a.len()];
        self.signature_into(shingles, &mut sig);
        sig
    }
}

/// Permutation lanes kept in registers while the shingles stream past.
const LANES: usize = 32;

/// The specification: `sig[i] = min over x of (a[i]·x + b[i]) mod 2^64 >> 32`, `u32::MAX` for no
/// shingles. Perm-blocked so each block of minima stays in registers.
#[inline(always)]
pub fn signature_scalar(a: &[u64], b: &[u64], shingles: &[u64], sig: &mut [u32]) {
    let n = a.len().min(b.len()).min(sig.len());
    let full = n - n % LANES;
    for start in (0..full).step_by(LANES) {
        let mut ab = [0u64; LANES];
        let mut bb = [0u64; LANES];
        ab.copy_from_slice(&a[start..start + LANES]);
        bb.copy_from_slice(&b[start..start + LANES]);
        let mut m = [u32::MAX; LANES];
        for &x in shingles {
            for l in 0..LANES {
                let v = (ab[l].wrapping_mul(x).wrapping_add(bb[l]) >> 32) as u32;
                m[l] = m[l].min(v);
            }
        }
        sig[start..start + LANES].copy_from_slice(&m);
    }
    for i in full..n {
        sig[i] = shingles
            .iter()
            .map(|&x| (a[i].wrapping_mul(x).wrapping_add(b[i]) >> 32) as u32)
            .min()
            .unwrap_or(u32::MAX);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! x86-64 dispatch: AVX-512DQ has a native 64-bit multiply (`vpmullq`); AVX2 emulates it.
    use std::sync::OnceLock;

    type SigFn = fn(&[u64], &[u64], &[u64], &mut [u32]);

    /// # Safety
    /// The CPU must support AVX-512F and AVX-512DQ.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn avx512(a: &[u64], b: &[u64], shingles: &[u64], sig: &mut [u32]) {
        super::signature_scalar(a, b, shingles, sig)
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn avx2(a: &[u64], b: &[u64], shingles: &[u64], sig: &mut [u32]) {
        super::signature_scalar(a, b, shingles, sig)
    }

    fn pick() -> SigFn {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
            // SAFETY: the CPU supports AVX-512F and AVX-512DQ (checked just above).
            |a, b, s, o| unsafe { avx512(a, b, s, o) }
        } else if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            |a, b, s, o| unsafe { avx2(a, b, s, o) }
        } else {
            super::signature_scalar
        }
    }

    pub(super) fn signature(a: &[u64], b: &[u64], shingles: &[u64], sig: &mut [u32]) {
        static CHOSEN: OnceLock<SigFn> = OnceLock::new();
        (CHOSEN.get_or_init(pick))(a, b, shingles, sig)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    //! Other targets: the portable loop (auto-vectorised for the baseline ISA).
    pub(super) fn signature(a: &[u64], b: &[u64], shingles: &[u64], sig: &mut [u32]) {
        super::signature_scalar(a, b, shingles, sig)
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
    fn dispatched_signature_matches_naive_scalar_bit_for_bit() {
        let mut g = SplitMix64::new(9);
        for num_perm in [1, 31, 32, 100, 256] {
            let m = MinHasher::new(num_perm, 4);
            let shingles: Vec<u64> = (0..777).map(|_| g.next_u64()).collect();
            let naive: Vec<u32> = (0..num_perm)
                .map(|i| {
                    shingles
                        .iter()
                        .map(|&x| (m.a[i].wrapping_mul(x).wrapping_add(m.b[i]) >> 32) as u32)
                        .min()
                        .unwrap()
                })
                .collect();
            assert_eq!(m.signature(&shingles), naive, "num_perm {num_perm}");
        }
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
