//! Kernel launches on the [`Gpu`]'s stream: the `launch!` macro (cudarc's launch builder, or
//! `cuLaunchKernelEx` with programmatic stream serialization under
//! [`Tuning::pdl`](super::Tuning::pdl)), launch configurations, and the argument checks each
//! launch makes first (buffer lengths, `i32` ranges), so that a kernel never reads or writes
//! out of bounds.

use super::{cu, Gpu};
use crate::KernelError;
use cudarc::driver::sys;
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig};
use std::ffi::c_void;

/// Launches kernel `$f` with `$cfg` and the kernel arguments `$arg` (plain values: device
/// pointers as `u64`, `i32`, `f32`), through cudarc's launch builder, or through
/// `cuLaunchKernelEx` with programmatic stream serialization when
/// [`Tuning::pdl`](super::Tuning::pdl) is on. Unsafe: the arguments must match the kernel's
/// parameters and the buffers their extents. Each argument must be a variable or a field (a
/// place), not a temporary: the PDL path passes their addresses to the driver after the
/// argument list is built.
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

/// A launch configuration: `grid` blocks of `block` threads with `smem` bytes of dynamic
/// shared memory.
pub(super) fn cfg(grid: (u32, u32, u32), block: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem,
    }
}

/// Blocks of `per` needed to cover `n` items, as a grid dimension.
pub(super) fn blocks(n: usize, per: usize) -> Result<u32, KernelError> {
    u32::try_from(n.div_ceil(per)).map_err(|_| KernelError::Cuda(format!("grid of {n} too large")))
}

/// The error for a buffer of `have` elements where `need` are used.
pub(super) fn bad(what: &str, need: usize, have: usize) -> KernelError {
    KernelError::Cuda(format!("{what}: needs {need} elements, buffer has {have}"))
}

/// Fails unless `s` holds at least `need` elements.
pub(super) fn check<T>(what: &str, s: &CudaSlice<T>, need: usize) -> Result<(), KernelError> {
    if s.len() < need {
        Err(bad(what, need, s.len()))
    } else {
        Ok(())
    }
}

/// `v` as a kernel's `int` argument, or an error naming `what`.
pub(super) fn int(v: usize, what: &str) -> Result<i32, KernelError> {
    i32::try_from(v).map_err(|_| KernelError::Cuda(format!("{what} = {v} exceeds i32")))
}

impl Gpu {
    /// Whether launches go through [`Gpu::launch_pdl`]
    /// ([`Tuning::pdl`](super::Tuning::pdl)).
    pub(super) fn pdl_on(&self) -> bool {
        self.tuning.pdl
    }

    /// Launches `f` with programmatic stream serialization allowed.
    ///
    /// # Safety
    /// `args` must point to values matching the kernel's parameters, live for the call, and
    /// the buffers they name must be as large as the kernel reads and writes.
    pub(super) unsafe fn launch_pdl(
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
}
