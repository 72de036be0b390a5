//! Work on the [`Gpu`]'s one stream other than kernel launches: allocation, host ↔ device
//! transfers and device copies (lengths checked first), synchronisation, device pointers for
//! launches, and timing with CUDA events.

use super::{check, cu, Gpu};
use crate::KernelError;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, ValidAsZeroBits};

impl Gpu {
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

    /// Device address of element `offset` of `s`, as a kernel argument.
    pub(super) fn ptr<T>(&self, s: &CudaSlice<T>, offset: usize) -> u64 {
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
