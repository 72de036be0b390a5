//! [`Tuning`]: the kernel variants that change speed, not results, and the device checks
//! [`Gpu::set_tuning`] makes before turning one on. Each variant must give the default path's
//! values (bit for bit, except the grouped attention: the default's tolerance against the
//! naive statement); the launches in `ternary` and `attention` read the flags.

use super::{cu, Gpu};
use crate::KernelError;

/// The PTX target `build.rs` compiled for (`CUDA_COMPUTE_CAP`).
const PTX_ARCH: &str = env!("TRITTER_PTX_ARCH");

/// Kernel variants that change speed, not results (all but `attn_group` bit for bit; that one
/// reorders float sums). All off by default: the default path is the one verified on a GPU;
/// each variant is tested against it (`kernels/tests/cuda/`, `model/tests/gpu.rs`) and
/// measured by `tritter bench kernels|decode|attention --device cuda`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuning {
    /// Programmatic dependent launch (compute capability 9.0+, PTX for compute_90+): each
    /// kernel may be scheduled while its predecessor finishes, and the register GEMV requests
    /// its weights before waiting. Every kernel waits for its predecessor before touching
    /// anything else (`pdl_wait` in `kernels/cuda/common.cuh`).
    pub pdl: bool,
    /// Decode GEMV with the activations in registers (`ternary_gemv_regs*`) instead of staged
    /// in shared memory, for k ≤ 16384.
    pub gemv_regs: bool,
    /// Attention splits that lie wholly past the query's position exit at once.
    pub attn_skip_empty: bool,
    /// Grouped-query attention blocks (`attn_group_*`): one block per KV head serves its query
    /// heads (up to 8), reading each cached key/value once; keys scored by 8 lanes each. Float
    /// sums in another order: within the attention tolerance, not bit-identical.
    pub attn_group: bool,
    /// Prefill GEMM on int8 tensor cores (`ternary_gemm_mma`, mma.sync m16n8k32; compute
    /// capability 8.0+) instead of dp4a.
    pub gemm_mma: bool,
}

impl Tuning {
    /// Every variant on.
    pub fn all() -> Self {
        Self {
            pdl: true,
            gemv_regs: true,
            attn_skip_empty: true,
            attn_group: true,
            gemm_mma: true,
        }
    }
}

impl Gpu {
    /// The kernel variants in use.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// Selects kernel variants; programmatic dependent launch needs compute capability 9.0
    /// and PTX built for compute_90 or newer, the tensor-core GEMM compute capability 8.0.
    pub fn set_tuning(&mut self, t: Tuning) -> Result<(), KernelError> {
        let (major, _) = self.ctx.compute_capability().map_err(cu)?;
        let ptx: u32 = PTX_ARCH.parse().unwrap_or(0);
        if t.gemm_mma && (major < 8 || ptx < 80) {
            return Err(KernelError::Cuda(format!(
                "the int8 tensor-core GEMM needs compute capability 8.0+ and PTX for compute_80+ \
                 (device {major}.x, PTX compute_{PTX_ARCH})"
            )));
        }
        if t.pdl && (major < 9 || ptx < 90) {
            return Err(KernelError::Cuda(format!(
                "programmatic dependent launch needs compute capability 9.0+ and PTX for \
                 compute_90+ (device {major}.x, PTX compute_{PTX_ARCH})"
            )));
        }
        self.tuning = t;
        Ok(())
    }
}
