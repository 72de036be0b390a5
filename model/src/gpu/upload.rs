//! Putting a loaded [`Transformer`] on the GPU: each layer's BitLinears (read through
//! [`LayerView`]) packed into the G2 layout with q|k|v and gate|up stacked, its norms, the final
//! norm and the LM head (f16 or f32); then the KV caches and the scratch of one pass. The
//! embedding stays on the host (`plan_gpu.rs` counts the same parts).

use super::{check_supported, kerr, GpuModel, GpuOptions, Layer, Scratch};
use crate::bitlinear::{BitLinear, BitWeights, PackedLinear};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::layer::LayerView;
use crate::norm::{QkNorm, RmsNorm};
use crate::transformer::Transformer;
use candle_core::DType;
use tritter_kernels::cuda::{CudaSlice, DevKv, DevTernary, Gpu, Tuning};
use tritter_kernels::gpu_ref::G2Matrix;

/// The packed form of a BitLinear the GPU kernels take (latent weights are quantised here).
fn packed(l: &BitLinear, what: &str) -> Result<PackedLinear> {
    if l.norm().is_some() {
        return Err(Error::Invalid(format!(
            "{what}: BitLinear input norms (use_rms_norm) are not supported on CUDA"
        )));
    }
    match l.weights() {
        BitWeights::Packed(p) => Ok(p.clone()),
        BitWeights::Latent(w) => PackedLinear::from_latent(w),
        BitWeights::Dense(_) => Err(Error::Invalid(format!(
            "{what}: full-precision (dense) BitLinears are not supported on CUDA"
        ))),
    }
}

/// BitLinears stacked along their rows in the G2 layout (one quantisation of the input, one
/// GEMV for all of them).
fn stacked(parts: &[&PackedLinear]) -> Result<G2Matrix> {
    let parts: Vec<_> = parts
        .iter()
        .map(|p| (p.matrix(), p.weight_scale()))
        .collect();
    G2Matrix::stack(&parts).map_err(kerr)
}

fn upload_ternary(gpu: &Gpu, m: &G2Matrix) -> Result<DevTernary> {
    gpu.upload_ternary(m).map_err(kerr)
}

fn upload_norm(gpu: &Gpu, n: &RmsNorm) -> Result<CudaSlice<f32>> {
    gpu.upload(&n.weight_f32()?).map_err(kerr)
}

fn upload_opt(gpu: &Gpu, n: Option<&RmsNorm>) -> Result<Option<CudaSlice<f32>>> {
    n.map(|n| upload_norm(gpu, n)).transpose()
}

/// A QK-Norm's shared RMSNorm weight; Chameleon's per-head LayerNorm has no kernel here.
fn upload_qk(gpu: &Gpu, n: Option<&QkNorm>, what: &str) -> Result<Option<CudaSlice<f32>>> {
    match n {
        None => Ok(None),
        Some(QkNorm::Rms(n)) => upload_norm(gpu, n).map(Some),
        Some(QkNorm::Layer(_)) => Err(Error::Invalid(format!(
            "{what}: the per-head LayerNorm QK-Norm (Chameleon) is not supported on CUDA"
        ))),
    }
}

/// Layer `i`: the projections packed and stacked, then uploaded with the norms.
fn upload_layer(gpu: &Gpu, v: &LayerView<'_>, i: usize) -> Result<Layer> {
    let what = |n: &str| format!("layer {i} {n}");
    let (q, k, vp, o) = (
        packed(v.q_proj, &what("q_proj"))?,
        packed(v.k_proj, &what("k_proj"))?,
        packed(v.v_proj, &what("v_proj"))?,
        packed(v.o_proj, &what("o_proj"))?,
    );
    let qkv = stacked(&[&q, &k, &vp])?;
    let og = stacked(&[&o])?;
    let up = packed(v.up_proj, &what("up_proj"))?;
    let down = packed(v.down_proj, &what("down_proj"))?;
    let gu = match v.gate_proj {
        Some(g) => stacked(&[&packed(g, &what("gate_proj"))?, &up])?,
        None => stacked(&[&up])?,
    };
    let dg = stacked(&[&down])?;
    Ok(Layer {
        qkv: upload_ternary(gpu, &qkv)?,
        o: upload_ternary(gpu, &og)?,
        gu: upload_ternary(gpu, &gu)?,
        down: upload_ternary(gpu, &dg)?,
        gated: v.gate_proj.is_some(),
        norm1: upload_norm(gpu, v.input_norm)?,
        norm2: upload_norm(gpu, v.post_attention_norm)?,
        q_norm: upload_qk(gpu, v.q_norm, &what("q_norm"))?,
        k_norm: upload_qk(gpu, v.k_norm, &what("k_norm"))?,
        attn_sub: upload_opt(gpu, v.attn_sub_norm)?,
        mlp_sub: upload_opt(gpu, v.ffn_sub_norm)?,
    })
}

