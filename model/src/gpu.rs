//! The transformer's inference path on an NVIDIA GPU (feature `cuda`): the same layers as the
//! CPU inference path in `infer.rs` (BitLinears on Tritter's ternary W2A8 kernels, RMSNorm,
//! RoPE at absolute positions, attention over a GPU KV cache that can be f32/f16/INT4, roll a
//! sliding window and keep sinks), for one sequence. Must match `Transformer::forward_last`
//! within tolerance (tests: `model/tests/gpu.rs`, the golden fixtures' logits CPU vs CUDA).
//!
//! q/k/v projections are stacked into one ternary matrix (one quantisation, one GEMV), as are
//! gate/up. Single-token decode steps can be replayed as a captured CUDA graph (the
//! position lives in device memory), which removes the per-launch CPU cost.

use crate::bitlinear::{BitLinear, BitWeights, PackedLinear};
use crate::config::{Activation, Config, NormPlacement};
use crate::error::{Error, Result};
use crate::norm::RmsNorm;
use crate::transformer::Transformer;
use candle_core::DType;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;
use tritter_kernels::cuda::{
    ActBuf, AttnScratch, CudaSlice, DevHead, DevKv, DevTernary, Gpu, GpuKvKind, Tuning,
};
use tritter_kernels::gpu_ref::G2Matrix;
use tritter_kernels::KernelError;

fn kerr(e: KernelError) -> Error {
    Error::Kernel(e.to_string())
}

/// Options of a [`GpuModel`].
#[derive(Debug, Clone, PartialEq)]
pub struct GpuOptions {
    /// KV cache storage.
    pub kv: GpuKvKind,
    /// Rolling window in tokens, sinks included (0: keep every token up to `max_context`).
    pub window: usize,
    /// Attention sinks kept when the window rolls.
    pub sinks: usize,
    /// Most tokens run in one pass (longer inputs are split).
    pub max_chunk: usize,
    /// Context limit without a window.
    pub max_context: usize,
    /// LM head in f16 (else f32).
    pub head_f16: bool,
    /// Replay single-token steps as a CUDA graph.
    pub graphs: bool,
    /// Kernel variants (speed only; off by default, see [`Tuning`]).
    pub tuning: Tuning,
    /// Add the o and down projections to the residual stream in the GEMV/GEMM epilogue
    /// instead of a separate add (pre-norm and subln placements; the same values).
    pub fuse_residual: bool,
}

impl GpuOptions {
    /// Reference settings for `cfg` (f32 cache and head, the config's window and sinks): what
    /// the CPU inference path computes by default.
    pub fn reference(cfg: &Config) -> Self {
        let c = crate::infer::CacheOptions::from_config(cfg);
        Self {
            kv: GpuKvKind::F32,
            window: c.window,
            sinks: c.sinks,
            max_chunk: 512,
            max_context: cfg.max_position_embeddings,
            head_f16: false,
            graphs: true,
            tuning: Tuning::default(),
            fuse_residual: false,
        }
    }

    /// These options with every speed variant on (kernel [`Tuning::all`] and the fused
    /// residual add).
    pub fn tuned(self) -> Self {
        Self {
            tuning: Tuning::all(),
            fuse_residual: true,
            ..self
        }
    }

    /// Chat/benchmark settings: INT4 cache and f16 head.
    pub fn fast(cfg: &Config) -> Self {
        Self {
            kv: GpuKvKind::Int4,
            head_f16: true,
            ..Self::reference(cfg)
        }
    }

    /// Slots each layer's cache holds.
    pub fn capacity(&self) -> usize {
        if self.window > 0 {
            self.window + self.max_chunk
        } else {
            self.max_context
        }
    }
}

struct Layer {
    qkv: DevTernary,
    o: DevTernary,
    gu: DevTernary,
    down: DevTernary,
    gated: bool,
    norm1: CudaSlice<f32>,
    norm2: CudaSlice<f32>,
    q_norm: Option<CudaSlice<f32>>,
    k_norm: Option<CudaSlice<f32>>,
    attn_sub: Option<CudaSlice<f32>>,
    mlp_sub: Option<CudaSlice<f32>>,
}

struct Scratch {
    x: CudaSlice<f32>,
    h: CudaSlice<f32>,
    qkv: CudaSlice<f32>,
    q: CudaSlice<f32>,
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    att: CudaSlice<f32>,
    o: CudaSlice<f32>,
    gu: CudaSlice<f32>,
    hid: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    act_c: ActBuf,
    act_a: ActBuf,
    act_f: ActBuf,
    attn: AttnScratch,
    base: CudaSlice<i32>,
}

