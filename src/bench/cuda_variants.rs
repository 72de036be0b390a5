//! `tritter bench variants --device cuda` (feature `cuda`): each speed variant of the CUDA path
//! (`tritter_kernels::cuda::Tuning`, the fused residual add) against the plain path
//! (`Tuning::plain`, every variant off), every ratio within one process. Printed as JSON lines,
//! one per measurement as it completes, so a variant that fails on a GPU leaves the lines
//! before it; the order runs from the least to the most intrusive change:
//! - `gemv`: the decode GEMV at the 2B4T shapes, graph-replayed (weights rotated past the L2),
//!   plain vs register GEMV, with and without programmatic dependent launch;
//! - `gemm512`: the prefill GEMM (512 tokens), dp4a vs int8 tensor cores;
//! - `attention`: decode attention per layer, plain vs grouped-query blocks;
//! - `decode`: the 2B4T-shaped random model (INT4 cache, f16 head): tokens/s of the plain path,
//!   of each variant alone, of the default set (`Tuning::default` + fused residual add) and of
//!   all together, with a per-operation profile of one step each.

use anyhow::Result;
use serde_json::{json, Value};
use tritter_kernels::cuda::{Gpu, GpuKvKind, Tuning};
use tritter_kernels::gpu_ref::g2_k_pad;
use tritter_model::gpu::{GpuModel, GpuOptions};
use tritter_model::random::RandomSource;
use tritter_model::{Config, Transformer};

use crate::bench::cuda::{
    attn_inputs, copy_gbps, device_info, gpu_speed, graph_ms, profile_json, rand_x, random_g2,
    rotated_copies, AttnInputs, SHAPES,
};
use crate::bench::decode::ids;

/// The GEMV variants measured besides the plain one (shared-memory staging, plain launches).
fn gemv_variants() -> [(&'static str, Tuning); 3] {
    let regs = Tuning {
        gemv_regs: true,
        ..Tuning::plain()
    };
    let pdl = Tuning {
        pdl: true,
        ..Tuning::plain()
    };
    [
        ("regs", regs),
        ("smem_pdl", pdl),
        ("regs_pdl", Tuning { pdl: true, ..regs }),
    ]
}

/// The decode variants: each speed option alone (programmatic dependent launch last), then
/// all together. `(label, tuning, fuse_residual)`.
fn decode_variants() -> Vec<(&'static str, Tuning, bool)> {
    let d = Tuning::plain();
    vec![
        (
            "attn_skip_empty",
            Tuning {
                attn_skip_empty: true,
                ..d
            },
            false,
        ),
        ("fuse_residual", d, true),
        (
            "gemv_regs",
            Tuning {
                gemv_regs: true,
                ..d
            },
            false,
        ),
        (
            "gemm_mma",
            Tuning {
                gemm_mma: true,
                ..d
            },
            false,
        ),
        (
            "attn_group",
            Tuning {
                attn_group: true,
                ..d
            },
            false,
        ),
        ("pdl", Tuning { pdl: true, ..d }, false),
        ("default", Tuning::default(), true),
        (
            "all_but_pdl",
            Tuning {
                pdl: false,
                ..Tuning::all()
            },
            true,
        ),
        ("all", Tuning::all(), true),
    ]
}

fn gemv_lines(g: &mut Gpu, copy: f64, emit: &mut dyn FnMut(Value) -> Result<()>) -> Result<()> {
    for (i, &(name, n, k)) in SHAPES.iter().enumerate() {
        let (ws, bytes_w) = rotated_copies(g, n, k, 100 + i as u64)?;
        let copies = ws.len();
        let dx = g.upload(&rand_x(k, 1))?;
        let act = g.act_buf(k, 1)?;
        let out = g.zeros::<f32>(n)?;
        g.act_quant(&dx, 0, 1, &act)?;
        let bytes = (bytes_w + g2_k_pad(k) + 4 * n) as f64;
        let measure = |g: &Gpu| -> Result<Option<f64>> {
            Ok(graph_ms(g, || {
                for w in &ws {
                    g.ternary(w, &act, 1, &out, 0)?;
                }
                Ok(())
            })?
            .map(|t| t / copies as f64))
        };
        g.set_tuning(Tuning::plain())?;
        let base = measure(g)?;
        let frac = |ms: f64| bytes / (ms * 1e-3) / 1e9 / copy;
        emit(json!({
            "section": "gemv", "shape": name, "variant": "plain",
            "graph_us": base.map(|t| t * 1e3), "fraction_of_copy": base.map(frac),
        }))?;
        for (label, tuning) in gemv_variants() {
            if let Err(e) = g.set_tuning(tuning) {
                emit(
                    json!({"section": "gemv", "shape": name, "variant": label, "error": e.to_string()}),
                )?;
                continue;
            }
            let t = measure(g)?;
            emit(json!({
                "section": "gemv", "shape": name, "variant": label,
                "graph_us": t.map(|t| t * 1e3), "fraction_of_copy": t.map(frac),
                "speedup_vs_plain": base.zip(t).map(|(b, t)| b / t),
            }))?;
        }
        g.set_tuning(Tuning::plain())?;
    }
    Ok(())
}

fn gemm_lines(g: &mut Gpu, emit: &mut dyn FnMut(Value) -> Result<()>) -> Result<()> {
    let mma = Tuning {
        gemm_mma: true,
        ..Tuning::plain()
    };
    for (i, &(name, n, k)) in SHAPES.iter().take(5).enumerate() {
        let w = g.upload_ternary(&random_g2(n, k, 200 + i as u64))?;
        let dx = g.upload(&rand_x(k, 512))?;
        let act = g.act_buf(k, 512)?;
        let out = g.zeros::<f32>(n * 512)?;
        g.act_quant(&dx, 0, 512, &act)?;
        let ops = 2.0 * 512.0 * (n * k) as f64;
        g.set_tuning(Tuning::plain())?;
        let dp4a = g.time_ms(2, 10, || g.ternary(&w, &act, 512, &out, 0))?;
        let line = match g.set_tuning(mma) {
            Ok(()) => {
                let t = g.time_ms(2, 10, || g.ternary(&w, &act, 512, &out, 0))?;
                json!({
                    "section": "gemm512", "shape": name,
                    "dp4a_us": dp4a * 1e3, "dp4a_tops": ops / (dp4a * 1e-3) / 1e12,
                    "mma_us": t * 1e3, "mma_tops": ops / (t * 1e-3) / 1e12,
                    "speedup": dp4a / t,
                })
            }
            Err(e) => json!({"section": "gemm512", "shape": name, "error": e.to_string()}),
        };
        g.set_tuning(Tuning::plain())?;
        emit(line)?;
    }
    Ok(())
}

fn attention_lines(g: &mut Gpu, emit: &mut dyn FnMut(Value) -> Result<()>) -> Result<()> {
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
    } = attn_inputs(g)?;
    let scale = 1.0 / (d as f32).sqrt();
    let grouped = Tuning {
        attn_group: true,
        ..Tuning::plain()
    };
    for kind in [GpuKvKind::F16, GpuKvKind::Int4] {
        for ctx in [4096usize, 65536] {
            let cap = ctx + 1;
            let kv = g.kv_cache(kind, cap, hkv, d, 0, 0, 500_000.0)?;
            let s = g.attn_scratch(h, cap, d)?;
            let mut p = 0;
            while p <= ctx {
                let t = chunk.min(ctx + 1 - p);
                g.write(&[p as i32], &mut base)?;
                g.kv_store(&kv, &k, &v, t, &base)?;
                p += t;
            }
            g.write(&[ctx as i32], &mut base)?;
            g.set_tuning(Tuning::plain())?;
            let t0 = g.time_ms(5, 50, || g.attention(&q, 1, h, &kv, &base, scale, &s, &out))?;
            g.set_tuning(grouped)?;
            let t1 = g.time_ms(5, 50, || g.attention(&q, 1, h, &kv, &base, scale, &s, &out))?;
            g.set_tuning(Tuning::plain())?;
            let bytes = (kind.bytes_per_head(d) * hkv * (ctx + 1)) as f64;
            emit(json!({
                "section": "attention", "kv": format!("{kind:?}"), "context": ctx,
                "plain_us": t0 * 1e3, "grouped_us": t1 * 1e3, "speedup": t0 / t1,
                "grouped_cache_gbps": bytes / (t1 * 1e-3) / 1e9,
            }))?;
        }
    }
    Ok(())
}

