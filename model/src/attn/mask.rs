//! Composable attention masks and block masks, after FlexAttention's `mask_mod` / `BlockMask`
//! (PyTorch `torch.nn.attention.flex_attention`): a [`Mask`] answers `allowed(q_pos, k_pos)` for
//! absolute positions; primitives (causal, sliding window, document, prefix-LM, StreamingLLM) combine
//! with [`Mask::and`] / [`Mask::or`]. A [`BlockMask`] classifies every (query tile, key tile) pair as
//! full, partial or empty so the kernel skips empty tiles and evaluates the mask only on partial ones;
//! masks are never materialised as T×T tensors. Classification is by interval reasoning on the
//! tile's position ranges: `Full` and `Empty` are always exact claims, `Partial` may be conservative.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use super::{config_err, Result};

/// An attention mask over absolute positions. Build it with the constructors and combinators.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mask {
    /// Every query sees every key (bidirectional attention).
    All,
    /// `k <= q`.
    Causal,
    /// `|q - k| < w`: a symmetric band; `and` it with [`Mask::Causal`] for the usual causal window
    /// of `w` keys (the query itself included).
    SlidingWindow(usize),
    /// `doc[q] == doc[k]`, one document id per absolute position; positions past the end of the
    /// slice belong to no document and see nothing.
    Document(Arc<[u32]>),
    /// `k < n || k <= q`: the first `n` positions are visible to everyone (PrefixLM).
    PrefixLm(usize),
    /// `k < n`: the first `n` keys are visible to every query (attention sinks / global tokens);
    /// `Causal ∧ (SlidingWindow(w - n) ∨ Sinks(n))` equals `Streaming { sinks: n, window: w }`.
    Sinks(usize),
    /// StreamingLLM: `k <= q && (k < sinks || q - k < window - sinks)`; `window` counts the sinks,
    /// so every query sees at most `window` keys, exactly what a rolling sink cache holds.
    Streaming {
        /// Number of initial "attention sink" positions always visible.
        sinks: usize,
        /// Total keys visible per query, sinks included (`window > sinks`).
        window: usize,
    },
    /// Both masks allow the pair.
    And(Arc<Mask>, Arc<Mask>),
    /// Either mask allows the pair.
    Or(Arc<Mask>, Arc<Mask>),
}

/// How a (query tile, key tile) pair is treated by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// No pair in the tile is allowed: the kernel skips it.
    Empty,
    /// Some pairs may be allowed: the kernel evaluates the mask per pair.
    Partial,
    /// Every pair is allowed: the kernel evaluates no mask.
    Full,
}

impl Mask {
    /// Causal mask.
    pub fn causal() -> Self {
        Mask::Causal
    }

    /// Symmetric band `|q - k| < w` (`w = 0` allows nothing).
    pub fn sliding_window(w: usize) -> Self {
        Mask::SlidingWindow(w)
    }

    /// Document mask from one id per absolute position.
    pub fn document(ids: impl Into<Arc<[u32]>>) -> Self {
        Mask::Document(ids.into())
    }

    /// PrefixLM mask with a bidirectional prefix of `n` positions.
    pub fn prefix_lm(n: usize) -> Self {
        Mask::PrefixLm(n)
    }

    /// Keys `0..n` visible to everyone.
    pub fn sinks(n: usize) -> Self {
        Mask::Sinks(n)
    }

    /// StreamingLLM mask: `sinks` initial positions plus the last `window - sinks` positions.
    pub fn streaming(sinks: usize, window: usize) -> Result<Self> {
        if window <= sinks {
            return Err(config_err(
                "streaming mask",
                format!("window ({window}) must exceed the number of sinks ({sinks})"),
            ));
        }
        Ok(Mask::Streaming { sinks, window })
    }

    /// Intersection of two masks.
    pub fn and(self, other: Mask) -> Self {
        Mask::And(Arc::new(self), Arc::new(other))
    }

    /// Union of two masks.
    pub fn or(self, other: Mask) -> Self {
        Mask::Or(Arc::new(self), Arc::new(other))
    }

