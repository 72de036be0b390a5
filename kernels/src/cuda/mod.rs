//! Launches of Tritter's CUDA kernels (feature `cuda`): the PTX that `build.rs` compiles from
//! `kernels/cuda/*.cu` is loaded through cudarc's driver API on one stream. One module per
//! `.cu` file launches its kernels, and each kernel has a host statement it must match (tests:
//! `kernels/tests/cuda/`):
//! - `ternary` (`ternary.cu`): `rms_act_quant_i8` without a norm →
//!   [`crate::quantize_row_i8_scalar`] (bit-exact codes, scales, sums);
//!   `ternary_gemv`/`ternary_gemm` → [`crate::ternary_matmul`] (bit-exact f32 outputs);
//! - `attention` (`attention.cu`): `kv_store` (INT4) →
//!   [`crate::gpu_ref::quant_group_i4`] (bit-exact codes and scales); `attn_partial_*` +
//!   `attn_combine` → [`crate::gpu_ref::attention_ref`] (f32 tolerance);
//! - `ops` (`ops.cu`): `rmsnorm`, `rope`, heads → the slice code of the model's
//!   inference path (f32 tolerance).
//!
//! Around them: the [`Gpu`] (device, stream and loaded kernels, here), the work on its stream
//! other than launches (`stream`: allocation, transfers, timing), the launch machinery
//! (`launch`: the `launch!` macro and the length checks made before each launch, so a kernel
//! never reads or writes out of bounds) and [`Tuning`] (`tuning`).
//!
//! Device buffers are `CudaSlice`s; kernels write through shared references (device memory is
//! not Rust memory, and every launch is ordered on the one stream).
//!
//! [`Tuning`] selects kernel variants that change speed (programmatic dependent launch, the
//! register GEMV, skipping empty attention splits, grouped-query attention blocks, the
//! tensor-core GEMM); each must give the plain path's values ([`Tuning::plain`]), bit for bit
//! except the grouped attention (same tolerance against the naive statement). A new `Gpu`
//! runs [`Tuning::default`], the variants verified on a GPU, less what its device cannot run.

mod attention;
mod launch;
mod ops;
mod stream;
mod ternary;
mod tuning;

pub use attention::{AttnScratch, DevKv, GpuKvKind, KvHost, MAX_HEAD_DIM};
pub use cudarc::driver::CudaSlice;
pub use ops::DevHead;
pub use ternary::{ActBuf, ActHost, DevTernary};
pub use tuning::Tuning;

use launch::{bad, blocks, cfg, check, int, launch};

use crate::KernelError;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;

pub(crate) fn cu(e: impl std::fmt::Display) -> KernelError {
    KernelError::Cuda(e.to_string())
}

/// The kernels of each `.cu` file, loaded from its PTX.
struct Kernels {
    ternary: ternary::TernaryKernels,
    attention: attention::AttentionKernels,
    ops: ops::OpsKernels,
}

/// Loads the PTX text `src` (one compiled `.cu` file) as a module of `ctx`.
fn load_module(ctx: &Arc<CudaContext>, src: &str) -> Result<Arc<CudaModule>, KernelError> {
    ctx.load_module(Ptx::from_src(src)).map_err(cu)
}

/// Kernel `name` of module `m`.
fn load(m: &Arc<CudaModule>, name: &str) -> Result<CudaFunction, KernelError> {
    m.load_function(name)
        .map_err(|e| KernelError::Cuda(format!("kernel {name}: {e}")))
}

/// One GPU, its stream and the loaded kernels.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    k: Kernels,
    ordinal: usize,
    tuning: Tuning,
}

impl Gpu {
    /// Opens GPU `ordinal` and loads the kernels; the kernel variants are the default set
    /// this device runs.
    pub fn new(ordinal: usize) -> Result<Self, KernelError> {
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| KernelError::Cuda(format!("opening CUDA device {ordinal}: {e}")))?;
        // One stream, so per-buffer event tracking is not needed (and would break capture).
        // SAFETY: every buffer of this context is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        // A created stream, not the legacy default stream: graphs cannot be captured on that.
        let stream = ctx.new_stream().map_err(cu)?;
        let k = Kernels {
            ternary: ternary::TernaryKernels::load(&ctx)?,
            attention: attention::AttentionKernels::load(&ctx)?,
            ops: ops::OpsKernels::load(&ctx)?,
        };
        let mut gpu = Self {
            ctx,
            stream,
            k,
            ordinal,
            tuning: Tuning::plain(),
        };
        // The verified variants this device and the PTX run (`Tuning::default`).
        gpu.tuning = gpu.runnable(Tuning::default())?;
        Ok(gpu)
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device's name.
    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "CUDA device".into())
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize), KernelError> {
        self.ctx.mem_get_info().map_err(cu)
    }
}