fn decode_lines(ordinal: usize, emit: &mut dyn FnMut(Value) -> Result<()>) -> Result<()> {
    let cfg = Config::bitnet_b158_2b4t();
    let mut src = RandomSource::new(7, &candle_core::Device::Cpu);
    let model = Transformer::load(&cfg, &mut src, &candle_core::Device::Cpu)?;
    let (prompt, decode) = (512usize, 128usize);
    let mut m = GpuModel::new(&model, GpuOptions::fast(&cfg).plain(), ordinal)?;
    drop(model);
    let last = ids(1, cfg.vocab_size, 9)[0];
    let (pre, dec) = gpu_speed(&mut m, prompt, decode, 3)?;
    emit(json!({
        "section": "decode", "variant": "plain", "tokens_per_s": dec,
        "prefill_tokens_per_s": pre, "graph_step_gpu_ms": m.graph_step_ms(20)?,
        "profile": profile_json(&m.profile_step(last)?),
        "prompt_tokens": prompt, "decode_tokens": decode,
    }))?;
    for (label, tuning, fuse) in decode_variants() {
        // The default set is what a `Gpu` runs: trimmed to the device.
        let tuning = if label == "default" {
            m.gpu().runnable(tuning)?
        } else {
            tuning
        };
        if let Err(e) = m.retune(tuning, fuse) {
            emit(json!({"section": "decode", "variant": label, "error": e.to_string()}))?;
            continue;
        }
        let (vpre, vdec) = gpu_speed(&mut m, prompt, decode, 3)?;
        emit(json!({
            "section": "decode", "variant": label, "tokens_per_s": vdec,
            "speedup_vs_plain": vdec / dec, "prefill_tokens_per_s": vpre,
            "prefill_speedup_vs_plain": vpre / pre,
            "graph_step_gpu_ms": m.graph_step_ms(20)?,
            "profile": profile_json(&m.profile_step(last)?),
        }))?;
    }
    Ok(())
}

/// Runs every variant measurement, passing each result line to `emit` as it completes.
pub fn variants_report(ordinal: usize, emit: &mut dyn FnMut(Value) -> Result<()>) -> Result<()> {
    let mut g = Gpu::new(ordinal)?;
    let copy = copy_gbps(&g)?;
    emit(json!({"section": "device", "device": device_info(&g)?, "copy_gbps": copy}))?;
    gemv_lines(&mut g, copy, emit)?;
    gemm_lines(&mut g, emit)?;
    attention_lines(&mut g, emit)?;
    drop(g);
    decode_lines(ordinal, emit)
}
