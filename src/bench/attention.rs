//! `tritter bench attention --json`: per-token decode cost over the KV cache at 1K…64K context,
//! full attention vs a 4096-token window, for f16 and INT4 caches; per-token prefill cost of the
//! tiled kernel; KV bytes per token per layer of every cache kind, measured from real caches; and
//! the machine's copy bandwidth in the same run, so decode speed is also given as a fraction of
//! the bandwidth bound. Shapes are one layer of `tritter-7b` (32 query heads, 8 kv heads, 128).

use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};
use tritter_model::attn::{
    attention_decode, attention_prefill, AttnShape, KvCache, KvCacheConfig, KvKind, Mask,
};

const HEADS: usize = 32;
const KV_HEADS: usize = 8;
const HEAD_DIM: usize = 128;
const CONTEXTS: [usize; 7] = [1024, 2048, 4096, 8192, 16384, 32768, 65536];
const WINDOW: usize = 4096;
const SINKS: usize = 4;

/// Deterministic pseudo-random values in [-1, 1).
fn fill(n: usize, seed: u64) -> Vec<f32> {
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

/// CPU time of this process in ns (sum of its threads' run time from `/proc/self/task/*/schedstat`;
/// `None` off Linux). On a shared machine CPU time is the stable measure of work; wall time is not.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let path = e.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// (best wall seconds, mean CPU seconds) over `reps` calls of `f`, after one warm-up call.
fn timed(
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, Option<f64>)> {
    f()?;
    let cpu0 = process_cpu_ns();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let cpu = match (cpu0, process_cpu_ns()) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / 1e9 / reps as f64),
        _ => None,
    };
    Ok((best, cpu))
}

