//! `tritter bench decode --json`: end-to-end prefill and decode speed of randomly initialised
//! models (`tritter-tiny` and a `bitnet-b1.58-2b4t`-shaped model, built from packed ternary
//! weights directly, never from f32 masters), next to the kernel report of the same process
//! (`copy_gbps`, `gemv`, `gemm`) so the bandwidth bound is measured in the same sitting.
//!
//! The bound: bytes read per decoded token (packed ternary weights, the LM head at its precision
//! and the KV cache) ÷ copy bandwidth (STREAM copy, read + write counted, as in the kernel report,
//! on small pages); `ratio_to_huge_page_bound` holds the same step to the copy of buffers on huge
//! pages, where the weights and heads live (`tritter_kernels::huge`).
//! Prefill and decode figures are the best of a few repetitions (shared, noisy machines).

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use serde_json::{json, Value};
use tritter_model::random::RandomSource;
use tritter_model::{Config, CpuModel, HeadKind, Transformer};

/// One model to measure.
struct Case {
    name: &'static str,
    cfg: Config,
    heads: &'static [&'static str],
    prompt: usize,
    decode: usize,
    reps: usize,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "tritter-tiny",
            cfg: Config::tritter_tiny(),
            heads: &["f32", "f16"],
            prompt: 128,
            decode: 64,
            reps: 3,
        },
        Case {
            name: "bitnet-b1.58-2b4t",
            cfg: Config::bitnet_b158_2b4t(),
            heads: &["f32", "f16", "int8"],
            prompt: 128,
            decode: 32,
            reps: 2,
        },
    ]
}

/// A `kB` figure of a `/proc/self` file (`key:` at the start of a line), in bytes, if available.
fn proc_kb(file: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(file).ok()?;
    let line = s
        .lines()
        .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory of this process in bytes (`VmRSS` of `/proc/self/status`), if available.
pub fn rss_bytes() -> Option<u64> {
    proc_kb("/proc/self/status", "VmRSS")
}

/// Bytes of this process on transparent huge pages (`AnonHugePages` of
/// `/proc/self/smaps_rollup`), if available.
fn anon_huge_bytes() -> Option<u64> {
    proc_kb("/proc/self/smaps_rollup", "AnonHugePages")
}

/// A deterministic prompt of `n` ids below `vocab` (`salt` varies it between repetitions).
pub(crate) fn ids(n: usize, vocab: usize, salt: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729 + 3) % vocab) as u32)
        .collect()
}

/// (prefill tokens/s, decode tokens/s, KV bytes at the end) of one model and head, best of reps.
fn speed(m: &mut CpuModel, c: &Case) -> Result<(f64, f64, usize)> {
    let vocab = m.config().vocab_size;
    let (mut pre, mut dec, mut kv) = (0f64, 0f64, 0);
    for r in 0..c.reps {
        m.reset()?;
        let prompt = ids(c.prompt, vocab, r);
        let t0 = Instant::now();
        m.forward(&prompt, false)?;
        pre = pre.max(c.prompt as f64 / t0.elapsed().as_secs_f64());
        let toks = ids(c.decode, vocab, r + 17);
        let t1 = Instant::now();
        for &t in &toks {
            m.forward(&[t], false)?;
        }
        dec = dec.max(c.decode as f64 / t1.elapsed().as_secs_f64());
        kv = m.cache().bytes();
    }
    Ok((pre, dec, kv))
}

fn decode_rows(bw_gbps: f64, bw_huge_gbps: f64, threads: usize) -> Result<Vec<Value>> {
    let mut rows = vec![];
    for c in cases() {
        let rss0 = rss_bytes();
        let t0 = Instant::now();
        let mut src = RandomSource::new(7, &Device::Cpu);
        let m = Transformer::load(&c.cfg, &mut src, &Device::Cpu)
            .with_context(|| format!("building the random {} model", c.name))?;
        let build_s = t0.elapsed().as_secs_f64();
        let rss_model = match (rss0, rss_bytes()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let (packed, dense) = m.weight_bytes();
        let mut cpu = CpuModel::new(&m)?;
        for head in c.heads {
            cpu.set_head(HeadKind::parse(head)?)?;
            let (pre, dec, kv) = speed(&mut cpu, &c)?;
            let bytes = packed + cpu.head_bytes() + kv;
            let bound = bw_gbps * 1e9 / bytes as f64;
            rows.push(json!({
                "model": c.name,
                "head": head,
                "threads": threads,
                "tokens_per_s": dec,
                "prefill_tokens_per_s": pre,
                "bound_tokens_per_s": bound,
                "ratio_to_bound": dec / bound,
                "ratio_to_huge_page_bound": dec * bytes as f64 / (bw_huge_gbps * 1e9),
                "bytes_per_token": bytes,
                "packed_weight_bytes": packed,
                "dense_weight_bytes": dense,
                "kv_bytes": kv,
                "rss_model_bytes": rss_model,
                "huge_page_bytes": anon_huge_bytes(),
                "build_s": build_s,
                "prompt_tokens": c.prompt,
                "decode_tokens": c.decode,
            }));
        }
    }
    Ok(rows)
}

/// The decode report: the kernel report's object (`copy_gbps`, `gemv`, `gemm`, ...) plus
/// `decode`, a list of `{model, head, tokens_per_s, prefill_tokens_per_s, bound_tokens_per_s,
/// ratio_to_bound, bytes_per_token, ...}`, and `profile`, the 2B4T step taken apart
/// (`bench::profile`). Runs on a rayon pool of `threads` threads.
pub fn decode_report(threads: usize) -> Result<Value> {
    let mut report = crate::bench::kernels::kernels_report(threads)?;
    let bw = report["copy_gbps"]
        .as_f64()
        .context("kernel report without copy_gbps")?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .context("building the benchmark thread pool")?;
    let bw_huge = report["copy_gbps_huge_pages"].as_f64().unwrap_or(f64::NAN);
    let rows = pool.install(|| decode_rows(bw, bw_huge, threads))?;
    // The step the profile is compared with: the 2B4T decode with the f16 head.
    let step = rows
        .iter()
        .find(|r| r["model"] == "bitnet-b1.58-2b4t" && r["head"] == "f16")
        .and_then(|r| r["tokens_per_s"].as_f64())
        .map_or(f64::NAN, |t| 1e6 / t);
    let context = cases()
        .iter()
        .map(|c| c.prompt + c.decode / 2)
        .max()
        .unwrap_or(0);
    report["profile"] =
        pool.install(|| crate::bench::profile::decode_profile(bw, context, step))?;
    report["decode"] = Value::Array(rows);
    Ok(report)
}

/// Plain-text rendering of the decode rows.
pub fn decode_text(report: &Value) -> String {
    let mut s = format!(
        "copy bandwidth {:.1} GB/s\n",
        report["copy_gbps"].as_f64().unwrap_or(0.0)
    );
    for r in report["decode"].as_array().into_iter().flatten() {
        s += &format!(
            "{:<20} head {:<4} decode {:>8.1} tok/s (bound {:>8.1}, {:>4.0}%)  prefill {:>8.1} tok/s\n",
            r["model"].as_str().unwrap_or("?"),
            r["head"].as_str().unwrap_or("?"),
            r["tokens_per_s"].as_f64().unwrap_or(0.0),
            r["bound_tokens_per_s"].as_f64().unwrap_or(0.0),
            100.0 * r["ratio_to_bound"].as_f64().unwrap_or(0.0),
            r["prefill_tokens_per_s"].as_f64().unwrap_or(0.0),
        );
    }
    s
}
