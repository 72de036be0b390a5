//! Fused attention on slices, after FlashAttention-2 (Dao, 2023): queries are processed in tiles,
//! keys/values are streamed tile by tile with an online softmax (running max `m`, running sum `l`,
//! rescaled accumulator), so no score matrix and no T×T mask is ever materialised. The prefill
//! kernel walks only the non-empty tiles of a [`BlockMask`] and evaluates the mask only on partial
//! tiles; the decode kernel streams a [`KvCache`] tile by tile (dequantising INT4 tiles on the fly).
//! Both must equal [`super::reference::attention_naive`] within float tolerance. Rows that see no
//! key produce zeros. GQA: query head `h` reads kv head `h / (heads / kv_heads)`.

use rayon::prelude::*;

use super::fused;
use super::kv::{KvCache, KvKind, RawBuffers, RawTile, TileScratch};
use super::mask::{BlockMask, BlockMaskCache, Mask};
use super::tile;
use super::{check_len, config_err, Result};

/// Default query tile (rows per task).
pub const TILE_Q: usize = 64;
/// Default key tile.
pub const TILE_K: usize = 64;

/// Shape of one attention call: `q` is `[heads, q_len, head_dim]`, `k`/`v` are
/// `[kv_heads, kv_len, head_dim]`, all row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttnShape {
    /// Query heads (a multiple of `kv_heads`).
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query positions.
    pub q_len: usize,
    /// Key positions.
    pub kv_len: usize,
    /// Head dimension.
    pub head_dim: usize,
}

impl AttnShape {
    fn validate(&self) -> Result<()> {
        if self.kv_heads == 0 || self.heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(config_err(
                "attention heads",
                format!(
                    "heads ({}) must be a non-zero multiple of kv_heads ({})",
                    self.heads, self.kv_heads
                ),
            ));
        }
        if self.head_dim == 0 {
            return Err(config_err("attention head_dim", "must be non-zero"));
        }
        Ok(())
    }
}

/// Prefill attention: `out[h, i] = Σ_j softmax_j(q[h,i]·k[j]·scale | mask) v[j]`, query `i` at
/// absolute position `q_offset + i`, key `j` at position `j`. The block mask comes from the global
/// [`BlockMaskCache`] with [`TILE_Q`] × [`TILE_K`] tiles.
#[allow(clippy::too_many_arguments)]
pub fn attention_prefill(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttnShape,
    mask: &Mask,
    scale: f32,
    q_offset: usize,
    out: &mut [f32],
) -> Result<()> {
    let bm =
        BlockMaskCache::global().get(mask, shape.q_len, shape.kv_len, q_offset, TILE_Q, TILE_K)?;
    attention_prefill_blocks(q, k, v, shape, mask, &bm, scale, out)
}

