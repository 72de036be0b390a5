//! KV caches and decode attention against recomputation: full caches of every kind, the rolling
//! StreamingLLM sink cache against the reference's recompute-from-scratch semantics (keys rotated
//! with their index in the cache), INT4 caches, and the planner's KV figures against the bytes a
//! real cache allocates.

use tritter_model::attn::reference::attention_naive;
use tritter_model::attn::{
    attention_cached, attention_decode, attention_prefill, AttnShape, KvCache, KvCacheConfig,
    KvKind, Mask,
};
use tritter_model::plan::kv_layer_bytes;

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
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

/// HF rotate-half RoPE of one head vector at `pos`, written from the formula.
fn rope(x: &[f32], pos: usize, theta: f64) -> Vec<f32> {
    let d = x.len();
    let h = d / 2;
    (0..d)
        .map(|i| {
            let j = i % h;
            let a = pos as f64 * theta.powf(-(2.0 * j as f64) / d as f64);
            let rot = if i < h { -x[i + h] } else { x[i - h] } as f64;
            (x[i] as f64 * a.cos() + rot * a.sin()) as f32
        })
        .collect()
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cfg(kind: KvKind, window: usize, sinks: usize, theta: Option<f32>) -> KvCacheConfig {
    KvCacheConfig {
        kv_heads: 2,
        head_dim: 16,
        kind,
        window,
        sinks,
        rope_theta: theta,
    }
}

/// One token's `[kv_heads, 1, d]` slice from per-token rows.
fn token(rows: &[Vec<f32>]) -> Vec<f32> {
    rows.concat()
}

#[test]
fn decode_over_full_caches_matches_naive() {
    let (heads, h, d, t) = (6, 2, 16, 200);
    let k = rand_vec(h * t * d, 1);
    let v = rand_vec(h * t * d, 2);
    let q = rand_vec(heads * d, 3);
    let shape = AttnShape {
        heads,
        kv_heads: h,
        q_len: 1,
        kv_len: t,
        head_dim: d,
    };
    let want = attention_naive(&q, &k, &v, shape, 0.4, t - 1, |_, _| true);
    for (kind, tol) in [
        (KvKind::F32, 1e-5),
        (KvKind::F16, 2e-3),
        (KvKind::Bf16, 2e-2),
        (
            KvKind::Int4 {
                group: 16,
                residual: 32,
            },
            0.08,
        ),
    ] {
        let mut c = KvCache::new(cfg(kind, 0, 0, None)).unwrap();
        // Append in uneven chunks to cross block boundaries.
        let mut pos = 0;
        for n in [1, 63, 64, 5, 67] {
            let part = |x: &[f32]| -> Vec<f32> {
                (0..h)
                    .flat_map(|hh| x[(hh * t + pos) * d..(hh * t + pos + n) * d].to_vec())
                    .collect()
            };
            c.append(&part(&k), &part(&v), n).unwrap();
            pos += n;
        }
        assert_eq!(c.len(), t);
        let mut got = vec![0f32; heads * d];
        attention_decode(&q, heads, &c, 0.4, &mut got).unwrap();
        let e = max_err(&want, &got);
        assert!(e < tol, "{kind:?}: err {e}");
        // The kernel is exact over what the cache holds.
        let (mut ck, mut cv) = (Vec::new(), Vec::new());
        for hh in 0..h {
            let (a, b) = c.to_f32(hh);
            ck.extend(a);
            cv.extend(b);
        }
        let exact = attention_naive(&q, &ck, &cv, shape, 0.4, t - 1, |_, _| true);
        assert!(max_err(&exact, &got) < 1e-5, "{kind:?} kernel");
    }
}

#[test]
fn prefill_last_row_equals_decode() {
    let (heads, h, d, t) = (4, 2, 16, 150);
    let q = rand_vec(heads * t * d, 4);
    let k = rand_vec(h * t * d, 5);
    let v = rand_vec(h * t * d, 6);
    let shape = AttnShape {
        heads,
        kv_heads: h,
        q_len: t,
        kv_len: t,
        head_dim: d,
    };
    let mut pre = vec![0f32; q.len()];
    attention_prefill(&q, &k, &v, shape, &Mask::causal(), 0.25, 0, &mut pre).unwrap();
    let mut c = KvCache::new(cfg(KvKind::F32, 0, 0, None)).unwrap();
    c.append(&k, &v, t).unwrap();
    let q_last: Vec<f32> = (0..heads)
        .flat_map(|hh| q[(hh * t + t - 1) * d..(hh * t + t) * d].to_vec())
        .collect();
    let mut dec = vec![0f32; heads * d];
    attention_decode(&q_last, heads, &c, 0.25, &mut dec).unwrap();
    let pre_last: Vec<f32> = (0..heads)
        .flat_map(|hh| pre[(hh * t + t - 1) * d..(hh * t + t) * d].to_vec())
        .collect();
    assert!(max_err(&pre_last, &dec) < 1e-5);
}

/// Generates `steps` tokens through a rolling sink cache and, at every step, recomputes the
/// StreamingLLM reference from scratch: keep the first `sinks` and the last `window - sinks`
/// tokens, rotate the pre-RoPE keys with their index in that cache and the query with the last
/// index, then run naive attention. Returns the worst error.
fn streaming_run(kind: KvKind, window: usize, sinks: usize) -> f32 {
    // Memory is constant from the first recycled block on: the window plus two blocks later.
    let warm = window + 2 * 64;
    let steps = warm + window + 100;
    let (heads, h, d, theta) = (4, 2, 16, 10_000.0f32);
    let mut cache = KvCache::new(cfg(kind, window, sinks, Some(theta))).unwrap();
    let (mut raw_k, mut raw_v) = (Vec::new(), Vec::new()); // [t][h][d]
    let mut worst = 0f32;
    let mut bytes_at_full = None;
    for t in 0..steps {
        let k_t: Vec<Vec<f32>> = (0..h)
            .map(|hh| rand_vec(d, (t * 7 + hh) as u64 + 100))
            .collect();
        let v_t: Vec<Vec<f32>> = (0..h)
            .map(|hh| rand_vec(d, (t * 7 + hh) as u64 + 9000))
            .collect();
        let q_t: Vec<Vec<f32>> = (0..heads)
            .map(|hh| rand_vec(d, (t * 7 + hh) as u64 + 50_000))
            .collect();
        // Model side: ordinary RoPE at the absolute position.
        let k_rot: Vec<Vec<f32>> = k_t.iter().map(|x| rope(x, t, theta as f64)).collect();
        cache.append(&token(&k_rot), &token(&v_t), 1).unwrap();
        let q_rot: Vec<f32> = q_t.iter().flat_map(|x| rope(x, t, theta as f64)).collect();
        let mut got = vec![0f32; heads * d];
        attention_decode(&q_rot, heads, &cache, 0.5, &mut got).unwrap();
        raw_k.push(k_t);
        raw_v.push(v_t);

        // Reference.
        let kept: Vec<usize> = (0..=t)
            .filter(|&i| i < sinks || t - i < window - sinks)
            .collect();
        assert_eq!(cache.len(), kept.len(), "step {t}");
        let n = kept.len();
        let mut rk = vec![0f32; h * n * d];
        let mut rv = vec![0f32; h * n * d];
        for (ci, &i) in kept.iter().enumerate() {
            for hh in 0..h {
                let kr = rope(&raw_k[i][hh], ci, theta as f64);
                rk[(hh * n + ci) * d..(hh * n + ci + 1) * d].copy_from_slice(&kr);
                rv[(hh * n + ci) * d..(hh * n + ci + 1) * d].copy_from_slice(&raw_v[i][hh]);
            }
        }
        let rq: Vec<f32> = q_t
            .iter()
            .flat_map(|x| rope(x, n - 1, theta as f64))
            .collect();
        let shape = AttnShape {
            heads,
            kv_heads: h,
            q_len: 1,
            kv_len: n,
            head_dim: d,
        };
        let want = attention_naive(&rq, &rk, &rv, shape, 0.5, 0, |_, _| true);
        worst = worst.max(max_err(&want, &got));

        // Memory is constant once the window has rolled for a while.
        if t == warm {
            bytes_at_full = Some(cache.bytes_used());
        }
        if t > warm {
            assert_eq!(Some(cache.bytes_used()), bytes_at_full, "step {t}");
        }
    }
    worst
}

#[test]
fn rolling_sink_cache_matches_streamingllm_recompute() {
    // Windows smaller and larger than a block, with and without sinks.
    for (window, sinks) in [(20, 4), (100, 4), (70, 0), (9, 1)] {
        let e = streaming_run(KvKind::F32, window, sinks);
        assert!(e < 2e-4, "f32 window {window} sinks {sinks}: err {e}");
    }
    let e = streaming_run(KvKind::F16, 40, 4);
    assert!(e < 5e-3, "f16: err {e}");
}

#[test]
fn rolling_int4_cache_tracks_recompute() {
    let e = streaming_run(
        KvKind::Int4 {
            group: 8,
            residual: 16,
        },
        48,
        4,
    );
    // INT4 steps are 1/15 of a group's range (inputs in [-1, 1]); attention averages them.
    assert!(e < 0.08, "int4: err {e}");
}

#[test]
fn budget_planner_kv_matches_allocation_within_10_percent() {
    let kinds = [
        KvKind::F32,
        KvKind::F16,
        KvKind::Bf16,
        KvKind::Int4 {
            group: 32,
            residual: 64,
        },
        KvKind::INT4,
    ];
    let (h, d) = (2, 64);
    for kind in kinds {
        for (window, sinks) in [(0, 0), (1024, 4), (2048, 0)] {
            let mut c = KvCache::new(KvCacheConfig {
                kv_heads: h,
                head_dim: d,
                kind,
                window,
                sinks,
                rope_theta: Some(10_000.0),
            })
            .unwrap();
            let k = rand_vec(h * 512 * d, 11);
            let mut n = 0;
            for target in [700usize, 2000, 5000] {
                while n < target {
                    let m = 512.min(target - n);
                    let ks: Vec<f32> = (0..h)
                        .flat_map(|hh| k[hh * 512 * d..(hh * 512 + m) * d].to_vec())
                        .collect();
                    c.append(&ks, &ks, m).unwrap();
                    n += m;
                }
                let planned = kv_layer_bytes(h, d, kind, window, sinks, n) as f64;
                let real = c.bytes_used() as f64;
                let r = planned / real;
                assert!(
                    (0.9..=1.1).contains(&r),
                    "{kind:?} window {window} tokens {n}: planned {planned} real {real}"
                );
            }
        }
    }
}

#[test]
fn int4_cache_is_under_three_tenths_of_f16_per_token() {
    let (h, d) = (2, 128);
    let k = rand_vec(h * 1024 * d, 12);
    let mut per_kind = Vec::new();
    for kind in [KvKind::F16, KvKind::INT4] {
        let mut c = KvCache::new(KvCacheConfig {
            kv_heads: h,
            head_dim: d,
            kind,
            window: 0,
            sinks: 0,
            rope_theta: None,
        })
        .unwrap();
        let mut at = Vec::new();
        for i in 1..=32 {
            c.append(&k, &k, 1024).unwrap();
            if i == 16 || i == 32 {
                at.push(c.bytes_used() as f64);
            }
        }
        // (amortised bytes per token at 32K, marginal bytes per token from 16K to 32K)
        per_kind.push((at[1] / 32768.0, (at[1] - at[0]) / 16384.0));
    }
    let amortised = per_kind[1].0 / per_kind[0].0;
    let marginal = per_kind[1].1 / per_kind[0].1;
    assert!(amortised <= 0.3, "int4/f16 amortised at 32K = {amortised}");
    assert!(marginal <= 0.29, "int4/f16 marginal = {marginal}");
}

/// A new turn's chunk attends over the cached conversation exactly like a causal prefill of the
/// whole sequence (rows of the chunk only).
#[test]
fn chunked_prefill_over_cache_matches_naive() {
    let (heads, h, d) = (4, 2, 16);
    for (window, sinks, a, b) in [
        (0, 0, 100, 37),
        (0, 0, 0, 20),
        (64, 4, 10, 40),
        (64, 0, 20, 30),
    ] {
        let t = a + b;
        let k = rand_vec(h * t * d, 21);
        let v = rand_vec(h * t * d, 22);
        let q = rand_vec(heads * b * d, 23);
        let part = |x: &[f32], from: usize, to: usize| -> Vec<f32> {
            (0..h)
                .flat_map(|hh| x[(hh * t + from) * d..(hh * t + to) * d].to_vec())
                .collect()
        };
        let mut c = KvCache::new(cfg(KvKind::F32, window, sinks, None)).unwrap();
        c.append(&part(&k, 0, a), &part(&v, 0, a), a).unwrap();
        c.append(&part(&k, a, t), &part(&v, a, t), b).unwrap();
        let mut got = vec![0f32; q.len()];
        attention_cached(&q, heads, b, &c, 0.3, &mut got).unwrap();
        let shape = AttnShape {
            heads,
            kv_heads: h,
            q_len: b,
            kv_len: t,
            head_dim: d,
        };
        let want = attention_naive(&q, &k, &v, shape, 0.3, a, |qp, kp| {
            kp <= qp && (window == 0 || kp < sinks || qp - kp < window - sinks)
        });
        let e = max_err(&want, &got);
        assert!(
            e < 1e-5,
            "window {window} sinks {sinks} a {a} b {b}: err {e}"
        );
    }
}

#[test]
fn bad_configs_and_shapes_are_rejected() {
    assert!(KvCache::new(cfg(KvKind::F16, 4, 4, None)).is_err());
    assert!(KvCache::new(cfg(
        KvKind::Int4 {
            group: 8,
            residual: 4
        },
        0,
        0,
        None
    ))
    .is_err());
    assert!(KvCache::new(cfg(
        KvKind::Int4 {
            group: 8,
            residual: 16
        },
        20,
        4,
        None
    ))
    .is_err());
    let mut c = KvCache::new(cfg(KvKind::F32, 0, 0, None)).unwrap();
    assert!(c.append(&[0.0; 10], &[0.0; 10], 1).is_err());
    let mut out = vec![0f32; 3 * 16];
    assert!(attention_decode(&[0.0; 48], 3, &c, 1.0, &mut out).is_err());
    assert_eq!(
        KvKind::parse("int4-g32").unwrap(),
        KvKind::Int4 {
            group: 32,
            residual: 64
        }
    );
    assert_eq!(KvKind::parse("bf16").unwrap(), KvKind::Bf16);
    assert!(KvKind::parse("int3").is_err());
}

/// A cache of `kv_heads × d` holding `n` random tokens, `(window, sinks)` as given.
fn filled_cache(
    kind: KvKind,
    kv_heads: usize,
    d: usize,
    (window, sinks): (usize, usize),
    rope_theta: Option<f32>,
    n: usize,
) -> KvCache {
    let mut cache = KvCache::new(KvCacheConfig {
        kv_heads,
        head_dim: d,
        kind,
        window,
        sinks,
        rope_theta,
    })
    .unwrap();
    let (k, v) = (rand_vec(kv_heads * n * d, 1), rand_vec(kv_heads * n * d, 2));
    cache.append(&k, &v, n).unwrap();
    cache
}

/// One visited tile, enough to tell tiles apart: (position, tokens, where its data lies).
fn tile_id(
    t: &tritter_model::attn::kv::RawTile<'_>,
    pos: usize,
    d: usize,
) -> (usize, usize, usize) {
    use tritter_model::attn::kv::RawTile;
    let at = match t {
        RawTile::F32 { k, .. } => k.as_ptr() as usize,
        RawTile::F16 { k, .. } => k.as_ptr() as usize,
        RawTile::Int4(q) => q.vc.as_ptr() as usize,
    };
    (pos, t.len(d), at)
}

#[test]
fn visiting_several_heads_gives_each_head_its_own_tiles() {
    use tritter_model::attn::kv::RawBuffers;
    let (h, d) = (3, 64);
    for (kind, window, sinks) in [
        (KvKind::INT4, 0, 0),
        (KvKind::INT4, 200, 4),
        (KvKind::F16, 200, 4),
    ] {
        let cache = filled_cache(kind, h, d, (window, sinks), Some(10_000.0), 333);
        let table = cache.sink_rotation();
        let mut buf = RawBuffers::default();
        let one: Vec<Vec<_>> = (0..h)
            .map(|head| {
                let mut v = Vec::new();
                cache.visit_head_raw(head, &mut buf, table.as_deref(), &mut |t, pos| {
                    v.push(tile_id(&t, pos, d));
                });
                v
            })
            .collect();
        let mut all: Vec<Vec<_>> = vec![Vec::new(); h];
        let mut order = Vec::new();
        cache.visit_heads_raw(0..h + 2, &mut buf, table.as_deref(), &mut |head, t, pos| {
            if t.len(d) > 0 && matches!(t, tritter_model::attn::kv::RawTile::Int4(_)) {
                order.push(head);
            }
            all[head].push(tile_id(&t, pos, d));
        });
        // Sink tiles are rotated into the shared buffer: compare them by position and length.
        let strip = |v: &Vec<(usize, usize, usize)>| -> Vec<(usize, usize, Option<usize>)> {
            v.iter()
                .map(|&(p, l, a)| (p, l, (sinks == 0 || p > 0).then_some(a)))
                .collect()
        };
        for head in 0..h {
            assert!(one[head].len() > 2, "{kind:?}: head {head} has tiles");
            assert_eq!(
                strip(&all[head]),
                strip(&one[head]),
                "{kind:?} window {window}: head {head}"
            );
        }
        // INT4 blocks go block by block: heads 0, 1, 2, 0, 1, 2, …
        for (i, &head) in order.iter().enumerate() {
            assert_eq!(head, i % h, "{kind:?}: INT4 tile {i} is of head {head}");
        }
    }
}

#[test]
fn decode_is_the_same_on_any_number_of_threads() {
    let (kvh, heads, d, n) = (5, 20, 64, 300);
    for kind in [KvKind::INT4, KvKind::F16] {
        let cache = filled_cache(kind, kvh, d, (0, 0), None, n);
        let q = rand_vec(heads * d, 5);
        let outs: Vec<Vec<f32>> = [1, 2, 3]
            .iter()
            .map(|&t| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap();
                let mut out = vec![0f32; heads * d];
                pool.install(|| attention_decode(&q, heads, &cache, 0.125, &mut out))
                    .unwrap();
                out
            })
            .collect();
        assert_eq!(outs[0], outs[1], "{kind:?}: 1 vs 2 threads");
        assert_eq!(outs[0], outs[2], "{kind:?}: 1 vs 3 threads");
    }
}
