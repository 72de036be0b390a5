//! Launches of Tritter's CUDA kernels (feature `cuda`): the PTX that `build.rs` compiles from
//! `kernels/cuda/*.cu` is loaded through cudarc's driver API on one stream. Each kernel has a
//! host statement it must match (tests: `kernels/tests/cuda.rs`):
//! - `rms_act_quant_i8` without a norm → [`crate::quantize_row_i8_scalar`] (bit-exact codes,
//!   scales, sums);
//! - `ternary_gemv`/`ternary_gemm` → [`crate::ternary_matmul`] (bit-exact f32 outputs);
//! - `kv_store` (INT4) → [`crate::gpu_ref::quant_group_i4`] (bit-exact codes and scales);
//! - `attn_partial_*` + `attn_combine` → [`crate::gpu_ref::attention_ref`] (f32 tolerance);
//! - `rmsnorm`, `rope`, heads → the slice code of the model's inference path (f32 tolerance).
//!
//! Device buffers are `CudaSlice`s; kernels write through shared references (device memory is
//! not Rust memory, and every launch is ordered on the one stream). Lengths are checked before
//! each launch so a kernel never reads or writes out of bounds.
//!
//! [`Tuning`] selects kernel variants that change speed (programmatic dependent launch, the
//! register GEMV, skipping empty attention splits, grouped-query attention blocks, the
//! tensor-core GEMM); each must give the default path's values, bit for bit except the
//! grouped attention (same tolerance as the default against the naive statement).

mod kv;
mod linear;
mod ops;

pub use kv::{AttnScratch, DevKv, GpuKvKind, KvHost, MAX_HEAD_DIM};
pub use linear::{ActBuf, ActHost, DevTernary};
pub use ops::DevHead;

use crate::KernelError;
use cudarc::driver::sys::{self, CUevent_flags};
pub use cudarc::driver::CudaSlice;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use std::ffi::c_void;
use std::sync::Arc;

/// The PTX target `build.rs` compiled for (`CUDA_COMPUTE_CAP`).
const PTX_ARCH: &str = env!("TRITTER_PTX_ARCH");

const PTX_TERNARY: &str = include_str!(concat!(env!("OUT_DIR"), "/ternary.ptx"));
const PTX_ATTENTION: &str = include_str!(concat!(env!("OUT_DIR"), "/attention.ptx"));
const PTX_OPS: &str = include_str!(concat!(env!("OUT_DIR"), "/ops.ptx"));

pub(crate) fn cu(e: impl std::fmt::Display) -> KernelError {
    KernelError::Cuda(e.to_string())
}

fn bad(what: &str, need: usize, have: usize) -> KernelError {
    KernelError::Cuda(format!("{what}: needs {need} elements, buffer has {have}"))
}

fn check<T>(what: &str, s: &CudaSlice<T>, need: usize) -> Result<(), KernelError> {
    if s.len() < need {
        Err(bad(what, need, s.len()))
    } else {
        Ok(())
    }
}

fn int(v: usize, what: &str) -> Result<i32, KernelError> {
    i32::try_from(v).map_err(|_| KernelError::Cuda(format!("{what} = {v} exceeds i32")))
}

/// Kernel variants that change speed, not results (all but `attn_group` bit for bit; that one
/// reorders float sums). All off by default: the default path is the one verified on a GPU;
/// each variant is tested against it (`kernels/tests/cuda.rs`, `model/tests/gpu.rs`) and
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

struct Kernels {
    gemv: CudaFunction,
    /// `ternary_gemv_regs{1,2,4,8}`.
    gemv_regs: [CudaFunction; 4],
    gemm: CudaFunction,
    gemm_mma: CudaFunction,
    kv_store: CudaFunction,
    kv_dequant: CudaFunction,
    attn: [CudaFunction; 3],
    /// `attn_group_{f32,f16,i4}`.
    attn_group: [CudaFunction; 3],
    combine: CudaFunction,
    rmsnorm: CudaFunction,
    rope: CudaFunction,
    add: CudaFunction,
    gated: CudaFunction,
    act: CudaFunction,
    head_f16: CudaFunction,
    head_f32: CudaFunction,
    copy_cols: CudaFunction,
    rms_act_quant: CudaFunction,
    qkv_rope_split: CudaFunction,
}

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