/// [`attention_prefill`] with an explicit block mask (built for `mask` and this shape).
#[allow(clippy::too_many_arguments)]
pub fn attention_prefill_blocks(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttnShape,
    mask: &Mask,
    bm: &BlockMask,
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    shape.validate()?;
    let AttnShape {
        heads,
        kv_heads,
        q_len,
        kv_len,
        head_dim: d,
    } = shape;
    check_len("attention q", heads * q_len * d, q.len())?;
    check_len("attention k", kv_heads * kv_len * d, k.len())?;
    check_len("attention v", kv_heads * kv_len * d, v.len())?;
    check_len("attention out", heads * q_len * d, out.len())?;
    if bm.q_len != q_len || bm.kv_len != kv_len {
        return Err(config_err(
            "block mask",
            format!(
                "built for {}×{}, attention is {q_len}×{kv_len}",
                bm.q_len, bm.kv_len
            ),
        ));
    }
    if q_len == 0 {
        return Ok(());
    }
    let group = heads / kv_heads;
    let (tq, tk) = (bm.tile_q, bm.tile_k);
    let (kern, softmax_rows) = (tile::kernels(), fused::kernels().softmax_rows);
    out.par_chunks_mut(q_len * d)
        .enumerate()
        .for_each(|(h, out_h)| {
            let kvh = h / group;
            let q_h = &q[h * q_len * d..][..q_len * d];
            let k_h = &k[kvh * kv_len * d..][..kv_len * d];
            let v_h = &v[kvh * kv_len * d..][..kv_len * d];
            out_h
                .par_chunks_mut(tq * d)
                .enumerate()
                .for_each(|(qt, acc)| {
                    let rows = acc.len() / d;
                    let q_rows = &q_h[qt * tq * d..][..rows * d];
                    let q0 = bm.q_offset + qt * tq;
                    acc.fill(0.0);
                    let mut m = vec![f32::NEG_INFINITY; rows];
                    let mut l = vec![0f32; rows];
                    let mut corr = vec![0f32; rows];
                    let mut s_buf = vec![0f32; rows * tk];
                    for e in bm.row(qt) {
                        let k0 = e.k_tile as usize * tk;
                        let kn = tk.min(kv_len - k0);
                        let keys = &k_h[k0 * d..][..kn * d];
                        let vals = &v_h[k0 * d..][..kn * d];
                        let s = &mut s_buf[..rows * kn];
                        (kern.scores)(q_rows, keys, d, scale, s);
                        if e.partial {
                            for (i, sr) in s.chunks_exact_mut(kn).enumerate() {
                                for (j, x) in sr.iter_mut().enumerate() {
                                    if !mask.allowed(q0 + i, k0 + j) {
                                        *x = f32::NEG_INFINITY;
                                    }
                                }
                            }
                        }
                        softmax_rows(&mut m, &mut l, acc, s, &mut corr);
                        (kern.accumulate)(s, vals, d, acc);
                    }
                    finish_rows(acc, &l, d);
                });
        });
    Ok(())
}

/// Decode attention for one new token per sequence: `q` is `[heads, head_dim]` (rotated for the
/// token's absolute position), attending to every token the cache currently holds (append the
/// token's own k/v first). `out` is `[heads, head_dim]`. Parallel over kv heads; each cache tile
/// is read (and dequantised) once per kv head and shared by its query-head group.
pub fn attention_decode(
    q: &[f32],
    heads: usize,
    cache: &KvCache,
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    attention_cached(q, heads, 1, cache, scale, out)
}