/// One KV cache per layer, `opts.capacity()` slots each.
fn kv_caches(gpu: &Gpu, cfg: &Config, opts: &GpuOptions, layers: usize) -> Result<Vec<DevKv>> {
    (0..layers)
        .map(|_| {
            gpu.kv_cache(
                opts.kv,
                opts.capacity(),
                cfg.num_kv_heads,
                cfg.head_dim,
                opts.window,
                opts.sinks,
                cfg.rope_theta as f32,
            )
            .map_err(kerr)
        })
        .collect()
}

/// The buffers of one pass of `opts.max_chunk` tokens.
fn scratch(gpu: &Gpu, cfg: &Config, opts: &GpuOptions, gated_all: bool) -> Result<Scratch> {
    let (c, h, hkv, d) = (
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
    );
    let f = cfg.intermediate_size;
    let t = opts.max_chunk;
    let (nq, nk) = (h * d, hkv * d);
    let gu_w = if gated_all { 2 * f } else { f };
    let z = |n: usize| gpu.zeros::<f32>(n).map_err(kerr);
    Ok(Scratch {
        x: z(t * c)?,
        h: z(t * c)?,
        qkv: z(t * (nq + 2 * nk))?,
        q: z(t * nq)?,
        k: z(t * nk)?,
        v: z(t * nk)?,
        att: z(t * nq)?,
        o: z(t * c.max(nq))?,
        gu: z(t * gu_w)?,
        hid: z(t * f)?,
        logits: z(t * cfg.vocab_size)?,
        act_c: gpu.act_buf(c, t).map_err(kerr)?,
        act_a: gpu.act_buf(nq, t).map_err(kerr)?,
        act_f: gpu.act_buf(f, t).map_err(kerr)?,
        attn: gpu.attn_scratch(t * h, opts.capacity(), d).map_err(kerr)?,
        base: gpu.zeros::<i32>(1).map_err(kerr)?,
    })
}

impl GpuModel {
    /// Uploads `model` to an opened GPU.
    pub fn with_gpu(model: &Transformer, mut opts: GpuOptions, mut gpu: Gpu) -> Result<Self> {
        check_supported(model.config())?;
        if opts.tuning == Tuning::default() {
            opts.tuning = gpu.runnable(opts.tuning).map_err(kerr)?;
        }
        gpu.set_tuning(opts.tuning).map_err(kerr)?;
        let cfg = model.config().clone();
        if opts.max_chunk == 0 {
            return Err(Error::Invalid("GPU max_chunk must be at least 1".into()));
        }
        // The layers, then the final norm and the head; the embedding stays on the host.
        let layers = model
            .layers("the GPU path")?
            .iter()
            .enumerate()
            .map(|(i, v)| upload_layer(&gpu, v, i))
            .collect::<Result<Vec<_>>>()?;
        let gated_all = layers.iter().all(|l| l.gated);
        let norm = upload_norm(&gpu, model.final_norm())?;
        let embed = model
            .embeddings()
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let head_w = model
            .head_weight()
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let head = gpu
            .upload_head(&head_w, cfg.vocab_size, cfg.hidden_size, opts.head_f16)
            .map_err(kerr)?;
        drop(head_w);
        // The sequence's caches and the scratch of one pass.
        let kv = kv_caches(&gpu, &cfg, &opts, layers.len())?;
        let s = scratch(&gpu, &cfg, &opts, gated_all)?;
        gpu.sync().map_err(kerr)?;
        Ok(Self {
            eps: cfg.rms_norm_eps as f32,
            cfg,
            opts,
            layers,
            norm,
            head,
            embed,
            kv,
            s,
            gpu,
            seen: 0,
            graph: None,
            graph_failed: false,
        })
    }
}
