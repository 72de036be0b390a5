//! [`Tuning`]: the kernel variants that change speed, not results, and the device checks
//! [`Gpu::set_tuning`] makes before turning one on. Each variant must give the default path's
//! values (bit for bit, except the grouped attention: the default's tolerance against the
//! naive statement); the launches in `ternary` and `attention` read the flags.

use super::{cu, Gpu};
use crate::KernelError;

/// The PTX target `build.rs` compiled for (`CUDA_COMPUTE_CAP`).
const PTX_ARCH: &str = env!("TRITTER_PTX_ARCH");

/// Kernel variants that change speed, not results (all but `attn_group` bit for bit; that one
/// reorders float sums). Each is tested against [`Tuning::plain`], the path first verified on a
/// GPU (`kernels/tests/cuda/variants.rs`, `model/tests/gpu.rs`), and measured by
/// `tritter bench variants --device cuda`. The default ([`Tuning::default`]) is the set that
/// passed those tests on an H200 and helps there: programmatic dependent launch, register GEMV,
/// skipped empty attention splits, tensor-core GEMM. Grouped attention stays off: it was
/// slower (decode 0.55×, 4K-token attention 0.42–0.52×) and 1.2e-2 from the default's logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Default for Tuning {
    /// The variants verified on a GPU and faster there (grouped attention off); a [`Gpu`]
    /// drops those its device or PTX cannot run ([`Tuning::runnable_on`]).
    fn default() -> Self {
        Self {
            pdl: true,
            gemv_regs: true,
            attn_skip_empty: true,
            attn_group: false,
            gemm_mma: true,
        }
    }
}

impl Tuning {
    /// Every variant off: the path first verified on a GPU, which the variants are tested
    /// against.
    pub fn plain() -> Self {
        Self {
            pdl: false,
            gemv_regs: false,
            attn_skip_empty: false,
            attn_group: false,
            gemm_mma: false,
        }
    }

    /// These variants less those a device of compute capability `major`.x with PTX for
    /// `compute_{ptx}` cannot run: programmatic dependent launch needs 9.0 and compute_90, the
    /// tensor-core GEMM 8.0 and compute_80.
    pub fn runnable_on(self, major: i32, ptx: u32) -> Self {
        Self {
            pdl: self.pdl && major >= 9 && ptx >= 90,
            gemm_mma: self.gemm_mma && major >= 8 && ptx >= 80,
            ..self
        }
    }

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

/// The PTX target as a number (`90` for compute_90; 0 when unreadable).
fn ptx_arch() -> u32 {
    PTX_ARCH.parse().unwrap_or(0)
}

impl Gpu {
    /// `t` less the variants this device or the PTX cannot run ([`Tuning::runnable_on`]).
    pub fn runnable(&self, t: Tuning) -> Result<Tuning, KernelError> {
        let (major, _) = self.ctx.compute_capability().map_err(cu)?;
        Ok(t.runnable_on(major, ptx_arch()))
    }

    /// The kernel variants in use.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// Selects kernel variants; programmatic dependent launch needs compute capability 9.0
    /// and PTX built for compute_90 or newer, the tensor-core GEMM compute capability 8.0.
    pub fn set_tuning(&mut self, t: Tuning) -> Result<(), KernelError> {
        let (major, _) = self.ctx.compute_capability().map_err(cu)?;
        let ptx = ptx_arch();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_verified_set_trimmed_to_the_device() {
        let d = Tuning::default();
        assert!(d.pdl && d.gemv_regs && d.attn_skip_empty && d.gemm_mma && !d.attn_group);
        assert_eq!(d.runnable_on(9, 90), d);
        assert_eq!(d.runnable_on(12, 120), d);
        // Ampere: no PDL; PTX for compute_80 on a Hopper: no PDL either.
        assert_eq!(d.runnable_on(8, 90), Tuning { pdl: false, ..d });
        assert_eq!(d.runnable_on(9, 80), Tuning { pdl: false, ..d });
        assert_eq!(
            d.runnable_on(7, 75),
            Tuning {
                pdl: false,
                gemm_mma: false,
                ..d
            }
        );
        assert_eq!(Tuning::plain().runnable_on(12, 120), Tuning::plain());
        assert!(!Tuning::plain().gemv_regs && Tuning::all().attn_group);
    }
}