/// Launches kernel `$f` with `$cfg` and the kernel arguments `$arg` (plain values: device
/// pointers as `u64`, `i32`, `f32`), through cudarc's launch builder, or through
/// `cuLaunchKernelEx` with programmatic stream serialization when [`Tuning::pdl`] is on.
/// Unsafe: the arguments must match the kernel's parameters and the buffers their extents.
/// Each argument must be a variable or a field (a place), not a temporary: the PDL path passes
/// their addresses to the driver after the argument list is built.
macro_rules! launch {
    ($gpu:expr, $f:expr, $cfg:expr; $($arg:expr),+ $(,)?) => {{
        let g: &$crate::cuda::Gpu = $gpu;
        if g.pdl_on() {
            let mut args: Vec<*mut std::ffi::c_void> =
                vec![$(std::ptr::from_ref(&$arg).cast_mut().cast()),+];
            g.launch_pdl($f, $cfg, &mut args)
        } else {
            let mut b = g.stream().launch_builder($f);
            $(cudarc::driver::PushKernelArg::arg(&mut b, &$arg);)+
            b.launch($cfg).map(|_| ()).map_err($crate::cuda::cu)
        }
    }};
}
pub(crate) use launch;

fn cfg(grid: (u32, u32, u32), block: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem,
    }
}

fn blocks(n: usize, per: usize) -> Result<u32, KernelError> {
    u32::try_from(n.div_ceil(per)).map_err(|_| KernelError::Cuda(format!("grid of {n} too large")))
}

