//! `tritter bench kernels|decode|attention --device cuda --json` (feature `cuda`): the GPU
//! reports. Every ratio is measured in the same process:
//! - kernels: device copy bandwidth (read + write counted), the ternary W2A8 GEMV at the 2B4T
//!   shapes (weights rotated through more copies than the L2 holds) as a fraction of it, and
//!   the GEMV/GEMM against candle's bf16 dense matmul (cuBLAS) on the same shapes;
//! - decode: prefill and decode tokens/s of the 2B4T-shaped random model on Tritter's GPU path
//!   (INT4 cache, f16 head, graph replay and eager) against candle's bf16 dense path on the same
//!   shape, the bandwidth bound, and device memory measured vs planned;
//! - attention: decode attention over INT4 and f16 caches at 4K and 64K tokens with a 4K window
//!   + 4 sinks, and without a window.
//!
//! Times are CUDA-event medians (kernels, attention) or wall time around synchronised steps
//! (decode).

use std::time::Instant;

use crate::bench::decode::ids;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use tritter_kernels::cuda::{CudaSlice, DevTernary, Gpu, GpuKvKind};
use tritter_kernels::gpu_ref::{g2_k_pad, G2Matrix};
use tritter_model::gpu::{GpuModel, GpuOptions};
use tritter_model::plan_gpu::{gpu_memory, GpuPlanOptions};
use tritter_model::random::RandomSource;
use tritter_model::{Config, TensorKvCache, Transformer};

/// The 2B4T projection shapes (rows, columns): the three shapes of the CPU report, q|k|v and
/// gate|up stacked as decode runs them, and one large matrix.
pub(crate) const SHAPES: [(&str, usize, usize); 6] = [
    ("2560x2560", 2560, 2560),
    ("6912x2560", 6912, 2560),
    ("2560x6912", 2560, 6912),
    ("qkv 3840x2560", 3840, 2560),
    ("gate_up 13824x2560", 13824, 2560),
    // Not a 2B4T projection: a matrix large enough (82 MB) that launch and latency stop
    // dominating, to show the kernel's streaming rate.
    ("large 128256x2560", 128_256, 2560),
];

/// Bytes the rotated weight copies should span (several times an H100/H200 L2 of 50–60 MB).
pub(crate) const ROTATE_BYTES: usize = 512 << 20;

pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// A random ternary matrix in the G2 layout (codes 0..=2, padding = 1), built directly.
pub(crate) fn random_g2(n: usize, k: usize, seed: u64) -> G2Matrix {
    let k_pad = g2_k_pad(k);
    let kw = k_pad / 16;
    let mut r = xorshift(seed);
    let mut words = vec![0u32; n * kw];
    for row in words.chunks_mut(kw) {
        for (wi, w) in row.iter_mut().enumerate() {
            let mut v = 0u32;
            for c in 0..16 {
                let col = wi * 16 + c;
                let code = if col < k { (r() % 3) as u32 } else { 1 };
                v |= code << (8 * (c % 4) + 2 * (c / 4));
            }
            *w = v;
        }
    }
    G2Matrix {
        n,
        k,
        k_pad,
        words,
        scales: vec![0.9; n],
    }
}

/// Device copy bandwidth in GB/s, read + write counted (1 GiB buffer, median of 10).
pub(crate) fn copy_gbps(g: &Gpu) -> Result<f64> {
    let n = (1usize << 30) / 4;
    let src = g.zeros::<f32>(n)?;
    let mut dst = g.zeros::<f32>(n)?;
    let ms = g.time_ms(2, 10, || g.copy(&src, 0, &mut dst, 0, n))?;
    Ok(2.0 * (n * 4) as f64 / (ms * 1e-3) / 1e9)
}

