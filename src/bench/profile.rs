//! The CPU decode step of a 2B4T-shaped model taken apart (`bench decode --json`, `profile`):
//! each kind of operation a token's forward pass runs — the ternary GEMVs by shape (activation
//! quantisation included), the f16 LM head, attention over the cache, the RMS norms, and a
//! rayon fork-join with no work (the hand-off every parallel operation pays) — timed alone on
//! the same thread pool (the GEMVs over as many distinct copies of their matrix as a token reads,
//! so they stream from memory as in the model), multiplied by how often one token runs it, set
//! against the bytes it reads and the copy bandwidth, and summed against the measured step. What
//! the sum misses is the glue (RoPE, residual adds, activations, the cache append, buffers).

use std::time::Instant;

use anyhow::Result;
use half::f16;
use rayon::prelude::*;
use serde_json::{json, Value};
use tritter_kernels::{gemv_f16, ternary_matmul, TernaryMatrix};
use tritter_model::attn::{attention_decode, KvCache, KvCacheConfig, KvKind};
use tritter_model::Config;

/// Best-of time of `f` in µs over at least 5 calls and 0.3 s, after a warm-up call.
fn best_us(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let (start, mut best, mut n) = (Instant::now(), f64::INFINITY, 0);
    while n < 5 || start.elapsed().as_secs_f64() < 0.3 {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() * 1e6);
        n += 1;
    }
    Ok(best)
}

fn ternary(n: usize, k: usize) -> Result<TernaryMatrix> {
    let v: Vec<i8> = (0..n * k)
        .map(|i| ((i * 7919 + i / 7) % 3) as i8 - 1)
        .collect();
    Ok(TernaryMatrix::from_ternary(&v, n, k)?)
}

/// One row of the profile.
fn row(op: String, per_token: usize, us: f64, bytes: f64, copy_gbps: f64) -> Value {
    json!({
        "op": op,
        "per_token": per_token,
        "us_each": us,
        "us_per_token": us * per_token as f64,
        "bytes_each": bytes,
        "of_copy_bandwidth": if bytes > 0.0 { bytes / us / 1e3 / copy_gbps } else { 0.0 },
    })
}

/// The profile of one decode step at `context` cached tokens (f16 cache, f16 head); run inside
/// the benchmark's thread pool. `step_us` is the measured step it is compared with.
pub fn decode_profile(copy_gbps: f64, context: usize, step_us: f64) -> Result<Value> {
    let c = Config::bitnet_b158_2b4t();
    let (h, i, layers) = (c.hidden_size, c.intermediate_size, c.num_layers);
    let (q, kv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    let mut rows = Vec::new();
    let shapes = [
        ("q/o", q, h, 1usize),
        ("k/v", kv, h, 2),
        ("gate/up", i, h, 2),
        ("down", h, i, 1),
    ];
    let mut gemvs = 0;
    for (name, n, k, per_layer) in shapes {
        let w = ternary(n, k)?;
        let x: Vec<f32> = (0..k)
            .map(|j| ((j * 31 % 97) as f32 - 48.0) / 17.0)
            .collect();
        let mut y = vec![0f32; n];
        let us = best_us(|| Ok(ternary_matmul(&w, 1.0, &x, 1, &mut y)?))?;
        let count = if name == "q/o" { 2 } else { per_layer } * layers;
        gemvs += count;
        let op = format!("gemv {name} {n}x{k}");
        rows.push(row(op, count, us, w.packed_bytes() as f64, copy_gbps));
    }
    let head: Vec<f16> = (0..c.vocab_size * h)
        .map(|j| f16::from_f32(((j % 251) as f32 - 125.0) / 500.0))
        .collect();
    let x: Vec<f32> = (0..h).map(|j| (j % 13) as f32 / 13.0).collect();
    let mut logits = vec![0f32; c.vocab_size];
    let us = best_us(|| Ok(gemv_f16(&head, &x, &mut logits)?))?;
    let op = format!("head f16 {}x{h}", c.vocab_size);
    rows.push(row(op, 1, us, (head.len() * 2) as f64, copy_gbps));
    let mut cache = KvCache::new(KvCacheConfig {
        kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        kind: KvKind::F16,
        window: 0,
        sinks: 0,
        rope_theta: None,
    })?;
    let kvt: Vec<f32> = (0..kv * context)
        .map(|j| ((j % 101) as f32 - 50.0) / 50.0)
        .collect();
    cache.append(&kvt, &kvt, context)?;
    let qv: Vec<f32> = (0..q).map(|j| ((j % 7) as f32 - 3.0) / 3.0).collect();
    let mut out = vec![0f32; q];
    let scale = 1.0 / (c.head_dim as f32).sqrt();
    let us = best_us(|| Ok(attention_decode(&qv, c.num_heads, &cache, scale, &mut out)?))?;
    let op = format!("attention f16 cache, {context} tokens");
    rows.push(row(op, layers, us, cache.bytes_used() as f64, copy_gbps));
    for (name, dim, per_layer) in [("rms norm", h, 3usize), ("rms norm", i, 1)] {
        let mut v: Vec<f32> = (0..dim).map(|j| (j % 5) as f32).collect();
        let g = vec![1f32; dim];
        let us = best_us(|| {
            tritter_model::norm::rms_rows(&mut v, dim, &g, 1e-5);
            std::hint::black_box(&mut v);
            Ok(())
        })?;
        let count = per_layer * layers + usize::from(dim == h);
        rows.push(row(format!("{name} {dim}"), count, us, 0.0, copy_gbps));
    }
    // The hand-off: a parallel loop over the panel groups of the smallest GEMV, doing nothing.
    let groups = (kv / 16).div_ceil(4);
    let us = best_us(|| {
        (0..groups).into_par_iter().for_each(|g| {
            std::hint::black_box(g);
        });
        Ok(())
    })?;
    rows.push(row(
        "fork-join (empty)".into(),
        gemvs + layers,
        us,
        0.0,
        copy_gbps,
    ));
    let sum: f64 = rows.iter().filter_map(|r| r["us_per_token"].as_f64()).sum();
    for r in rows.iter_mut() {
        let share = r["us_per_token"].as_f64().unwrap_or(0.0) / step_us;
        r["share_of_step"] = json!(share);
    }
    Ok(json!({
        "model": "bitnet-b1.58-2b4t",
        "context": context,
        "ops": rows,
        "sum_us": sum,
        "measured_step_us": step_us,
        "unaccounted_us": step_us - sum,
    }))
}