    /// Whether query position `q` may attend to key position `k`.
    pub fn allowed(&self, q: usize, k: usize) -> bool {
        match self {
            Mask::All => true,
            Mask::Causal => k <= q,
            Mask::SlidingWindow(w) => q.abs_diff(k) < *w,
            Mask::Document(ids) => match (ids.get(q), ids.get(k)) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
            Mask::PrefixLm(n) => k < *n || k <= q,
            Mask::Sinks(n) => k < *n,
            Mask::Streaming { sinks, window } => k <= q && (k < *sinks || q - k < window - sinks),
            Mask::And(a, b) => a.allowed(q, k) && b.allowed(q, k),
            Mask::Or(a, b) => a.allowed(q, k) || b.allowed(q, k),
        }
    }

    /// Dense additive bias `[q_len, kv_len]` (0 where allowed, `-inf` elsewhere) for the
    /// differentiable training path, which cannot use the fused kernels; inference never builds it.
    pub fn additive_bias(&self, q_len: usize, kv_len: usize, q_offset: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(q_len * kv_len);
        for i in 0..q_len {
            out.extend((0..kv_len).map(|j| {
                if self.allowed(q_offset + i, j) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
        out
    }

    /// Classifies the rectangle of query positions `q` × key positions `k` (both non-empty).
    pub fn classify(&self, q: Range<usize>, k: Range<usize>) -> TileKind {
        debug_assert!(!q.is_empty() && !k.is_empty());
        let (q0, q1, k0, k1) = (q.start, q.end - 1, k.start, k.end - 1); // inclusive bounds
        let causal = || {
            if k1 <= q0 {
                TileKind::Full
            } else if k0 > q1 {
                TileKind::Empty
            } else {
                TileKind::Partial
            }
        };
        match self {
            Mask::All => TileKind::Full,
            Mask::Causal => causal(),
            Mask::SlidingWindow(w) => {
                let max_dist = q1.abs_diff(k0).max(k1.abs_diff(q0));
                let min_dist = k0.saturating_sub(q1).max(q0.saturating_sub(k1));
                if max_dist < *w {
                    TileKind::Full
                } else if min_dist >= *w {
                    TileKind::Empty
                } else {
                    TileKind::Partial
                }
            }
            Mask::Document(ids) => classify_document(ids, q, k),
            Mask::PrefixLm(n) => {
                if k.end <= *n || k1 <= q0 {
                    TileKind::Full
                } else if k0 >= *n && k0 > q1 {
                    TileKind::Empty
                } else {
                    TileKind::Partial
                }
            }
            Mask::Sinks(n) => {
                if k.end <= *n {
                    TileKind::Full
                } else if k0 >= *n {
                    TileKind::Empty
                } else {
                    TileKind::Partial
                }
            }
            Mask::Streaming { sinks, window } => {
                let recent = window - sinks;
                let c = causal();
                if c == TileKind::Empty || (k0 >= *sinks && q0 - k1.min(q0) >= recent) {
                    TileKind::Empty
                } else if c == TileKind::Full
                    && (k.end <= *sinks || q1 - k0.max(*sinks).min(q1) < recent)
                {
                    TileKind::Full
                } else {
                    TileKind::Partial
                }
            }
            Mask::And(a, b) => match (a.classify(q.clone(), k.clone()), b.classify(q, k)) {
                (TileKind::Empty, _) | (_, TileKind::Empty) => TileKind::Empty,
                (TileKind::Full, TileKind::Full) => TileKind::Full,
                _ => TileKind::Partial,
            },
            Mask::Or(a, b) => match (a.classify(q.clone(), k.clone()), b.classify(q, k)) {
                (TileKind::Full, _) | (_, TileKind::Full) => TileKind::Full,
                (TileKind::Empty, TileKind::Empty) => TileKind::Empty,
                _ => TileKind::Partial,
            },
        }
    }
}

fn id_range(ids: &[u32], r: Range<usize>) -> Option<(u32, u32)> {
    let s = ids.get(r)?;
    let lo = s.iter().copied().min()?;
    let hi = s.iter().copied().max()?;
    Some((lo, hi))
}

fn classify_document(ids: &[u32], q: Range<usize>, k: Range<usize>) -> TileKind {
    if q.start >= ids.len() || k.start >= ids.len() {
        return TileKind::Empty;
    }
    let inside = q.end <= ids.len() && k.end <= ids.len();
    let qr = id_range(ids, q.start..q.end.min(ids.len()));
    let kr = id_range(ids, k.start..k.end.min(ids.len()));
    match (qr, kr) {
        (Some((qa, qb)), Some((ka, kb))) => {
            if inside && qa == qb && ka == kb && qa == ka {
                TileKind::Full
            } else if qb < ka || kb < qa {
                TileKind::Empty
            } else {
                TileKind::Partial
            }
        }
        _ => TileKind::Empty,
    }
}

/// One non-empty key tile of a query-tile row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    /// Key tile index (keys `k_tile * tile_k ..`).
    pub k_tile: u32,
    /// Whether the mask must be evaluated per pair in this tile.
    pub partial: bool,
}

/// Per (query tile, key tile) classification of a mask for one shape, stored as sparse rows of
/// non-empty key tiles (FlexAttention's `kv_indices` idea).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMask {
    /// Number of queries.
    pub q_len: usize,
    /// Number of keys.
    pub kv_len: usize,
    /// Absolute position of query 0 (keys sit at `0..kv_len`).
    pub q_offset: usize,
    /// Queries per tile.
    pub tile_q: usize,
    /// Keys per tile.
    pub tile_k: usize,
    row_start: Vec<usize>,
    entries: Vec<BlockEntry>,
}

impl BlockMask {
    /// Classifies every tile pair of a `q_len` × `kv_len` attention whose queries start at absolute
    /// position `q_offset`. Cost: one interval classification per tile pair, no per-element work.
    pub fn build(
        mask: &Mask,
        q_len: usize,
        kv_len: usize,
        q_offset: usize,
        tile_q: usize,
        tile_k: usize,
    ) -> Result<Self> {
        if tile_q == 0 || tile_k == 0 {
            return Err(config_err(
                "block mask tile size",
                "tiles must be non-empty",
            ));
        }
        let n_q = q_len.div_ceil(tile_q);
        let n_k = kv_len.div_ceil(tile_k);
        let mut row_start = Vec::with_capacity(n_q + 1);
        let mut entries = Vec::new();
        for qt in 0..n_q {
            row_start.push(entries.len());
            let q0 = q_offset + qt * tile_q;
            let qr = q0..q_offset + ((qt + 1) * tile_q).min(q_len);
            for kt in 0..n_k {
                let kr = kt * tile_k..((kt + 1) * tile_k).min(kv_len);
                match mask.classify(qr.clone(), kr) {
                    TileKind::Empty => {}
                    kind => entries.push(BlockEntry {
                        k_tile: kt as u32,
                        partial: kind == TileKind::Partial,
                    }),
                }
            }
        }
        row_start.push(entries.len());
        Ok(BlockMask {
            q_len,
            kv_len,
            q_offset,
            tile_q,
            tile_k,
            row_start,
            entries,
        })
    }

    /// Number of query tiles.
    pub fn q_tiles(&self) -> usize {
        self.row_start.len() - 1
    }

    /// Number of key tiles.
    pub fn k_tiles(&self) -> usize {
        self.kv_len.div_ceil(self.tile_k)
    }

    /// Non-empty key tiles of query tile `qt`, in increasing key order.
    pub fn row(&self, qt: usize) -> &[BlockEntry] {
        &self.entries[self.row_start[qt]..self.row_start[qt + 1]]
    }

    /// Kind of tile pair (`qt`, `kt`).
    pub fn kind(&self, qt: usize, kt: usize) -> TileKind {
        match self.row(qt).iter().find(|e| e.k_tile as usize == kt) {
            None => TileKind::Empty,
            Some(e) if e.partial => TileKind::Partial,
            Some(_) => TileKind::Full,
        }
    }

    /// Counts of (full, partial, empty) tiles.
    pub fn counts(&self) -> (usize, usize, usize) {
        let partial = self.entries.iter().filter(|e| e.partial).count();
        let full = self.entries.len() - partial;
        (
            full,
            partial,
            self.q_tiles() * self.k_tiles() - full - partial,
        )
    }
}

type BlockKey = (Mask, usize, usize, usize, usize, usize);

/// A small cache of block masks keyed by (mask, q_len, kv_len, q_offset, tile_q, tile_k); when it
/// holds `capacity` entries the next insertion empties it (shapes repeat across layers and steps,
/// so the working set is tiny).
#[derive(Debug)]
pub struct BlockMaskCache {
    capacity: usize,
    map: Mutex<HashMap<BlockKey, Arc<BlockMask>>>,
}

impl BlockMaskCache {
    /// An empty cache holding at most `capacity` block masks.
    pub fn new(capacity: usize) -> Self {
        BlockMaskCache {
            capacity: capacity.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The process-wide cache used by [`super::attention_prefill`].
    pub fn global() -> &'static BlockMaskCache {
        static CACHE: OnceLock<BlockMaskCache> = OnceLock::new();
        CACHE.get_or_init(|| BlockMaskCache::new(32))
    }

    /// The cached block mask for this key, built on a miss.
    pub fn get(
        &self,
        mask: &Mask,
        q_len: usize,
        kv_len: usize,
        q_offset: usize,
        tile_q: usize,
        tile_k: usize,
    ) -> Result<Arc<BlockMask>> {
        let key = (mask.clone(), q_len, kv_len, q_offset, tile_q, tile_k);
        if let Some(b) = self.lock().get(&key) {
            return Ok(Arc::clone(b));
        }
        let built = Arc::new(BlockMask::build(
            mask, q_len, kv_len, q_offset, tile_q, tile_k,
        )?);
        let mut map = self.lock();
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(key, Arc::clone(&built));
        Ok(built)
    }

    /// Number of cached block masks.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlockKey, Arc<BlockMask>>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> Vec<u32> {
        // Three documents of uneven length, and an id repeated after a gap.
        (0..70u32)
            .map(|p| match p {
                0..=20 => 0,
                21..=22 => 1,
                23..=50 => 2,
                _ => 0,
            })
            .collect()
    }

    /// Each primitive and combination against an independent closure written from its definition.
    type Case = (&'static str, Mask, Box<dyn Fn(usize, usize) -> bool>);

    fn cases() -> Vec<Case> {
        let d = docs();
        let d2 = d.clone();
        vec![
            ("all", Mask::All, Box::new(|_, _| true)),
            ("causal", Mask::causal(), Box::new(|q, k| k <= q)),
            (
                "window5",
                Mask::sliding_window(5),
                Box::new(|q, k| (q as i64 - k as i64).abs() < 5),
            ),
            (
                "causal_window7",
                Mask::causal().and(Mask::sliding_window(7)),
                Box::new(|q, k| k <= q && q - k < 7),
            ),
            (
                "document",
                Mask::document(d.clone()),
                Box::new(move |q, k| q < 70 && k < 70 && d[q] == d[k]),
            ),
            (
                "causal_document",
                Mask::causal().and(Mask::document(d2.clone())),
                Box::new(move |q, k| k <= q && q < 70 && d2[q] == d2[k]),
            ),
            (
                "prefix13",
                Mask::prefix_lm(13),
                Box::new(|q, k| k < 13 || k <= q),
            ),
            ("sinks6", Mask::sinks(6), Box::new(|_, k| k < 6)),
            (
                "streaming4_20",
                Mask::streaming(4, 20).unwrap(),
                Box::new(|q, k| k <= q && (k < 4 || q - k < 16)),
            ),
            (
                "streaming_composed",
                Mask::causal().and(Mask::sliding_window(16).or(Mask::sinks(4))),
                Box::new(|q, k| k <= q && (k < 4 || q - k < 16)),
            ),
            (
                "window_or_sinks",
                Mask::causal().and(Mask::sliding_window(9).or(Mask::sinks(3))),
                Box::new(|q, k| k <= q && (q - k < 9 || k < 3)),
            ),
            (
                "prefix_or_window",
                Mask::prefix_lm(10).or(Mask::sliding_window(3)),
                Box::new(|q, k| k < 10 || k <= q || (q as i64 - k as i64).abs() < 3),
            ),
        ]
    }

    #[test]
    fn allowed_matches_definitions() {
        for (name, mask, f) in cases() {
            for q in 0..80 {
                for k in 0..80 {
                    assert_eq!(mask.allowed(q, k), f(q, k), "{name} q={q} k={k}");
                }
            }
        }
    }

    /// Full and Empty claims hold for every pair; exact primitives are never needlessly Partial.
    #[test]
    fn tile_classification_is_sound_and_tight() {
        for (name, mask, f) in cases() {
            for (tq, tk, off) in [(4, 4, 0), (8, 4, 3), (5, 7, 11), (16, 16, 0), (3, 9, 40)] {
                let bm = BlockMask::build(&mask, 60, 70, off, tq, tk).unwrap();
                for qt in 0..bm.q_tiles() {
                    for kt in 0..bm.k_tiles() {
                        let qs = off + qt * tq..off + ((qt + 1) * tq).min(60);
                        let ks = kt * tk..((kt + 1) * tk).min(70);
                        let n_allowed = qs
                            .clone()
                            .flat_map(|q| ks.clone().map(move |k| (q, k)))
                            .filter(|&(q, k)| f(q, k))
                            .count();
                        let total = qs.len() * ks.len();
                        let kind = bm.kind(qt, kt);
                        match kind {
                            TileKind::Full => assert_eq!(n_allowed, total, "{name} {qt},{kt}"),
                            TileKind::Empty => assert_eq!(n_allowed, 0, "{name} {qt},{kt}"),
                            TileKind::Partial => {}
                        }
                        let exact = matches!(
                            name,
                            "all" | "causal" | "window5" | "prefix13" | "document" | "sinks6"
                        );
                        if exact && kind == TileKind::Partial {
                            assert!(
                                n_allowed > 0 && n_allowed < total,
                                "{name} tile {qt},{kt} needlessly partial"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sliding_window_block_count_grows_with_t_times_w() {
        let mask = Mask::causal().and(Mask::sliding_window(256));
        let small = BlockMask::build(&mask, 4096, 4096, 0, 64, 64).unwrap();
        let big = BlockMask::build(&mask, 16384, 16384, 0, 64, 64).unwrap();
        let (f1, p1, _) = small.counts();
        let (f2, p2, _) = big.counts();
        // Non-empty tiles per query tile stay constant (≈ w / tile + 1), so 4× T gives ≈ 4× tiles.
        let ratio = (f2 + p2) as f64 / (f1 + p1) as f64;
        assert!((3.9..=4.1).contains(&ratio), "ratio {ratio}");
        assert!(f2 + p2 <= 256 * 6, "{f2} + {p2}");
    }

    #[test]
    fn cache_returns_same_block_mask_and_bounds_size() {
        let cache = BlockMaskCache::new(2);
        let m = Mask::causal();
        let a = cache.get(&m, 100, 100, 0, 16, 16).unwrap();
        let b = cache.get(&m, 100, 100, 0, 16, 16).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = cache
            .get(&Mask::sliding_window(3), 100, 100, 0, 16, 16)
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(cache.len(), 2);
        cache.get(&m, 50, 100, 0, 16, 16).unwrap();
        assert!(cache.len() <= 2);
    }

    #[test]
    fn additive_bias_marks_disallowed_pairs() {
        let b = Mask::causal().additive_bias(3, 4, 1);
        let want = [0.0, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY];
        assert_eq!(&b[..4], &want);
        assert_eq!(&b[8..], &[0.0; 4]);
    }

    #[test]
    fn bad_streaming_and_tiles_are_rejected() {
        assert!(Mask::streaming(4, 4).is_err());
        assert!(BlockMask::build(&Mask::All, 4, 4, 0, 0, 4).is_err());
    }
}