/// Attention of the newest `n` cached tokens (append their k/v first) over the cache: `q` and
/// `out` are `[heads, n, head_dim]`; query `i` sits at absolute position `seen - n + i` and sees
/// cached keys at positions up to its own, within the cache's window (`window - sinks` recent
/// positions, plus the sinks). Used for chunked prefill of a new turn over an existing cache and,
/// with `n = 1`, for decode. If appending the chunk rolled the window, the earlier queries see the
/// cache as it is now (keys the chunk evicted are gone) and the sinks carry the last query's shift.
pub fn attention_cached(
    q: &[f32],
    heads: usize,
    n: usize,
    cache: &KvCache,
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    let cfg = cache.config();
    let (kv_heads, d) = (cfg.kv_heads, cfg.head_dim);
    AttnShape {
        heads,
        kv_heads,
        q_len: n,
        kv_len: cache.len(),
        head_dim: d,
    }
    .validate()?;
    check_len("cached attention q", heads * n * d, q.len())?;
    check_len("cached attention out", heads * n * d, out.len())?;
    if n == 0 {
        return Ok(());
    }
    if n > cache.seen() {
        return Err(config_err(
            "cached attention",
            format!("{n} queries but only {} tokens were appended", cache.seen()),
        ));
    }
    let group = heads / kv_heads;
    let rows = group * n;
    let q_first = cache.seen() - n;
    let n_sinks = if cfg.window > 0 { cfg.sinks } else { 0 };
    let recent = match cfg.window {
        0 => usize::MAX,
        w => w - n_sinks,
    };
    let sink_table = cache.sink_rotation();
    let vg = match cfg.kind {
        KvKind::Int4 { group, .. } => group.min(d),
        _ => 64,
    };
    // Few query rows (decode): read the cache in registers. Many (a prefill chunk): convert each
    // tile to f32 once and let the blocked f32 kernels share it among the rows.
    let fused_ok = fused::takes(d, vg) && rows <= fused::MAX_ROWS;
    let int4 = matches!(cfg.kind, KvKind::Int4 { .. }) && fused_ok;
    // Each task takes a run of kv heads, one per thread at most, so that it can read INT4
    // blocks in memory order (`KvCache::visit_heads_raw`).
    let per = kv_heads.div_ceil(rayon::current_num_threads().max(1));
    out.par_chunks_mut(per * rows * d)
        .enumerate()
        .for_each(|(c, accs)| {
            accs.fill(0.0);
            let (h0, nh) = (c * per, accs.len() / (rows * d));
            with_worker(nh, rows, if int4 { rows * d } else { 0 }, |w| {
                let Worker { st, raw, conv } = w;
                let heads = h0..h0 + nh;
                cache.visit_heads_raw(heads, raw, sink_table.as_deref(), &mut |kvh, tile, k0| {
                    let tile = if fused_ok {
                        tile
                    } else {
                        let (k, v) = conv.convert(tile, d);
                        RawTile::F32 { k, v }
                    };
                    let mask = |s: &mut [f32], kn: usize| {
                        // Row r is query (r % n) of its head; the newest query sees every key.
                        if n > 1 {
                            for (r, sr) in s.chunks_exact_mut(kn).enumerate() {
                                let qp = q_first + r % n;
                                for (j, x) in sr.iter_mut().enumerate() {
                                    let kp = k0 + j;
                                    let sink = kp < n_sinks;
                                    if kp > qp || (!sink && qp - kp >= recent) {
                                        *x = f32::NEG_INFINITY;
                                    }
                                }
                            }
                        }
                    };
                    let i = kvh - h0;
                    let qg = &q[kvh * rows * d..][..rows * d];
                    let acc = &mut accs[i * rows * d..][..rows * d];
                    st[i].tile(qg, tile, d, scale, acc, mask);
                });
                for (sti, acc) in st.iter().zip(accs.chunks_exact_mut(rows * d)) {
                    sti.finish(acc, d);
                }
            });
        });
    Ok(())
}

/// The buffers one kv head's decode pass works in. Kept per thread across calls (rayon's workers
/// live as long as the pool), so after a thread's first step a decode step allocates and zeroes
/// nothing but its state: at 1K tokens a fresh set per kv head and call was a measurable share of
/// the step (the INT4 scratch grows on the first tile).
struct Worker {
    /// One state per kv head of the task.
    st: Vec<DecodeState>,
    raw: RawBuffers,
    conv: TileScratch,
}