/// Median seconds per call of `f` on a candle device (synchronised around `reps` calls).
fn candle_time(dev: &Device, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    dev.synchronize()?;
    let mut v = vec![];
    for _ in 0..5 {
        let t0 = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        dev.synchronize()?;
        v.push(t0.elapsed().as_secs_f64() / reps as f64);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// Copies of one random `n × k` ternary matrix spanning [`ROTATE_BYTES`] (4 to 400 of them),
/// and the bytes of one.
pub(crate) fn rotated_copies(
    g: &Gpu,
    n: usize,
    k: usize,
    seed: u64,
) -> Result<(Vec<DevTernary>, usize)> {
    let m = random_g2(n, k, seed);
    let bytes = m.words.len() * 4 + m.scales.len() * 4;
    let copies = ROTATE_BYTES.div_ceil(bytes).clamp(4, 400);
    let ws = (0..copies)
        .map(|_| g.upload_ternary(&m))
        .collect::<Result<_, _>>()?;
    Ok((ws, bytes))
}

/// `m` rows of `k` activations uniform in [-1, 1] (fixed seed).
pub(crate) fn rand_x(k: usize, m: usize) -> Vec<f32> {
    let mut r = xorshift(7);
    (0..k * m)
        .map(|_| (r() % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn gemv_rows(g: &Gpu, dev: &Device, copy: f64) -> Result<Vec<Value>> {
    let mut rows = vec![];
    for (i, &(name, n, k)) in SHAPES.iter().enumerate() {
        let (ws, bytes_w) = rotated_copies(g, n, k, 100 + i as u64)?;
        let copies = ws.len();
        let dx = g.upload(&rand_x(k, 512))?;
        let act1 = g.act_buf(k, 1)?;
        let out = g.zeros::<f32>(n * 512)?;
        g.act_quant(&dx, 0, 1, &act1)?;
        let ms = g.time_ms(2, 10, || {
            for w in &ws {
                g.ternary(w, &act1, 1, &out, 0)?;
            }
            Ok(())
        })? / copies as f64;
        let bytes = bytes_w + g2_k_pad(k) + 4 * n;
        let gbps = bytes as f64 / (ms * 1e-3) / 1e9;
        // The same loop replayed as a CUDA graph (no CPU launch cost between kernels), as the
        // decode step runs.
        let ms_graph = graph_ms(g, || {
            for w in &ws {
                g.ternary(w, &act1, 1, &out, 0)?;
            }
            Ok(())
        })?
        .map(|t| t / copies as f64);
        let gbps_graph = ms_graph.map(|t| bytes as f64 / (t * 1e-3) / 1e9);
        // Activation quantisation + GEMV, as one BitLinear of decode.
        let ms_bl = g.time_ms(2, 10, || {
            for w in &ws {
                g.bitlinear(w, &dx, 0, 1, &act1, &out, 0)?;
            }
            Ok(())
        })? / copies as f64;
        // Prefill GEMM: 512 tokens.
        let act512 = g.act_buf(k, 512)?;
        g.act_quant(&dx, 0, 512, &act512)?;
        let ms_gemm = g.time_ms(2, 10, || g.ternary(&ws[0], &act512, 512, &out, 0))?;
        let tops = 2.0 * 512.0 * (n * k) as f64 / (ms_gemm * 1e-3) / 1e12;
        drop(ws);
        // candle bf16 dense (cuBLAS) on the same shapes, weights rotated likewise.
        let dense_copies = ROTATE_BYTES.div_ceil(2 * n * k).clamp(2, 64);
        let wd: Vec<Tensor> = (0..dense_copies)
            .map(|_| Tensor::randn(0f32, 0.02, (n, k), dev).and_then(|t| t.to_dtype(DType::BF16)))
            .collect::<Result<_, _>>()?;
        let x1 = Tensor::randn(0f32, 1.0, (1, k), dev)?.to_dtype(DType::BF16)?;
        let x512 = Tensor::randn(0f32, 1.0, (512, k), dev)?.to_dtype(DType::BF16)?;
        let wt: Vec<Tensor> = wd.iter().map(|w| w.t()).collect::<Result<_, _>>()?;
        let s_dense = candle_time(dev, 5, || {
            for w in &wt {
                x1.matmul(w)?;
            }
            Ok(())
        })? / dense_copies as f64;
        let s_dense_gemm = candle_time(dev, 5, || {
            x512.matmul(&wt[0])?;
            Ok(())
        })?;
        let dense_tflops = 2.0 * 512.0 * (n * k) as f64 / s_dense_gemm / 1e12;
        rows.push(json!({
            "shape": name,
            "n": n,
            "k": k,
            "gemv_us": ms * 1e3,
            "gemv_gbps": gbps,
            "gemv_fraction_of_copy": gbps / copy,
            "gemv_graph_us": ms_graph.map(|t| t * 1e3),
            "gemv_graph_gbps": gbps_graph,
            "gemv_graph_fraction_of_copy": gbps_graph.map(|b| b / copy),
            "bitlinear_us": ms_bl * 1e3,
            "weight_copies_rotated": copies,
            "candle_bf16_gemv_us": s_dense * 1e6,
            "gemv_speedup_vs_candle_bf16": s_dense * 1e6 / (ms * 1e3),
            "gemm512_us": ms_gemm * 1e3,
            "gemm512_tops": tops,
            "candle_bf16_gemm512_us": s_dense_gemm * 1e6,
            "candle_bf16_gemm512_tflops": dense_tflops,
            "gemm_speedup_vs_candle_bf16": s_dense_gemm * 1e6 / (ms_gemm * 1e3),
        }));
    }
    Ok(rows)
}

pub(crate) fn profile_json(p: &[(&'static str, f64, usize)]) -> Value {
    let total: f64 = p.iter().map(|o| o.1).sum();
    json!({
        "total_ms": total,
        "ops": p
            .iter()
            .map(|(op, ms, n)| json!({"op": op, "ms": ms, "launch_groups": n, "share": ms / total}))
            .collect::<Vec<_>>(),
    })
}

/// Median milliseconds of one replay of `f` captured as a CUDA graph (None if capture fails).
pub(crate) fn graph_ms(
    g: &Gpu,
    mut f: impl FnMut() -> Result<(), tritter_kernels::KernelError>,
) -> Result<Option<f64>> {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    let stream = g.stream().clone();
    g.sync()?;
    if stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .is_err()
    {
        return Ok(None);
    }
    let ran = f();
    let graph = stream
        .end_capture(CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH);
    ran?;
    let Ok(Some(graph)) = graph else {
        return Ok(None);
    };
    let ms = g.time_ms(2, 10, || {
        graph
            .launch()
            .map_err(|e| tritter_kernels::KernelError::Cuda(e.to_string()))
    })?;
    Ok(Some(ms))
}

pub(crate) fn device_info(g: &Gpu) -> Result<Value> {
    let (free, total) = g.mem_info()?;
    Ok(
        json!({"name": g.name(), "ordinal": g.ordinal(), "memory_total": total, "memory_free": free}),
    )
}

/// Kernel report: `{device, copy_gbps, gemv: [...]}`.
pub fn kernels_report(ordinal: usize) -> Result<Value> {
    let g = Gpu::new(ordinal)?;
    let dev = Device::new_cuda(ordinal)?;
    let copy = copy_gbps(&g)?;
    let gemv = gemv_rows(&g, &dev, copy)?;
    Ok(json!({
        "device": device_info(&g)?,
        "copy_gbps": copy,
        "gemv": gemv,
    }))
}

/// Prefill and decode tokens/s of the GPU model (best of `reps`).
pub(crate) fn gpu_speed(
    m: &mut GpuModel,
    prompt: usize,
    decode: usize,
    reps: usize,
) -> Result<(f64, f64)> {
    let v = m.config().vocab_size;
    let (mut pre, mut dec) = (0f64, 0f64);
    for r in 0..reps {
        m.reset()?;
        let p = ids(prompt, v, r);
        let t0 = Instant::now();
        let mut logits = m.forward(&p, false)?;
        pre = pre.max(prompt as f64 / t0.elapsed().as_secs_f64());
        // One step outside the timing (graph capture on the first).
        let mut next = argmax(&logits);
        logits = m.forward(&[next], false)?;
        let t1 = Instant::now();
        for _ in 0..decode {
            next = argmax(&logits);
            logits = m.forward(&[next], false)?;
        }
        dec = dec.max(decode as f64 / t1.elapsed().as_secs_f64());
    }
    Ok((pre, dec))
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

/// Prefill and decode tokens/s of candle's bf16 dense path (TensorKvCache, f32 argmax on host).
fn candle_speed(m: &Transformer, dev: &Device, prompt: usize, decode: usize) -> Result<(f64, f64)> {
    let cfg = m.config();
    let run = |cache: &mut TensorKvCache, ids: &[u32]| -> Result<Vec<f32>> {
        let t = Tensor::from_slice(ids, (1, ids.len()), dev)?;
        let h = m.hidden_tensor_cache(&m.embed(&t)?, cache)?;
        let last = h.narrow(1, ids.len() - 1, 1)?;
        Ok(m.logits_from_hidden(&last)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let (mut pre, mut dec) = (0f64, 0f64);
    for r in 0..2 {
        let mut cache = TensorKvCache::new(cfg.num_layers);
        let p = ids(prompt, cfg.vocab_size, r);
        dev.synchronize()?;
        let t0 = Instant::now();
        let mut logits = run(&mut cache, &p)?;
        pre = pre.max(prompt as f64 / t0.elapsed().as_secs_f64());
        let t1 = Instant::now();
        for _ in 0..decode {
            let next = argmax(&logits);
            logits = run(&mut cache, &[next])?;
        }
        dec = dec.max(decode as f64 / t1.elapsed().as_secs_f64());
    }
    Ok((pre, dec))
}

/// Decode report: `{device, copy_gbps, decode: [...], candle_bf16: {...}, memory: [...]}`.
pub fn decode_report(ordinal: usize) -> Result<Value> {
    let g = Gpu::new(ordinal)?;
    let copy = copy_gbps(&g)?;
    let info = device_info(&g)?;
    drop(g);
    let cfg = Config::bitnet_b158_2b4t();
    let t0 = Instant::now();
    let mut src = RandomSource::new(7, &Device::Cpu);
    let model = Transformer::load(&cfg, &mut src, &Device::Cpu)
        .context("building the random 2B4T-shaped model")?;
    let build_s = t0.elapsed().as_secs_f64();
    let (prompt, decode) = (512usize, 128usize);
    let mut rows = vec![];
    let mut memory = vec![];
    for (kv, window) in [
        (GpuKvKind::Int4, 0usize),
        (GpuKvKind::F16, 0),
        (GpuKvKind::Int4, 4096),
    ] {
        let gpu = Gpu::new(ordinal)?;
        let (free0, _) = gpu.mem_info()?;
        let opts = GpuOptions {
            kv,
            window,
            sinks: if window > 0 { 4 } else { 0 },
            max_chunk: 512,
            max_context: cfg.max_position_embeddings,
            head_f16: true,
            ..GpuOptions::reference(&cfg)
        };
        let t1 = Instant::now();
        let mut m = GpuModel::with_gpu(&model, opts.clone(), gpu)?;
        let upload_s = t1.elapsed().as_secs_f64();
        let (free1, _) = m.gpu().mem_info()?;
        let (wbytes, kvbytes) = m.device_bytes();
        let (pre, dec) = gpu_speed(&mut m, prompt, decode, 3)?;
        let graph = m.uses_graph();
        let graph_ms = m.graph_step_ms(20)?;
        // On the first configuration: where a step's GPU time goes.
        let profile = if kv == GpuKvKind::Int4 && window == 0 {
            profile_json(&m.profile_step(ids(1, cfg.vocab_size, 9)[0])?)
        } else {
            Value::Null
        };
        // KV bytes read per decoded token at the mean decode length.
        let per_head = kv.bytes_per_head(cfg.head_dim) * cfg.num_kv_heads * cfg.num_layers;
        let held = (prompt + decode / 2).min(if window > 0 { window } else { usize::MAX });
        let bytes_token = wbytes + per_head * held;
        let bound = copy * 1e9 / bytes_token as f64;
        let planned = gpu_memory(&cfg, &opts_plan(&opts));
        memory.push(json!({
            "kv": format!("{kv:?}"),
            "window": window,
            "measured_bytes": free0.saturating_sub(free1),
            "planned_bytes": planned.total,
            "planned": planned,
            "ratio_measured_to_planned": free0.saturating_sub(free1) as f64 / planned.total as f64,
        }));
        let eager = if kv == GpuKvKind::Int4 && window == 0 {
            let mut o2 = opts.clone();
            o2.graphs = false;
            drop(m);
            let mut me = GpuModel::new(&model, o2, ordinal)?;
            Some(gpu_speed(&mut me, prompt, decode / 2, 1)?.1)
        } else {
            None
        };
        rows.push(json!({
            "model": "bitnet-b1.58-2b4t (random)",
            "kv": format!("{kv:?}"),
            "window": window,
            "head": "f16",
            "tokens_per_s": dec,
            "eager_tokens_per_s": eager,
            "graph_replay": graph,
            "graph_step_gpu_ms": graph_ms,
            "profile": profile,
            "prefill_tokens_per_s": pre,
            "bound_tokens_per_s": bound,
            "ratio_to_bound": dec / bound,
            "bytes_per_token": bytes_token,
            "weight_bytes_device": wbytes,
            "kv_bytes_device": kvbytes,
            "upload_s": upload_s,
            "prompt_tokens": prompt,
            "decode_tokens": decode,
        }));
    }
    drop(model);
    let dev = Device::new_cuda(ordinal)?;
    let t2 = Instant::now();
    let dense = tritter_model::dense_random(&cfg, 7, DType::BF16, &dev)?;
    dev.synchronize()?;
    let dense_build = t2.elapsed().as_secs_f64();
    let (cpre, cdec) = candle_speed(&dense, &dev, prompt, 32)?;
    let best = rows.first().map(|r| {
        (
            r["tokens_per_s"].as_f64(),
            r["prefill_tokens_per_s"].as_f64(),
        )
    });
    let (tdec, tpre) = best.unwrap_or((None, None));
    Ok(json!({
        "device": info,
        "copy_gbps": copy,
        "build_s": build_s,
        "decode": rows,
        "candle_bf16": {
            "tokens_per_s": cdec,
            "prefill_tokens_per_s": cpre,
            "build_s": dense_build,
            "decode_tokens": 32,
            "prompt_tokens": prompt,
        },
        "decode_speedup_vs_candle_bf16": tdec.map(|t| t / cdec),
        "prefill_speedup_vs_candle_bf16": tpre.map(|t| t / cpre),
        "memory": memory,
    }))
}

fn opts_plan(o: &GpuOptions) -> GpuPlanOptions {
    GpuPlanOptions {
        kv: o.kv,
        window: o.window,
        chunk: o.max_chunk,
        context: o.max_context,
        head_f16: o.head_f16,
    }
}

/// Inputs of the attention benchmarks: 2B4T heads (20 query, 5 KV, d 128), one chunk of 512
/// keys/values stored repeatedly, one query, and the position buffer.
pub(crate) struct AttnInputs {
    pub h: usize,
    pub hkv: usize,
    pub d: usize,
    pub chunk: usize,
    pub k: CudaSlice<f32>,
    pub v: CudaSlice<f32>,
    pub q: CudaSlice<f32>,
    pub out: CudaSlice<f32>,
    pub base: CudaSlice<i32>,
}

pub(crate) fn attn_inputs(g: &Gpu) -> Result<AttnInputs> {
    let (h, hkv, d, chunk) = (20usize, 5usize, 128usize, 512usize);
    let mut r = xorshift(3);
    let mut rnd =
        |n: usize| -> Vec<f32> { (0..n).map(|_| (r() % 2001) as f32 / 1000.0 - 1.0).collect() };
    Ok(AttnInputs {
        h,
        hkv,
        d,
        chunk,
        k: g.upload(&rnd(chunk * hkv * d))?,
        v: g.upload(&rnd(chunk * hkv * d))?,
        q: g.upload(&rnd(h * d))?,
        out: g.zeros::<f32>(h * d)?,
        base: g.upload(&[0i32])?,
    })
}

/// Attention report: decode attention µs per layer step for 2B4T heads (20 query, 5 KV, d 128).
pub fn attention_report(ordinal: usize) -> Result<Value> {
    let g = Gpu::new(ordinal)?;
    let AttnInputs {
        h,
        hkv,
        d,
        chunk,
        k,
        v,
        q,
        out,
        mut base,
    } = attn_inputs(&g)?;
    let mut rows = vec![];
    for kind in [GpuKvKind::F16, GpuKvKind::Int4] {
        for (window, sinks) in [(4096usize, 4usize), (0, 0)] {
            for ctx in [4096usize, 65536] {
                let cap = if window > 0 { window + chunk } else { ctx + 1 };
                let kv = g.kv_cache(kind, cap, hkv, d, window, sinks, 500_000.0)?;
                let s = g.attn_scratch(h, cap, d)?;
                let mut p = 0;
                while p < ctx {
                    let t = chunk.min(ctx - p);
                    g.write(&[p as i32], &mut base)?;
                    g.kv_store(&kv, &k, &v, t, &base)?;
                    p += t;
                }
                g.write(&[ctx as i32], &mut base)?;
                g.kv_store(&kv, &k, &v, 1, &base)?;
                let scale = 1.0 / (d as f32).sqrt();
                let ms = g.time_ms(5, 50, || g.attention(&q, 1, h, &kv, &base, scale, &s, &out))?;
                let ms_graph = graph_ms(&g, || {
                    for _ in 0..30 {
                        g.attention(&q, 1, h, &kv, &base, scale, &s, &out)?;
                    }
                    Ok(())
                })?
                .map(|t| t / 30.0);
                rows.push(json!({
                    "kv": format!("{kind:?}"),
                    "window": window,
                    "sinks": sinks,
                    "context": ctx,
                    "us_per_step": ms * 1e3,
                    "graph_us_per_step": ms_graph.map(|t| t * 1e3),
                    "cache_bytes": kv.bytes(),
                    "bytes_per_token_per_layer": kind.bytes_per_head(d) * hkv,
                }));
            }
        }
    }
    let find = |kind: &str, w: usize, c: usize| {
        rows.iter()
            .find(|r| r["kv"] == kind && r["window"] == w && r["context"] == c)
            .and_then(|r| r["us_per_step"].as_f64())
    };
    let ratio = |kind: &str, w: usize| match (find(kind, w, 65536), find(kind, w, 4096)) {
        (Some(a), Some(b)) => Some(a / b),
        _ => None,
    };
    Ok(json!({
        "device": device_info(&g)?,
        "heads": h, "kv_heads": hkv, "head_dim": d,
        "attention": rows,
        "window4k_64k_over_4k_f16": ratio("F16", 4096),
        "window4k_64k_over_4k_int4": ratio("Int4", 4096),
        "full_64k_over_4k_int4": ratio("Int4", 0),
        "int4_bytes_over_f16": GpuKvKind::Int4.bytes_per_head(d) as f64
            / GpuKvKind::F16.bytes_per_head(d) as f64,
    }))
}
