//! Small deterministic, platform-independent hashes and a seeded generator for the pipeline.
//!
//! Not cryptographic. `hash_bytes` reads 8-byte little-endian words and mixes each with a
//! multiply-rotate step, then finishes with MurmurHash3's `fmix64`; the generator is
//! SplitMix64 (Steele et al., 2014). Values are fixed by this file, so shards, splits and
//! MinHash permutations are reproducible across machines and Rust versions.

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// MurmurHash3's 64-bit finaliser: a bijection with full avalanche.
#[inline]
pub fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

/// 64-bit hash of `bytes` under `seed`.
#[inline]
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K1);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        h = (h ^ w.wrapping_mul(K2)).rotate_left(31).wrapping_mul(K1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        let w = u64::from_le_bytes(w);
        h = (h ^ w.wrapping_mul(K2)).rotate_left(31).wrapping_mul(K1);
    }
    fmix64(h)
}

/// 128-bit content hash (two independent 64-bit lanes) for exact deduplication.
pub fn content_hash(bytes: &[u8]) -> u128 {
    let a = hash_bytes(0x5EED_0001, bytes) as u128;
    let b = hash_bytes(0x5EED_0002, bytes) as u128;
    (a << 64) | b
}

/// Order-sensitive combination of a sequence of 64-bit hashes.
#[inline]
pub fn combine(hashes: &[u64]) -> u64 {
    let mut h = K2;
    for &x in hashes {
        h = (h ^ x).wrapping_mul(K1).rotate_left(27);
    }
    fmix64(h)
}

/// SplitMix64: a tiny seeded generator whose sequence is fixed by its definition.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(K1);
        fmix_splitmix(self.0)
    }
}

fn fmix_splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in [0, 1) from a 64-bit hash (53 high bits).
pub fn unit_interval(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_sequence() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn hash_depends_on_every_byte_and_length() {
        let base = b"hello world, this is a test".to_vec();
        let h0 = hash_bytes(1, &base);
        for i in 0..base.len() {
            let mut b = base.clone();
            b[i] ^= 1;
            assert_ne!(hash_bytes(1, &b), h0, "byte {i}");
        }
        assert_ne!(hash_bytes(1, b"ab"), hash_bytes(1, b"ab\0"));
        assert_ne!(hash_bytes(1, &base), hash_bytes(2, &base));
        assert_ne!(combine(&[1, 2]), combine(&[2, 1]));
    }

    #[test]
    fn unit_interval_is_in_range_and_roughly_uniform() {
        let mut g = SplitMix64::new(7);
        let n = 20_000;
        let below_quarter = (0..n)
            .map(|_| unit_interval(g.next_u64()))
            .inspect(|u| assert!((0.0..1.0).contains(u)))
            .filter(|&u| u < 0.25)
            .count();
        let frac = below_quarter as f64 / n as f64;
        assert!((frac - 0.25).abs() < 0.015, "{frac}");
    }
}
