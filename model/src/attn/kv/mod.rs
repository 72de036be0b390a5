//! Per-layer KV cache on slices: f32 / f16 / bf16 storage or KIVI-style INT4 (keys per channel,
//! values per token, groups of `group` tokens/channels, the newest `residual` tokens kept in f32),
//! optionally a rolling window with StreamingLLM attention sinks (Xiao et al., 2023).
//!
//! Layout: tokens live in blocks of [`FLOAT_BLOCK`] (float kinds) or `group` (INT4) tokens, each
//! block `[kv_heads][block][head_dim]`; the rolling window evicts token by token by advancing a
//! dead prefix in the oldest block and recycling a block once all its tokens are dead, so memory
//! is constant once the window has rolled past its first block (`window` + at most two blocks + the
//! INT4 residual).
//!
//! Positions (StreamingLLM): keys are appended already rotated with their absolute position (the
//! ordinary RoPE of the model), values as they are. Recent keys then have the same query-key
//! distances as in the StreamingLLM reference, which rotates pre-RoPE keys with their *index in
//! the cache*, because the recent tokens are contiguous and end at the query. Only the sinks
//! differ: once `e` tokens have been evicted, [`KvCache::sink_rotation`] rotates the (f32) sink
//! keys by `e` more positions on every view, giving them the cache-index distance of the reference.
//! The decode kernel applies it; no other key is re-rotated.
//!
//! Files: `kind.rs` (the storage kinds), `store.rs` (the token blocks and their float / INT4
//! storage).

mod kind;
mod raw;
mod store;

pub use kind::KvKind;
pub(crate) use raw::{lines_per_part, prefetch_lines};
pub use raw::{Int4Tile, RawBuffers, RawTile};

use super::int4;
use super::rope::RopeShift;
use super::{check_len, config_err, Result};
use store::{flush_group, push_float, reset, visit_float, Blocks, Elem, FBlock, QBlock, Recent};

/// Tokens per block of the float kinds.
pub const FLOAT_BLOCK: usize = 64;

/// Configuration of one layer's cache.
#[derive(Clone, Debug, PartialEq)]
pub struct KvCacheConfig {
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension (even; a multiple of the INT4 value group when it is larger).
    pub head_dim: usize,
    /// Storage kind.
    pub kind: KvKind,
    /// Rolling window in tokens, sinks included; 0 keeps every token.
    pub window: usize,
    /// Attention sinks kept forever when the window rolls (StreamingLLM uses 4); needs `window`.
    pub sinks: usize,
    /// RoPE base of the model; sinks are shifted to their cache positions only when set.
    pub rope_theta: Option<f32>,
}

/// Callback of [`KvCache::visit_head`]: `(keys, values, first_position)`.
pub type TileVisitor<'a> = dyn FnMut(&[f32], &[f32], usize) + 'a;

/// Callback of [`KvCache::visit_head_raw`]: `(tile, first_position)`.
pub type RawTileVisitor<'a> = dyn FnMut(RawTile<'_>, usize) + 'a;

/// Callback of [`KvCache::visit_heads_raw`]: `(kv_head, tile, first_position)`.
pub type HeadsTileVisitor<'a> = dyn FnMut(usize, RawTile<'_>, usize) + 'a;

/// Reusable buffers for viewing a cache (one per worker thread).
#[derive(Default, Debug)]
pub struct TileScratch {
    raw: RawBuffers,
    f: raw::F32Buffers,
}

impl TileScratch {
    /// `tile` as f32 keys and values `[n][d]`, converted into these buffers unless it is f32.
    pub(crate) fn convert<'a>(&'a mut self, tile: RawTile<'a>, d: usize) -> (&'a [f32], &'a [f32]) {
        raw::to_f32(tile, d, &mut self.f)
    }
}

