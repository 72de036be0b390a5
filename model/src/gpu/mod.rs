//! The transformer's inference path on an NVIDIA GPU (feature `cuda`): the same layers as the
//! CPU inference path in `infer/` (BitLinears on Tritter's ternary W2A8 kernels, RMSNorm,
//! RoPE at absolute positions, attention over a GPU KV cache that can be f32/f16/INT4, roll a
//! sliding window and keep sinks), for one sequence. Must match `infer::CpuModel` within
//! tolerance (tests: `model/tests/gpu.rs`, the golden fixtures' logits CPU vs CUDA).
//!
//! q/k/v projections are stacked into one ternary matrix (one quantisation, one GEMV), as are
//! gate/up. Single-token decode steps can be replayed as a captured CUDA graph (the
//! position lives in device memory), which removes the per-launch CPU cost.
//!
//! Files: `upload.rs` (weights, head, caches and scratch onto the device), `forward.rs` (the
//! layer pass), `graph.rs` (captured decode steps, speed variants), `profile.rs` (a step timed
//! per operation). The model's `Decoder` implementation is in `crate::decoder`.

mod forward;
mod graph;
mod profile;
mod upload;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::transformer::Transformer;
use graph::Graph;
use tritter_kernels::cuda::{
    ActBuf, AttnScratch, CudaSlice, DevHead, DevKv, DevTernary, Gpu, GpuKvKind, Tuning,
};
use tritter_kernels::KernelError;

fn kerr(e: KernelError) -> Error {
    Error::Kernel(e.to_string())
}

/// What the GPU path cannot run, refused before a device is opened (`gpu_scope::check`:
/// Chameleon's per-head q/k LayerNorm, dense linears, attention modes other than causal).
fn check_supported(cfg: &Config) -> Result<()> {
    crate::gpu_scope::check(cfg)
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
    /// Kernel variants (speed only, see [`Tuning`]): [`Tuning::default`], the set verified on
    /// a GPU, is trimmed to what the device runs; any other set is refused where it cannot run.
    pub tuning: Tuning,
    /// Add the o and down projections to the residual stream in the GEMV/GEMM epilogue
    /// instead of a separate add (pre-norm and subln placements; the same values, bit for bit
    /// on an H200). On by default.
    pub fuse_residual: bool,
    /// What [`crate::plan_gpu::fit`] chose for the device, when the cache was sized to it
    /// (`decoder::open` with `Profile::Fast`); shown by the status bar and `-p --json`.
    pub fit: Option<crate::plan_gpu::GpuFit>,
}

impl GpuOptions {
    /// Reference settings for `cfg` (f32 cache and head, the config's window and sinks): what
    /// the CPU inference path computes by default, with the default speed variants.
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
            fuse_residual: true,
            fit: None,
        }
    }

    /// These options with every speed variant on (kernel [`Tuning::all`], grouped attention
    /// included, and the fused residual add).
    pub fn tuned(self) -> Self {
        Self {
            tuning: Tuning::all(),
            fuse_residual: true,
            ..self
        }
    }

    /// These options with every speed variant off ([`Tuning::plain`], separate residual
    /// add): the path the variants are tested against.
    pub fn plain(self) -> Self {
        Self {
            tuning: Tuning::plain(),
            fuse_residual: false,
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

/// One layer on the device.
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

/// The device buffers of one pass of up to `max_chunk` tokens.
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

impl GpuModel {
    /// Uploads `model` to GPU `ordinal`.
    pub fn new(model: &Transformer, opts: GpuOptions, ordinal: usize) -> Result<Self> {
        check_supported(model.config())?;
        let gpu = Gpu::new(ordinal).map_err(kerr)?;
        Self::with_gpu(model, opts, gpu)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What the cache was sized to, when it was sized to the device.
    pub fn fit(&self) -> Option<&crate::plan_gpu::GpuFit> {
        self.opts.fit.as_ref()
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
}