/// Best-of-`reps` seconds of `f`, after one warm-up call.
fn best_of(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Read + write bandwidth of a 256 MiB copy in GB/s (the machine's own yardstick).
fn copy_bandwidth() -> anyhow::Result<f64> {
    let n = 64 << 20;
    let src = vec![1f32; n];
    let mut dst = vec![0f32; n];
    let t = best_of(3, || {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        Ok(())
    })?;
    Ok(2.0 * 4.0 * n as f64 / t / 1e9)
}

fn decode_rows(kind: KvKind, window: usize, bw: f64) -> anyhow::Result<(Vec<Value>, f64)> {
    let chunk = 1024;
    let k = fill(KV_HEADS * chunk * HEAD_DIM, 1);
    let v = fill(KV_HEADS * chunk * HEAD_DIM, 2);
    let q = fill(HEADS * HEAD_DIM, 3);
    let mut out = vec![0f32; HEADS * HEAD_DIM];
    let mut cache = KvCache::new(KvCacheConfig {
        kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        kind,
        window,
        sinks: if window > 0 { SINKS } else { 0 },
        rope_theta: Some(500_000.0),
    })?;
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    let mut rows = Vec::new();
    let mut bytes_per_token = 0.0;
    for &ctx in &CONTEXTS {
        while cache.seen() < ctx {
            cache.append(&k, &v, chunk)?;
        }
        // The same number of calls at every point (best-of-N favours points with more calls).
        let (t, cpu) = timed(8, || {
            Ok(attention_decode(&q, HEADS, &cache, scale, &mut out)?)
        })?;
        let bytes = cache.bytes_used() as f64;
        bytes_per_token = bytes / cache.len() as f64;
        rows.push(json!({
            "context": ctx,
            "window": window,
            "cache": kind.name(),
            "cached_tokens": cache.len(),
            "us_per_token": t * 1e6,
            "cpu_us_per_token": cpu.map(|c| c * 1e6),
            "cache_read_gbs": bytes / t / 1e9,
            "of_copy_bandwidth": bytes / t / 1e9 / bw,
        }));
    }
    Ok((rows, bytes_per_token))
}

fn prefill_rows() -> anyhow::Result<Vec<Value>> {
    // One GQA group of the layer (4 query heads on 1 kv head); multiply by 8 for the layer.
    let (heads, kv_heads) = (HEADS / KV_HEADS, 1);
    let mut rows = Vec::new();
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    for (ctx, window) in [
        (1024, 0),
        (2048, 0),
        (4096, 0),
        (1024, WINDOW),
        (4096, WINDOW),
        (8192, WINDOW),
        (16384, WINDOW),
    ] {
        let shape = AttnShape {
            heads,
            kv_heads,
            q_len: ctx,
            kv_len: ctx,
            head_dim: HEAD_DIM,
        };
        let q = fill(heads * ctx * HEAD_DIM, 4);
        let k = fill(kv_heads * ctx * HEAD_DIM, 5);
        let v = fill(kv_heads * ctx * HEAD_DIM, 6);
        let mut out = vec![0f32; q.len()];
        let mask = match window {
            0 => Mask::causal(),
            w => Mask::streaming(SINKS, w)?,
        };
        let (t, cpu) = timed(1, || {
            Ok(attention_prefill(
                &q, &k, &v, shape, &mask, scale, 0, &mut out,
            )?)
        })?;
        rows.push(json!({
            "context": ctx,
            "window": window,
            "heads": heads,
            "us_per_token": t * 1e6 / ctx as f64,
            "cpu_us_per_token": cpu.map(|c| c * 1e6 / ctx as f64),
        }));
    }
    Ok(rows)
}

fn kv_bytes() -> anyhow::Result<serde_json::Map<String, Value>> {
    let chunk = 1024;
    let k = fill(KV_HEADS * chunk * HEAD_DIM, 7);
    let mut m = serde_json::Map::new();
    for kind in [
        KvKind::F32,
        KvKind::F16,
        KvKind::Bf16,
        KvKind::INT4,
        KvKind::Int4 {
            group: 32,
            residual: 128,
        },
    ] {
        let mut c = KvCache::new(KvCacheConfig {
            kv_heads: KV_HEADS,
            head_dim: HEAD_DIM,
            kind,
            window: 0,
            sinks: 0,
            rope_theta: None,
        })?;
        for _ in 0..16 {
            c.append(&k, &k, chunk)?;
        }
        m.insert(kind.name(), json!(c.bytes_used() as f64 / c.len() as f64));
    }
    Ok(m)
}

fn ratio(
    rows: &[Value],
    key: &str,
    window: usize,
    cache: &str,
    num: usize,
    den: usize,
) -> Option<f64> {
    let at = |ctx: usize| {
        rows.iter()
            .find(|r| r["context"] == ctx && r["window"] == window && r["cache"] == cache)
            .and_then(|r| r[key].as_f64())
    };
    Some(at(num)? / at(den)?)
}

fn ratio_kinds(rows: &[Value], window: usize, ctx: usize) -> Option<f64> {
    let at = |cache: &str| {
        rows.iter()
            .find(|r| r["context"] == ctx && r["window"] == window && r["cache"] == cache)
            .and_then(|r| r["cpu_us_per_token"].as_f64())
    };
    Some(at("int4")? / at("f16")?)
}

/// The attention benchmark report (see the module docs); runs on a pool of `threads` threads and
/// takes well under a minute on two cores.
pub fn attention_report(threads: usize) -> anyhow::Result<Value> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .context("building the benchmark thread pool")?;
    pool.install(|| {
        let bw = copy_bandwidth()?;
        let mut decode = Vec::new();
        let mut bytes_64k = serde_json::Map::new();
        for kind in [KvKind::F16, KvKind::INT4] {
            for window in [0, WINDOW] {
                let (rows, bpt) = decode_rows(kind, window, bw)?;
                if window == 0 {
                    bytes_64k.insert(kind.name(), json!(bpt));
                }
                decode.extend(rows);
            }
        }
        let kv = kv_bytes()?;
        let prefill = prefill_rows()?;
        let f16 = kv.get("f16").and_then(Value::as_f64).unwrap_or(f64::NAN);
        let int4 = kv.get("int4").and_then(Value::as_f64).unwrap_or(f64::NAN);
        Ok(json!({
            "shape": {"heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM,
                      "window": WINDOW, "sinks": SINKS, "threads": threads,
                      "tile_kernels": tritter_model::attn::tile_kernel_name(),
                      "fused_kernels": tritter_model::attn::fused_kernel_name()},
            "copy_bandwidth_gbs": bw,
            "decode": decode,
            "prefill": prefill,
            "kv_bytes_per_token_per_layer": kv,
            "kv_bytes_per_token_per_layer_at_64k": bytes_64k,
            "ratios": {
                "decode_window_64k_over_4k_f16": ratio(&decode, "us_per_token", WINDOW, "f16", 65536, 4096),
                "decode_window_64k_over_4k_int4": ratio(&decode, "us_per_token", WINDOW, "int4", 65536, 4096),
                "decode_full_64k_over_4k_f16": ratio(&decode, "us_per_token", 0, "f16", 65536, 4096),
                "cpu_decode_window_64k_over_4k_f16": ratio(&decode, "cpu_us_per_token", WINDOW, "f16", 65536, 4096),
                "cpu_decode_window_64k_over_4k_int4": ratio(&decode, "cpu_us_per_token", WINDOW, "int4", 65536, 4096),
                "cpu_decode_full_64k_over_4k_f16": ratio(&decode, "cpu_us_per_token", 0, "f16", 65536, 4096),
                "cpu_decode_window_int4_over_f16_64k": ratio_kinds(&decode, WINDOW, 65536),
                "kv_int4_over_f16": int4 / f16,
            },
        }))
    })
}

#[cfg(test)]
mod tests {
    /// Runs the whole report: `cargo test --bin tritter bench::attention -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark, ~1 minute"]
    fn attention_report_prints_json() {
        let r = super::attention_report(2).unwrap();
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        assert_eq!(r["decode"].as_array().unwrap().len(), 28);
    }
}