/// A model resident on one GPU with the KV cache of one sequence.
pub struct GpuModel {
    gpu: Gpu,
    cfg: Config,
    opts: GpuOptions,
    layers: Vec<Layer>,
    norm: CudaSlice<f32>,
    head: DevHead,
    embed: Vec<f32>,
    kv: Vec<DevKv>,
    s: Scratch,
    eps: f32,
    seen: usize,
    graph: Option<Graph>,
    graph_failed: bool,
}

/// A captured decode step.
struct Graph(CudaGraph);

// SAFETY: the graph is owned by one `GpuModel` and launched only through `&mut self`, so never
// from two threads at once; `CudaGraph::launch` binds the context to the calling thread first.
unsafe impl Send for Graph {}

fn norm_host(n: &RmsNorm) -> Result<Vec<f32>> {
    Ok(n.weight()
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

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

impl GpuModel {
    /// Uploads `model` to GPU `ordinal`.
    pub fn new(model: &Transformer, opts: GpuOptions, ordinal: usize) -> Result<Self> {
        let gpu = Gpu::new(ordinal).map_err(kerr)?;
        Self::with_gpu(model, opts, gpu)
    }

    /// Uploads `model` to an opened GPU.
    pub fn with_gpu(model: &Transformer, opts: GpuOptions, mut gpu: Gpu) -> Result<Self> {
        gpu.set_tuning(opts.tuning).map_err(kerr)?;
        let cfg = model.config().clone();
        let (c, h, hkv, d) = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        );
        if opts.max_chunk == 0 {
            return Err(Error::Invalid("GPU max_chunk must be at least 1".into()));
        }
        let f = cfg.intermediate_size;
        let up = |v: &[f32]| gpu.upload(v).map_err(kerr);
        let mut layers = Vec::with_capacity(model.blocks.len());
        let mut gated_all = true;
        for (i, b) in model.blocks.iter().enumerate() {
            let a = &b.attn;
            let what = |n: &str| format!("layer {i} {n}");
            let (q, k, v, o) = (
                packed(&a.q_proj, &what("q_proj"))?,
                packed(&a.k_proj, &what("k_proj"))?,
                packed(&a.v_proj, &what("v_proj"))?,
                packed(&a.o_proj, &what("o_proj"))?,
            );
            let qkv = G2Matrix::stack(&[
                (q.matrix(), q.weight_scale()),
                (k.matrix(), k.weight_scale()),
                (v.matrix(), v.weight_scale()),
            ])
            .map_err(kerr)?;
            let og = G2Matrix::stack(&[(o.matrix(), o.weight_scale())]).map_err(kerr)?;
            let upm = packed(&b.mlp.up, &what("up_proj"))?;
            let down = packed(&b.mlp.down, &what("down_proj"))?;
            let gu = match &b.mlp.gate {
                Some(g) => {
                    let gp = packed(g, &what("gate_proj"))?;
                    G2Matrix::stack(&[
                        (gp.matrix(), gp.weight_scale()),
                        (upm.matrix(), upm.weight_scale()),
                    ])
                }
                None => {
                    gated_all = false;
                    G2Matrix::stack(&[(upm.matrix(), upm.weight_scale())])
                }
            }
            .map_err(kerr)?;
            let dg = G2Matrix::stack(&[(down.matrix(), down.weight_scale())]).map_err(kerr)?;
            let opt = |n: &Option<RmsNorm>| -> Result<Option<CudaSlice<f32>>> {
                n.as_ref().map(|n| up(&norm_host(n)?)).transpose()
            };
            layers.push(Layer {
                qkv: gpu.upload_ternary(&qkv).map_err(kerr)?,
                o: gpu.upload_ternary(&og).map_err(kerr)?,
                gu: gpu.upload_ternary(&gu).map_err(kerr)?,
                down: gpu.upload_ternary(&dg).map_err(kerr)?,
                gated: b.mlp.gate.is_some(),
                norm1: up(&norm_host(&b.norm1)?)?,
                norm2: up(&norm_host(&b.norm2)?)?,
                q_norm: opt(&a.q_norm)?,
                k_norm: opt(&a.k_norm)?,
                attn_sub: opt(&a.sub_norm)?,
                mlp_sub: opt(&b.mlp.sub_norm)?,
            });
        }
        let norm = up(&norm_host(&model.norm)?)?;
        let embed = model
            .embed
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let head_w = match &model.lm_head {
            Some(w) => w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            None => embed.clone(),
        };
        let head = gpu
            .upload_head(&head_w, cfg.vocab_size, c, opts.head_f16)
            .map_err(kerr)?;
        drop(head_w);
        let cap = opts.capacity();
        let mut kv = Vec::with_capacity(layers.len());
        for _ in 0..layers.len() {
            kv.push(
                gpu.kv_cache(
                    opts.kv,
                    cap,
                    hkv,
                    d,
                    opts.window,
                    opts.sinks,
                    cfg.rope_theta as f32,
                )
                .map_err(kerr)?,
            );
        }
        let t = opts.max_chunk;
        let (nq, nk) = (h * d, hkv * d);
        let gu_w = if gated_all { 2 * f } else { f };
        let z = |n: usize| gpu.zeros::<f32>(n).map_err(kerr);
        let s = Scratch {
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
            attn: gpu.attn_scratch(t * h, cap, d).map_err(kerr)?,
            base: gpu.zeros::<i32>(1).map_err(kerr)?,
        };
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

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn options(&self) -> &GpuOptions {
        &self.opts
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Tokens appended since the last reset.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Whether single-token steps currently replay a captured graph.
    pub fn uses_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// GPU time of one replay of the captured decode step in milliseconds (CUDA events, median
    /// of `reps`; replays recompute the last step in place), if a graph was captured.
    pub fn graph_step_ms(&self, reps: usize) -> Result<Option<f64>> {
        let Some(graph) = &self.graph else {
            return Ok(None);
        };
        let ms = self
            .gpu
            .time_ms(2, reps, || {
                graph
                    .0
                    .launch()
                    .map_err(|e| KernelError::Cuda(e.to_string()))
            })
            .map_err(kerr)?;
        Ok(Some(ms))
    }

    /// Switches the speed variants (kernel tuning, fused residual add); a captured decode graph
    /// is dropped and captured again with the new kernels on the next step.
    pub fn retune(&mut self, tuning: Tuning, fuse_residual: bool) -> Result<()> {
        self.gpu.sync().map_err(kerr)?;
        self.gpu.set_tuning(tuning).map_err(kerr)?;
        self.opts.tuning = tuning;
        self.opts.fuse_residual = fuse_residual;
        self.graph = None;
        self.graph_failed = false;
        Ok(())
    }

    /// Forgets the sequence.
    pub fn reset(&mut self) -> Result<()> {
        for kv in &mut self.kv {
            self.gpu.kv_clear(kv).map_err(kerr)?;
        }
        self.seen = 0;
        Ok(())
    }

    /// Device bytes of (weights incl. head and norms, KV cache, scratch).
    pub fn device_bytes(&self) -> (usize, usize) {
        let w: usize = self
            .layers
            .iter()
            .map(|l| l.qkv.bytes() + l.o.bytes() + l.gu.bytes() + l.down.bytes())
            .sum::<usize>()
            + self.head.bytes();
        let kv: usize = self.kv.iter().map(DevKv::bytes).sum();
        (w, kv)
    }

    /// Appends `ids` and returns the logits of the last position (`all`: of every position,
    /// `[T][V]`).
    pub fn forward(&mut self, ids: &[u32], all: bool) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::Invalid("no tokens to run".into()));
        }
        let vocab = self.cfg.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id: bad, vocab });
        }
        if self.opts.window == 0 && self.seen + ids.len() > self.opts.max_context {
            return Err(Error::Invalid(format!(
                "context full: {} + {} tokens exceed the GPU cache of {}",
                self.seen,
                ids.len(),
                self.opts.max_context
            )));
        }
        let mut out = Vec::new();
        for chunk in ids.chunks(self.opts.max_chunk) {
            let logits = self.run_chunk(chunk, all)?;
            if all {
                out.extend(logits);
            } else {
                out = logits;
            }
        }
        Ok(out)
    }

    /// Uploads the embeddings of `ids` into `s.x` and the next position into `s.base`.
    fn stage(&mut self, ids: &[u32]) -> Result<()> {
        let c = self.cfg.hidden_size;
        let mut x = Vec::with_capacity(ids.len() * c);
        for &id in ids {
            x.extend_from_slice(&self.embed[id as usize * c..][..c]);
        }
        self.gpu.write(&x, &mut self.s.x).map_err(kerr)?;
        let pos =
            i32::try_from(self.seen).map_err(|_| Error::Invalid("position exceeds i32".into()))?;
        self.gpu.write(&[pos], &mut self.s.base).map_err(kerr)
    }

    fn run_chunk(&mut self, ids: &[u32], all: bool) -> Result<Vec<f32>> {
        let (t, c, vocab) = (ids.len(), self.cfg.hidden_size, self.cfg.vocab_size);
        self.stage(ids)?;
        if t == 1 && !all && self.opts.graphs && !self.graph_failed {
            if self.graph.is_none() {
                self.capture()?;
            }
            if let Some(graph) = &self.graph {
                graph.0.launch().map_err(|e| Error::Kernel(e.to_string()))?;
                self.seen += 1;
                return self
                    .gpu
                    .download_range(&self.s.logits, 0, vocab)
                    .map_err(kerr);
            }
        }
        self.layers_pass(t)?;
        let g = &self.gpu;
        let rows: Vec<usize> = if all { (0..t).collect() } else { vec![t - 1] };
        for (i, &r) in rows.iter().enumerate() {
            g.head(&self.head, &self.s.h, r * c, &self.s.logits, i * vocab)
                .map_err(kerr)?;
        }
        self.seen += t;
        g.download_range(&self.s.logits, 0, rows.len() * vocab)
            .map_err(kerr)
    }

    /// Captures one single-token step (layers, final norm, head of row 0) as a graph.
    fn capture(&mut self) -> Result<()> {
        let stream = self.gpu.stream().clone();
        self.gpu.sync().map_err(kerr)?;
        if stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .is_err()
        {
            self.graph_failed = true;
            return Ok(());
        }
        let ran = self.layers_pass(1).and_then(|()| {
            self.gpu
                .head(&self.head, &self.s.h, 0, &self.s.logits, 0)
                .map_err(kerr)
        });
        let graph = stream
            .end_capture(CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH);
        match (ran, graph) {
            (Ok(()), Ok(Some(g))) => self.graph = Some(Graph(g)),
            (Err(e), _) => return Err(e),
            _ => self.graph_failed = true,
        }
        Ok(())
    }

    /// Runs every layer on `t` tokens in `s.x` (positions `*base..`), leaving the final-normed
    /// hidden states in `s.h`.
    fn layers_pass(&self, t: usize) -> Result<()> {
        self.layers_pass_marked(t, &mut |_| Ok(()))
    }

    /// [`GpuModel::layers_pass`], calling `mark(op)` after each operation is queued.
    fn layers_pass_marked(
        &self,
        t: usize,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<()> {
        let g = &self.gpu;
        let s = &self.s;
        let (c, h, hkv, d) = (
            self.cfg.hidden_size,
            self.cfg.num_heads,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
        );
        let (nq, nk) = (h * d, hkv * d);
        let f = self.cfg.intermediate_size;
        let eps = self.eps;
        let theta = self.cfg.rope_theta as f32;
        let scale = 1.0 / (d as f32).sqrt();
        let act_kind = match self.cfg.activation {
            Activation::Relu2 => 0,
            Activation::Silu => 1,
        };
        let pre = !matches!(self.cfg.norm_placement, NormPlacement::SwinNorm);
        for (l, kv) in self.layers.iter().zip(&self.kv) {
            // Attention input: norm1(x) (pre/subln) or x (swin), normed inside the quantiser.
            g.rms_act_quant(&s.x, t, pre.then_some(&l.norm1), eps, &s.act_c)
                .map_err(kerr)?;
            mark("norm_quant")?;
            g.ternary(&l.qkv, &s.act_c, t, &s.qkv, 0).map_err(kerr)?;
            mark("gemv_qkv")?;
            if l.q_norm.is_none() && l.k_norm.is_none() {
                g.qkv_rope_split(&s.qkv, t, h, hkv, d, theta, &s.base, &s.q, &s.k, &s.v)
                    .map_err(kerr)?;
            } else {
                let stride = nq + 2 * nk;
                g.copy_cols(&s.qkv, stride, 0, nq, t, &s.q).map_err(kerr)?;
                g.copy_cols(&s.qkv, stride, nq, nk, t, &s.k).map_err(kerr)?;
                g.copy_cols(&s.qkv, stride, nq + nk, nk, t, &s.v)
                    .map_err(kerr)?;
                if let Some(n) = &l.q_norm {
                    g.rmsnorm(&s.q, t * h, d, n, eps, &s.q).map_err(kerr)?;
                }
                if let Some(n) = &l.k_norm {
                    g.rmsnorm(&s.k, t * hkv, d, n, eps, &s.k).map_err(kerr)?;
                }
                g.rope(&s.q, t, h, d, theta, &s.base).map_err(kerr)?;
                g.rope(&s.k, t, hkv, d, theta, &s.base).map_err(kerr)?;
            }
            mark("qkv_rope")?;
            g.kv_store(kv, &s.k, &s.v, t, &s.base).map_err(kerr)?;
            mark("kv_store")?;
            g.attention(&s.q, t, h, kv, &s.base, scale, &s.attn, &s.att)
                .map_err(kerr)?;
            mark("attention")?;
            g.rms_act_quant(&s.att, t, l.attn_sub.as_ref(), eps, &s.act_a)
                .map_err(kerr)?;
            mark("norm_quant")?;
            self.residual(
                &l.o,
                &s.act_a,
                t,
                (!pre).then_some(&l.norm1),
                "gemv_o",
                mark,
            )?;
            // MLP.
            g.rms_act_quant(&s.x, t, pre.then_some(&l.norm2), eps, &s.act_c)
                .map_err(kerr)?;
            mark("norm_quant")?;
            g.ternary(&l.gu, &s.act_c, t, &s.gu, 0).map_err(kerr)?;
            mark("gemv_gate_up")?;
            let hid = if l.gated {
                g.gated_act(&s.gu, t, f, act_kind, &s.hid).map_err(kerr)?;
                &s.hid
            } else {
                g.act_inplace(&s.gu, t * f, act_kind).map_err(kerr)?;
                &s.gu
            };
            mark("activation")?;
            g.rms_act_quant(hid, t, l.mlp_sub.as_ref(), eps, &s.act_f)
                .map_err(kerr)?;
            mark("norm_quant")?;
            self.residual(
                &l.down,
                &s.act_f,
                t,
                (!pre).then_some(&l.norm2),
                "gemv_down",
                mark,
            )?;
        }
        g.rmsnorm(&s.x, t, c, &self.norm, eps, &s.h).map_err(kerr)?;
        mark("final_norm")?;
        Ok(())
    }

    /// `x += W·act` for `t` tokens: an output projection into the residual stream, RMSNormed
    /// with `post` first (swin placement) or fused into the GEMV/GEMM epilogue when
    /// [`GpuOptions::fuse_residual`] is set (the same values as the projection then an add).
    fn residual(
        &self,
        w: &DevTernary,
        act: &ActBuf,
        t: usize,
        post: Option<&CudaSlice<f32>>,
        op: &'static str,
        mark: &mut dyn FnMut(&'static str) -> Result<()>,
    ) -> Result<()> {
        let (g, s, c) = (&self.gpu, &self.s, self.cfg.hidden_size);
        if self.opts.fuse_residual && post.is_none() {
            g.ternary_add(w, act, t, &s.x, 0).map_err(kerr)?;
            return mark(op);
        }
        g.ternary(w, act, t, &s.o, 0).map_err(kerr)?;
        mark(op)?;
        if let Some(n) = post {
            g.rmsnorm(&s.o, t, c, n, self.eps, &s.o).map_err(kerr)?;
        }
        g.add(&s.x, &s.o, t * c).map_err(kerr)?;
        mark("residual")
    }

    /// Runs one single-token step (`id` appended to the sequence, eager launches) with a CUDA
    /// event after every operation, and returns the GPU milliseconds spent in each kind of
    /// operation over all layers, in first-seen order: `(op, ms, launches)`. The events
    /// serialise the stream between operations, so the total exceeds a graph-replayed step.
    pub fn profile_step(&mut self, id: u32) -> Result<Vec<(&'static str, f64, usize)>> {
        let vocab = self.cfg.vocab_size;
        if id as usize >= vocab {
            return Err(Error::TokenOutOfRange { id, vocab });
        }
        self.stage(&[id])?;
        let mut marks = vec![("start", self.gpu.mark().map_err(kerr)?)];
        self.layers_pass_marked(1, &mut |op| {
            marks.push((op, self.gpu.mark().map_err(kerr)?));
            Ok(())
        })?;
        self.gpu
            .head(&self.head, &self.s.h, 0, &self.s.logits, 0)
            .map_err(kerr)?;
        marks.push(("head", self.gpu.mark().map_err(kerr)?));
        self.gpu.sync().map_err(kerr)?;
        self.seen += 1;
        let mut out: Vec<(&'static str, f64, usize)> = Vec::new();
        for w in marks.windows(2) {
            let ms = f64::from(
                w[0].1
                    .elapsed_ms(&w[1].1)
                    .map_err(|e| Error::Kernel(e.to_string()))?,
            );
            match out.iter_mut().find(|o| o.0 == w[1].0) {
                Some(o) => {
                    o.1 += ms;
                    o.2 += 1;
                }
                None => out.push((w[1].0, ms, 1)),
            }
        }
        Ok(out)
    }
}

/// A decoding session on the GPU for [`crate::generation::generate_with`].
impl crate::generation::Decoder for GpuModel {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn start(&mut self) -> Result<()> {
        self.reset()
    }

    fn step(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.forward(ids, false)
    }

    fn len(&self) -> usize {
        self.seen
    }
}