impl Gpu {
    /// Opens GPU `ordinal` and loads the kernels.
    pub fn new(ordinal: usize) -> Result<Self, KernelError> {
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| KernelError::Cuda(format!("opening CUDA device {ordinal}: {e}")))?;
        // One stream, so per-buffer event tracking is not needed (and would break capture).
        // SAFETY: every buffer of this context is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        // A created stream, not the legacy default stream: graphs cannot be captured on that.
        let stream = ctx.new_stream().map_err(cu)?;
        let t = ctx.load_module(Ptx::from_src(PTX_TERNARY)).map_err(cu)?;
        let a = ctx.load_module(Ptx::from_src(PTX_ATTENTION)).map_err(cu)?;
        let o = ctx.load_module(Ptx::from_src(PTX_OPS)).map_err(cu)?;
        let k = Kernels {
            gemv: load(&t, "ternary_gemv")?,
            gemv_regs: [
                load(&t, "ternary_gemv_regs1")?,
                load(&t, "ternary_gemv_regs2")?,
                load(&t, "ternary_gemv_regs4")?,
                load(&t, "ternary_gemv_regs8")?,
            ],
            gemm: load(&t, "ternary_gemm")?,
            gemm_mma: load(&t, "ternary_gemm_mma")?,
            kv_store: load(&a, "kv_store")?,
            kv_dequant: load(&a, "kv_dequant_i4")?,
            attn: [
                load(&a, "attn_partial_f32")?,
                load(&a, "attn_partial_f16")?,
                load(&a, "attn_partial_i4")?,
            ],
            attn_group: [
                load(&a, "attn_group_f32")?,
                load(&a, "attn_group_f16")?,
                load(&a, "attn_group_i4")?,
            ],
            combine: load(&a, "attn_combine")?,
            rmsnorm: load(&o, "rmsnorm")?,
            rope: load(&o, "rope")?,
            add: load(&o, "add_inplace")?,
            gated: load(&o, "gated_act")?,
            act: load(&o, "act_inplace")?,
            head_f16: load(&o, "head_gemv_f16")?,
            head_f32: load(&o, "head_gemv_f32")?,
            copy_cols: load(&o, "copy_cols")?,
            rms_act_quant: load(&t, "rms_act_quant_i8")?,
            qkv_rope_split: load(&o, "qkv_rope_split")?,
        };
        Ok(Self {
            ctx,
            stream,
            k,
            ordinal,
            tuning: Tuning::default(),
        })
    }

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

    fn pdl_on(&self) -> bool {
        self.tuning.pdl
    }

    /// Launches `f` with programmatic stream serialization allowed.
    ///
    /// # Safety
    /// `args` must point to values matching the kernel's parameters, live for the call, and
    /// the buffers they name must be as large as the kernel reads and writes.
    unsafe fn launch_pdl(
        &self,
        f: &CudaFunction,
        c: LaunchConfig,
        args: &mut [*mut c_void],
    ) -> Result<(), KernelError> {
        // SAFETY: an all-zero launch attribute is a valid (ignored) value of the C struct.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let conf = sys::CUlaunchConfig {
            gridDimX: c.grid_dim.0,
            gridDimY: c.grid_dim.1,
            gridDimZ: c.grid_dim.2,
            blockDimX: c.block_dim.0,
            blockDimY: c.block_dim.1,
            blockDimZ: c.block_dim.2,
            sharedMemBytes: c.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        self.ctx.bind_to_thread().map_err(cu)?;
        // SAFETY: the config and attribute live for the call; the caller vouches for `args`.
        unsafe {
            sys::cuLaunchKernelEx(
                &conf,
                f.cu_function(),
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        .map_err(cu)
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

    /// Waits for all queued work; surfaces errors of earlier launches.
    pub fn sync(&self) -> Result<(), KernelError> {
        self.stream.synchronize().map_err(cu)
    }

    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, KernelError> {
        self.stream.clone_htod(host).map_err(cu)
    }

    /// Copies `host` into the start of `dst`.
    pub fn write<T: DeviceRepr>(
        &self,
        host: &[T],
        dst: &mut CudaSlice<T>,
    ) -> Result<(), KernelError> {
        check("write", dst, host.len())?;
        let mut view = dst.slice_mut(0..host.len());
        self.stream.memcpy_htod(host, &mut view).map_err(cu)
    }

    pub fn download<T: DeviceRepr>(&self, d: &CudaSlice<T>) -> Result<Vec<T>, KernelError> {
        let v = self.stream.clone_dtoh(d).map_err(cu)?;
        self.sync()?;
        Ok(v)
    }

    /// Copies `n` elements of `src` from `offset` to the host.
    pub fn download_range<T: DeviceRepr>(
        &self,
        src: &CudaSlice<T>,
        offset: usize,
        n: usize,
    ) -> Result<Vec<T>, KernelError> {
        check("download", src, offset + n)?;
        let v = self
            .stream
            .clone_dtoh(&src.slice(offset..offset + n))
            .map_err(cu)?;
        self.sync()?;
        Ok(v)
    }

    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, KernelError> {
        self.stream.alloc_zeros(n.max(1)).map_err(cu)
    }

    /// Device-to-device copy of `n` elements.
    pub fn copy(
        &self,
        src: &CudaSlice<f32>,
        src_off: usize,
        dst: &mut CudaSlice<f32>,
        dst_off: usize,
        n: usize,
    ) -> Result<(), KernelError> {
        check("copy src", src, src_off + n)?;
        check("copy dst", dst, dst_off + n)?;
        let s = src.slice(src_off..src_off + n);
        let mut d = dst.slice_mut(dst_off..dst_off + n);
        self.stream.memcpy_dtod(&s, &mut d).map_err(cu)
    }

    fn ptr<T>(&self, s: &CudaSlice<T>, offset: usize) -> u64 {
        let (p, _guard) = s.device_ptr(&self.stream);
        p + (offset * std::mem::size_of::<T>()) as u64
    }

    /// Records a timing event on the stream (for [`cudarc::driver::CudaEvent::elapsed_ms`]).
    pub fn mark(&self) -> Result<cudarc::driver::CudaEvent, KernelError> {
        self.stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cu)
    }

    /// Times `f` with CUDA events: median milliseconds over `reps` runs after `warm` runs.
    pub fn time_ms(
        &self,
        warm: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<(), KernelError>,
    ) -> Result<f64, KernelError> {
        for _ in 0..warm {
            f()?;
        }
        self.sync()?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let timed = Some(CUevent_flags::CU_EVENT_DEFAULT);
            let a = self.stream.record_event(timed).map_err(cu)?;
            f()?;
            let b = self.stream.record_event(timed).map_err(cu)?;
            times.push(f64::from(a.elapsed_ms(&b).map_err(cu)?));
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}