thread_local! {
    static WORKER: std::cell::RefCell<Option<Worker>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` on this thread's [`Worker`], with `heads` states reset for `rows` query rows and an
/// INT4 accumulator of `accp` elements each (fresh buffers if the thread's are in use, which no
/// caller does today: `f` never re-enters).
fn with_worker(heads: usize, rows: usize, accp: usize, f: impl FnOnce(&mut Worker)) {
    WORKER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let w = slot.get_or_insert_with(|| Worker {
                st: Vec::new(),
                raw: RawBuffers::default(),
                conv: TileScratch::default(),
            });
            if w.st.len() < heads {
                w.st.resize_with(heads, || DecodeState::new(0, 0));
            }
            for st in &mut w.st[..heads] {
                st.reset(rows, accp);
            }
            f(w)
        }
        Err(_) => f(&mut Worker {
            st: (0..heads).map(|_| DecodeState::new(rows, accp)).collect(),
            raw: RawBuffers::default(),
            conv: TileScratch::default(),
        }),
    })
}

/// Per-kv-head state of [`attention_cached`]: running max and sum per query row, the score
/// buffer, the INT4 values' code-term accumulator (value lane order) and the fused kernels' scratch.
struct DecodeState {
    m: Vec<f32>,
    l: Vec<f32>,
    /// Each row's rescaling factor of the last tile.
    corr: Vec<f32>,
    s: Vec<f32>,
    accp: Vec<f32>,
    scratch: fused::Int4Scratch,
}

impl DecodeState {
    /// Back to the state [`DecodeState::new`] makes, keeping the buffers.
    fn reset(&mut self, rows: usize, accp: usize) {
        for (v, x) in [
            (&mut self.m, f32::NEG_INFINITY),
            (&mut self.l, 0.0),
            (&mut self.corr, 1.0),
        ] {
            v.clear();
            v.resize(rows, x);
        }
        self.accp.clear();
        self.accp.resize(accp, 0.0);
    }

    fn new(rows: usize, accp: usize) -> Self {
        DecodeState {
            m: vec![f32::NEG_INFINITY; rows],
            l: vec![0.0; rows],
            corr: vec![1.0; rows],
            s: Vec::new(),
            accp: vec![0.0; accp],
            scratch: fused::Int4Scratch::default(),
        }
    }

    /// Folds one cache tile into the rows' online softmax and accumulators.
    fn tile(
        &mut self,
        q: &[f32],
        tile: RawTile<'_>,
        d: usize,
        scale: f32,
        acc: &mut [f32],
        mask: impl Fn(&mut [f32], usize),
    ) {
        let (kern, fk) = (tile::kernels(), fused::kernels());
        let rows = self.m.len();
        let kn = tile.len(d);
        self.s.resize(rows * kn, 0.0);
        let s = &mut self.s[..rows * kn];
        match &tile {
            RawTile::F32 { k, .. } => (kern.scores)(q, k, d, scale, s),
            RawTile::F16 { k, next, .. } => (fk.scores_f16)(q, k, d, scale, s, next.0),
            RawTile::Int4(t) => (fk.scores_int4)(q, t, d, scale, s, &mut self.scratch),
        }
        mask(s, kn);
        (fk.softmax_rows)(&mut self.m, &mut self.l, acc, s, &mut self.corr);
        if !self.accp.is_empty() {
            for (ap, &c) in self.accp.chunks_exact_mut(d).zip(&self.corr) {
                if c != 1.0 {
                    ap.iter_mut().for_each(|a| *a *= c);
                }
            }
        }
        match &tile {
            RawTile::F32 { v, .. } => (kern.accumulate)(s, v, d, acc),
            RawTile::F16 { v, next, .. } => (fk.accumulate_f16)(s, v, d, acc, next.1),
            RawTile::Int4(t) => {
                (fk.accumulate_int4)(s, t, d, &mut self.accp, acc, &mut self.scratch)
            }
        }
    }

    /// Merges the INT4 accumulator and divides by the softmax sums.
    fn finish(&self, acc: &mut [f32], d: usize) {
        if !self.accp.is_empty() {
            fused::merge_values(&self.accp, acc, d);
        }
        finish_rows(acc, &self.l, d);
    }
}

fn finish_rows(acc: &mut [f32], l: &[f32], d: usize) {
    for (row, &li) in acc.chunks_exact_mut(d).zip(l) {
        let inv = if li > 0.0 { 1.0 / li } else { 0.0 };
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::reference::attention_naive;
    use super::*;

    pub(crate) fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn check(
        name: &str,
        shape: AttnShape,
        mask: &Mask,
        q_offset: usize,
        f: impl Fn(usize, usize) -> bool,
    ) {
        let AttnShape {
            heads,
            kv_heads,
            q_len,
            kv_len,
            head_dim: d,
        } = shape;
        let q = rand_vec(heads * q_len * d, 1);
        let k = rand_vec(kv_heads * kv_len * d, 2);
        let v = rand_vec(kv_heads * kv_len * d, 3);
        let scale = 2.0 / (d as f32).sqrt(); // sharper than usual to stress the online max
        let want = attention_naive(&q, &k, &v, shape, scale, q_offset, f);
        for (tq, tk) in [(64, 64), (16, 8), (7, 13)] {
            let bm = BlockMask::build(mask, q_len, kv_len, q_offset, tq, tk).unwrap();
            let mut got = vec![f32::NAN; want.len()];
            attention_prefill_blocks(&q, &k, &v, shape, mask, &bm, scale, &mut got).unwrap();
            let err = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "{name} tiles {tq}x{tk}: max err {err}");
        }
    }

    fn shape(heads: usize, kv_heads: usize, q_len: usize, kv_len: usize) -> AttnShape {
        AttnShape {
            heads,
            kv_heads,
            q_len,
            kv_len,
            head_dim: 20,
        }
    }

    #[test]
    fn prefill_primitives_match_naive() {
        let docs: Vec<u32> = (0..150u32).map(|p| p / 37 + u32::from(p > 100)).collect();
        let dd = docs.clone();
        check("all", shape(4, 2, 90, 90), &Mask::All, 0, |_, _| true);
        check("causal", shape(4, 2, 90, 90), &Mask::causal(), 0, |q, k| {
            k <= q
        });
        check(
            "window",
            shape(2, 1, 100, 100),
            &Mask::causal().and(Mask::sliding_window(17)),
            0,
            |q, k| k <= q && q - k < 17,
        );
        check(
            "bidirectional window",
            shape(3, 3, 70, 70),
            &Mask::sliding_window(9),
            0,
            |q, k| q.abs_diff(k) < 9,
        );
        check(
            "document",
            shape(2, 2, 150, 150),
            &Mask::causal().and(Mask::document(docs)),
            0,
            move |q, k| k <= q && dd[q] == dd[k],
        );
        check(
            "prefix_lm",
            shape(4, 1, 80, 80),
            &Mask::prefix_lm(30),
            0,
            |q, k| k < 30 || k <= q,
        );
        check(
            "streaming",
            shape(2, 1, 120, 120),
            &Mask::streaming(4, 24).unwrap(),
            0,
            |q, k| k <= q && (k < 4 || q - k < 20),
        );
    }

    #[test]
    fn prefill_with_offset_and_combinations_match_naive() {
        // A chunk of 40 queries at positions 60.. over 100 keys (chunked prefill).
        check(
            "causal offset",
            shape(2, 1, 40, 100),
            &Mask::causal(),
            60,
            |q, k| k <= q,
        );
        check(
            "window or sinks offset",
            shape(4, 2, 40, 100),
            &Mask::causal().and(Mask::sliding_window(11).or(Mask::sinks(5))),
            60,
            |q, k| k <= q && (q - k < 11 || k < 5),
        );
        // Query rows with no allowed key at all produce zeros.
        let docs: Vec<u32> = (0..50).collect();
        check(
            "empty rows",
            shape(1, 1, 60, 50),
            &Mask::document(docs),
            0,
            |q, k| q < 50 && q == k,
        );
    }

    #[test]
    fn global_cache_path_matches_naive() {
        let s = shape(2, 1, 130, 130);
        let (q, k, v) = (
            rand_vec(2 * 130 * 20, 4),
            rand_vec(130 * 20, 5),
            rand_vec(130 * 20, 6),
        );
        let mut got = vec![0f32; q.len()];
        attention_prefill(&q, &k, &v, s, &Mask::causal(), 0.3, 0, &mut got).unwrap();
        let want = attention_naive(&q, &k, &v, s, 0.3, 0, |q, k| k <= q);
        let err = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "{err}");
    }

    #[test]
    fn bad_shapes_are_rejected() {
        let s = shape(3, 2, 4, 4);
        let mut out = vec![0f32; 3 * 4 * 20];
        let x = vec![0f32; 3 * 4 * 20];
        let kv = vec![0f32; 2 * 4 * 20];
        assert!(attention_prefill(&x, &kv, &kv, s, &Mask::All, 1.0, 0, &mut out).is_err());
        let s = shape(2, 2, 4, 4);
        let e = attention_prefill(&x, &kv, &kv, s, &Mask::All, 1.0, 0, &mut out[..160]);
        assert!(matches!(
            e,
            Err(super::super::AttnError::Length {
                what: "attention q",
                ..
            })
        ));
    }
}