/// One layer's KV cache. See the module docs for layout and position handling.
#[derive(Debug)]
pub struct KvCache {
    cfg: KvCacheConfig,
    recent: Recent,
    /// f32 `[kv_heads][sinks][d]` (only with a window).
    sink_k: Vec<f32>,
    sink_v: Vec<f32>,
    sink_len: usize,
    seen: usize,
    rope: Option<RopeShift>,
}

impl KvCache {
    /// An empty cache; rejects inconsistent configurations with a message naming the setting.
    pub fn new(cfg: KvCacheConfig) -> Result<Self> {
        let (h, d) = (cfg.kv_heads, cfg.head_dim);
        if h == 0 || d == 0 || !d.is_multiple_of(2) {
            return Err(config_err(
                "kv cache shape",
                format!("kv_heads ({h}) must be > 0 and head_dim ({d}) even and > 0"),
            ));
        }
        if cfg.window == 0 && cfg.sinks > 0 {
            return Err(config_err(
                "kv cache sinks",
                format!(
                    "{} attention sinks need a rolling window (window is 0)",
                    cfg.sinks
                ),
            ));
        }
        if cfg.window > 0 && cfg.sinks >= cfg.window {
            return Err(config_err(
                "kv cache sinks",
                format!(
                    "sinks ({}) must be below the window ({})",
                    cfg.sinks, cfg.window
                ),
            ));
        }
        let recent = match cfg.kind {
            KvKind::F32 => Recent::F32(Blocks::new()),
            KvKind::F16 => Recent::F16(Blocks::new()),
            KvKind::Bf16 => Recent::Bf16(Blocks::new()),
            KvKind::Int4 { group, residual } => {
                let vg = group.min(d);
                if group < 2
                    || !group.is_multiple_of(2)
                    || !d.is_multiple_of(vg)
                    || residual < group
                {
                    return Err(config_err(
                        "int4 kv cache",
                        format!(
                            "group ({group}) must be even, divide head_dim ({d}) or exceed it, \
                             and residual ({residual}) must be at least the group"
                        ),
                    ));
                }
                let cap = cfg.window.saturating_sub(cfg.sinks);
                if cfg.window > 0 && cap < residual + group {
                    return Err(config_err(
                        "int4 kv cache",
                        format!(
                            "the rolling part of the window ({cap}) must hold residual ({residual}) \
                             + group ({group}) tokens"
                        ),
                    ));
                }
                Recent::Int4 {
                    q: Blocks::new(),
                    tail_k: vec![0.0; h * residual * d],
                    tail_v: vec![0.0; h * residual * d],
                    tail_len: 0,
                }
            }
        };
        let n_sinks = if cfg.window > 0 { cfg.sinks } else { 0 };
        Ok(KvCache {
            rope: cfg.rope_theta.map(|t| RopeShift::new(d, t)),
            sink_k: vec![0.0; h * n_sinks * d],
            sink_v: vec![0.0; h * n_sinks * d],
            sink_len: 0,
            seen: 0,
            recent,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &KvCacheConfig {
        &self.cfg
    }

    /// Tokens currently visible to attention.
    pub fn len(&self) -> usize {
        self.sink_len + self.recent_len()
    }

    /// Whether the cache holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens appended since creation (the next token's absolute position).
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Tokens evicted by the rolling window.
    pub fn evicted(&self) -> usize {
        self.seen - self.len()
    }

    /// Empties the cache, keeping its buffers.
    pub fn clear(&mut self) {
        self.sink_len = 0;
        self.seen = 0;
        match &mut self.recent {
            Recent::F32(b) => reset(b),
            Recent::F16(b) => reset(b),
            Recent::Bf16(b) => reset(b),
            Recent::Int4 { q, tail_len, .. } => {
                reset(q);
                *tail_len = 0;
            }
        }
    }

    /// Bytes held by the cache's buffers (allocated capacity, spare blocks included).
    pub fn bytes_used(&self) -> usize {
        fn fb<T>(b: &Blocks<FBlock<T>>) -> usize {
            let one = |x: &FBlock<T>| (x.k.capacity() + x.v.capacity()) * size_of::<T>();
            b.blocks.iter().map(one).sum::<usize>() + b.spare.as_ref().map_or(0, one)
        }
        let recent = match &self.recent {
            Recent::F32(b) => fb(b),
            Recent::F16(b) => fb(b),
            Recent::Bf16(b) => fb(b),
            Recent::Int4 {
                q, tail_k, tail_v, ..
            } => {
                let one = |x: &QBlock| x.bytes();
                q.blocks.iter().map(one).sum::<usize>()
                    + q.spare.as_ref().map_or(0, one)
                    + 4 * (tail_k.capacity() + tail_v.capacity())
            }
        };
        recent + 4 * (self.sink_k.capacity() + self.sink_v.capacity())
    }

    /// Appends `n` tokens: `k` and `v` are `[kv_heads, n, head_dim]`, keys already rotated with
    /// their absolute positions `seen()..seen()+n`. Evicts from the rolling window as needed.
    pub fn append(&mut self, k: &[f32], v: &[f32], n: usize) -> Result<()> {
        let (h, d) = (self.cfg.kv_heads, self.cfg.head_dim);
        check_len("kv append keys", h * n * d, k.len())?;
        check_len("kv append values", h * n * d, v.len())?;
        let n_sinks = self.sink_k.len() / (h * d);
        let cap = self.cfg.window.saturating_sub(n_sinks);
        for t in 0..n {
            let row = |hh: usize| (hh * n + t) * d..(hh * n + t + 1) * d;
            if self.sink_len < n_sinks {
                for hh in 0..h {
                    let dst = (hh * n_sinks + self.sink_len) * d;
                    self.sink_k[dst..dst + d].copy_from_slice(&k[row(hh)]);
                    self.sink_v[dst..dst + d].copy_from_slice(&v[row(hh)]);
                }
                self.sink_len += 1;
            } else {
                self.push_recent(|hh| (&k[row(hh)], &v[row(hh)]));
                if self.cfg.window > 0 && self.recent_len() > cap {
                    self.evict_recent();
                }
            }
            self.seen += 1;
        }
        Ok(())
    }

    /// RoPE table that moves sink keys to their StreamingLLM cache positions (`evicted()` more
    /// positions); `None` when no shift is needed or the cache has no RoPE base.
    pub fn sink_rotation(&self) -> Option<Vec<(f32, f32)>> {
        match (&self.rope, self.sink_len, self.evicted()) {
            (Some(r), s, e) if s > 0 && e > 0 => Some(r.table(e)),
            _ => None,
        }
    }

    /// Calls `f(keys, values, pos)` on f32 tiles `[n][head_dim]` covering every visible token of kv
    /// head `head`, sinks first, then oldest to newest; `pos` is the absolute position of the
    /// tile's first token (tiles are contiguous in position). f16 and INT4 tiles are converted
    /// into `scratch`; sink keys are rotated by `sink_table` when given. A `head` out of range
    /// visits nothing.
    pub fn visit_head(
        &self,
        head: usize,
        scratch: &mut TileScratch,
        sink_table: Option<&[(f32, f32)]>,
        f: &mut TileVisitor<'_>,
    ) {
        let d = self.cfg.head_dim;
        let TileScratch { raw, f: fb } = scratch;
        self.visit_head_raw(head, raw, sink_table, &mut |tile, pos| {
            let (k, v) = raw::to_f32(tile, d, fb);
            f(k, v, pos);
        });
    }

    /// [`KvCache::visit_head`] without the conversion: `f(tile, pos)` gets each tile as stored
    /// (f32, f16 or INT4 codes; bf16 tiles and rotated sinks come as f32 in `buf`).
    pub fn visit_head_raw(
        &self,
        head: usize,
        buf: &mut RawBuffers,
        sink_table: Option<&[(f32, f32)]>,
        f: &mut RawTileVisitor<'_>,
    ) {
        self.visit_heads_raw(head..head + 1, buf, sink_table, &mut |_, t, pos| f(t, pos));
    }

    /// [`KvCache::visit_head_raw`] for the kv heads `heads`: `f(head, tile, pos)` gets each head's
    /// tiles in that head's order, the heads interleaved. INT4 blocks go block by block, every
    /// head of a block before the next block, so the reads run through each block's heads in
    /// memory order (head by head, each head's tiles were 8 KB runs 74 KB apart in a `tritter-7b`
    /// layer, and decode attention slowed by half once the cache outgrew the L3); other kinds go
    /// head by head. Heads out of range are skipped.
    pub fn visit_heads_raw(
        &self,
        heads: std::ops::Range<usize>,
        buf: &mut RawBuffers,
        sink_table: Option<&[(f32, f32)]>,
        f: &mut HeadsTileVisitor<'_>,
    ) {
        let (d, h) = (self.cfg.head_dim, self.cfg.kv_heads);
        let heads = heads.start.min(h)..heads.end.min(h);
        let start = self.seen - self.recent_len();
        for head in heads.clone() {
            self.visit_sinks(head, buf, sink_table, &mut |t| f(head, t, 0));
        }
        match &self.recent {
            Recent::F32(b) => float_heads(b, heads, d, start, buf, f),
            Recent::F16(b) => float_heads(b, heads, d, start, buf, f),
            Recent::Bf16(b) => float_heads(b, heads, d, start, buf, f),
            Recent::Int4 {
                q,
                tail_k,
                tail_v,
                tail_len,
            } => {
                let (group, residual) = self.int4_params();
                let vg = group.min(d);
                let per_tok = d / vg;
                let tile = |i: usize, head: usize| {
                    let (blk, (s, e)) = (&q.blocks[i], q.live(i, group));
                    let part = blk.head(head, d, group);
                    let kcb = int4::key_chunk_bytes(d);
                    let k16 = int4::KEY_CHUNK;
                    let v0 = s % int4::VALUE_QUAD;
                    Int4Tile {
                        kc: &part.kc[s / k16 * kcb..e.div_ceil(k16) * kcb],
                        k0: s % k16,
                        km: part.km,
                        ks: part.ks,
                        vc: &part.vc
                            [int4::value_code_bytes(s - v0, d)..int4::value_code_bytes(e, d)],
                        v0,
                        vm: &part.vm[s * per_tok..e * per_tok],
                        vs: &part.vs[s * per_tok..e * per_tok],
                        vg,
                        next: q
                            .blocks
                            .get(i + 1)
                            .map_or(&[], |b| b.head_codes(head, d, group)),
                    }
                };
                let mut pos = start;
                for i in 0..q.blocks.len() {
                    // Each block is its own allocation: ask for the next one's parameters while
                    // this one runs (the kernels fetch its codes, a few lines per step).
                    if i + 1 < q.blocks.len() {
                        for head in heads.clone() {
                            tile(i + 1, head).prefetch();
                        }
                    }
                    let (s, e) = q.live(i, group);
                    for head in heads.clone() {
                        f(head, RawTile::Int4(tile(i, head)), pos);
                    }
                    pos += e - s;
                }
                if *tail_len > 0 {
                    for head in heads {
                        let base = head * residual * d;
                        let t = RawTile::F32 {
                            k: &tail_k[base..base + tail_len * d],
                            v: &tail_v[base..base + tail_len * d],
                        };
                        f(head, t, pos);
                    }
                }
            }
        }
    }

    /// Head `head`'s sink tile, if the cache keeps sinks: keys rotated by `sink_table` (into
    /// `buf`) when given.
    fn visit_sinks(
        &self,
        head: usize,
        buf: &mut RawBuffers,
        sink_table: Option<&[(f32, f32)]>,
        f: &mut dyn FnMut(RawTile<'_>),
    ) {
        if self.sink_len == 0 {
            return;
        }
        let (d, h) = (self.cfg.head_dim, self.cfg.kv_heads);
        let n_sinks = self.sink_k.len() / (h * d);
        let base = head * n_sinks * d;
        let keys = &self.sink_k[base..base + self.sink_len * d];
        let vals = &self.sink_v[base..base + self.sink_len * d];
        match sink_table {
            Some(t) => {
                buf.k.clear();
                buf.k.extend_from_slice(keys);
                for row in buf.k.chunks_exact_mut(d) {
                    RopeShift::apply(t, row);
                }
                f(RawTile::F32 { k: &buf.k, v: vals });
            }
            None => f(RawTile::F32 { k: keys, v: vals }),
        }
    }

    /// Every visible token of kv head `head` as f32 `(keys, values)` `[len][head_dim]`, in the
    /// order of [`KvCache::visit_head`], sink keys shifted as the decode kernel sees them.
    pub fn to_f32(&self, head: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut ks, mut vs) = (Vec::new(), Vec::new());
        let table = self.sink_rotation();
        let mut scratch = TileScratch::default();
        self.visit_head(head, &mut scratch, table.as_deref(), &mut |k, v, _| {
            ks.extend_from_slice(k);
            vs.extend_from_slice(v);
        });
        (ks, vs)
    }

    fn int4_params(&self) -> (usize, usize) {
        match self.cfg.kind {
            KvKind::Int4 { group, residual } => (group, residual),
            _ => (FLOAT_BLOCK, 0),
        }
    }

    fn recent_len(&self) -> usize {
        match &self.recent {
            Recent::F32(b) => b.len(FLOAT_BLOCK),
            Recent::F16(b) => b.len(FLOAT_BLOCK),
            Recent::Bf16(b) => b.len(FLOAT_BLOCK),
            Recent::Int4 { q, tail_len, .. } => q.len(self.int4_params().0) + tail_len,
        }
    }

    fn evict_recent(&mut self) {
        let group = self.int4_params().0;
        match &mut self.recent {
            Recent::F32(b) => b.evict_one(FLOAT_BLOCK),
            Recent::F16(b) => b.evict_one(FLOAT_BLOCK),
            Recent::Bf16(b) => b.evict_one(FLOAT_BLOCK),
            // The window holds at least residual + group tokens, so the live tokens past the
            // residual tail lie in quantised blocks.
            Recent::Int4 { q, .. } => q.evict_one(group),
        }
    }

    fn push_recent<'a>(&mut self, row: impl Fn(usize) -> (&'a [f32], &'a [f32])) {
        let (h, d) = (self.cfg.kv_heads, self.cfg.head_dim);
        let (group, residual) = self.int4_params();
        match &mut self.recent {
            Recent::F32(b) => push_float(b, h, d, row),
            Recent::F16(b) => push_float(b, h, d, row),
            Recent::Bf16(b) => push_float(b, h, d, row),
            Recent::Int4 {
                q,
                tail_k,
                tail_v,
                tail_len,
            } => {
                if *tail_len == residual {
                    flush_group(q, tail_k, tail_v, h, d, group, residual);
                    *tail_len -= group;
                }
                for hh in 0..h {
                    let (k, v) = row(hh);
                    let dst = (hh * residual + *tail_len) * d;
                    tail_k[dst..dst + d].copy_from_slice(k);
                    tail_v[dst..dst + d].copy_from_slice(v);
                }
                *tail_len += 1;
            }
        }
    }
}

/// The float kinds' tiles of `heads`, head by head (each head's part of a float block is one
/// contiguous run), positions from `start`.
fn float_heads<T: Elem>(
    b: &Blocks<FBlock<T>>,
    heads: std::ops::Range<usize>,
    d: usize,
    start: usize,
    buf: &mut RawBuffers,
    f: &mut HeadsTileVisitor<'_>,
) {
    for head in heads {
        let mut pos = start;
        visit_float(b, head, d, buf, &mut |t: RawTile<'_>| {
            let n = t.len(d);
            f(head, t, pos);
            pos += n;
        });
    }
}
