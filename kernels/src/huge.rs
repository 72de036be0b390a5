//! [`HugeBuf`]: a fixed-length buffer for large, long-lived streams (packed ternary weights, the
//! LM heads) placed on transparent huge pages where the operating system offers them.
//!
//! Decode reads every weight once per token. On 4 KiB pages that stream crosses a page boundary
//! every 4 KiB: each page costs a TLB miss (under a hypervisor a two-level walk) and the
//! hardware prefetchers stop at the boundary. A buffer of at least [`HUGE_PAGE`] bytes is
//! therefore allocated 2 MiB-aligned and, on Linux, advised `MADV_HUGEPAGE` *before* it is first
//! written, so the kernel backs it with 2 MiB pages wherever transparent huge pages are `always`
//! or `madvise` (`/sys/kernel/mm/transparent_hugepage/enabled`; `madvise` is the default of many
//! distributions, where nothing else would give them). Only whole 2 MiB spans are advised: the
//! tail keeps small pages, so no memory is spent on rounding up. Measured (docs/BENCHMARKS.md,
//! fourteenth session): on a Zen 4 EPYC under KVM a 2-thread read of 1 GiB ran 1.04–1.13× faster
//! from huge pages, and 2B4T-shaped ternary GEMVs streamed from DRAM 1.05× faster (median).
//!
//! Elsewhere (other systems, smaller buffers, or [`HUGE_PAGES_VAR`]`=0`) it is an ordinary
//! allocation. The contents are the same either way; only the speed differs.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::OnceLock;

use crate::KernelError;

/// Size of an x86-64 / aarch64 (4 KiB granule) transparent huge page: 2 MiB.
pub const HUGE_PAGE: usize = 2 << 20;

/// Environment variable that turns the huge-page advice off (`0`) or on (`1`, the default).
pub const HUGE_PAGES_VAR: &str = "TRITTER_HUGE_PAGES";

/// Whether buffers of at least [`HUGE_PAGE`] bytes are placed on huge pages in this process:
/// on Linux unless [`HUGE_PAGES_VAR`] is `0`; never elsewhere.
pub fn huge_pages_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        cfg!(target_os = "linux") && std::env::var(HUGE_PAGES_VAR).map_or(true, |v| v.trim() != "0")
    })
}

/// A heap buffer of `len` values of `T`, fixed in length, dereferencing to `[T]`, placed on
/// transparent huge pages when large (module docs).
pub struct HugeBuf<T: Copy> {
    /// Start of the values (dangling when nothing was allocated).
    ptr: NonNull<T>,
    /// Values held.
    len: usize,
    /// The allocation's layout; `None` when nothing was allocated (no values, or zero-sized `T`).
    layout: Option<Layout>,
}

// SAFETY: a `HugeBuf` owns its values exactly as a `Vec<T>` does (no shared state, no interior
// mutability of its own), so it may move to and be shared between threads when `T` may.
unsafe impl<T: Copy + Send> Send for HugeBuf<T> {}
// SAFETY: as above; `&HugeBuf` only hands out `&[T]`.
unsafe impl<T: Copy + Sync> Sync for HugeBuf<T> {}

impl<T: Copy> HugeBuf<T> {
    /// `len` copies of `value`.
    pub fn filled(value: T, len: usize) -> Result<Self, KernelError> {
        let buf = Self::uninit(len)?;
        for i in 0..len {
            // SAFETY: `i < len`, inside the allocation `uninit` made for `len` values of `T`
            // (or `T` is zero-sized, where any aligned pointer is valid for writes).
            unsafe { buf.ptr.as_ptr().add(i).write(value) };
        }
        Ok(buf)
    }

    /// A copy of `src`.
    pub fn from_slice(src: &[T]) -> Result<Self, KernelError> {
        let buf = Self::uninit(src.len())?;
        // SAFETY: `buf` holds room for `src.len()` values and is a fresh allocation, so the
        // ranges do not overlap; `T: Copy`, so a bitwise copy is a valid copy.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), buf.ptr.as_ptr(), src.len()) };
        Ok(buf)
    }

    /// Room for `len` values, not yet written (every constructor writes all of them before
    /// handing the buffer out).
    fn uninit(len: usize) -> Result<Self, KernelError> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .filter(|&b| b <= isize::MAX as usize / 2)
            .ok_or(KernelError::TooLarge {
                what: "buffer",
                len,
            })?;
        if bytes == 0 {
            return Ok(Self {
                ptr: NonNull::dangling(),
                len,
                layout: None,
            });
        }
        let huge = bytes >= HUGE_PAGE && huge_pages_enabled();
        let align = if huge {
            HUGE_PAGE.max(std::mem::align_of::<T>())
        } else {
            std::mem::align_of::<T>()
        };
        let layout = Layout::from_size_align(bytes, align).map_err(|_| KernelError::TooLarge {
            what: "buffer",
            len,
        })?;
        let ptr = allocate(layout);
        Ok(Self {
            ptr,
            len,
            layout: Some(layout),
        })
    }
}

/// A fresh allocation of non-zero-sized `layout`, advised for huge pages when it is aligned to
/// them (only `HugeBuf::uninit` asks for that alignment, and only when they are enabled).
fn allocate<T>(layout: Layout) -> NonNull<T> {
    // SAFETY: every caller passes a layout of non-zero size.
    let raw = unsafe { alloc(layout) };
    let Some(ptr) = NonNull::new(raw.cast::<T>()) else {
        handle_alloc_error(layout)
    };
    if layout.align() >= HUGE_PAGE {
        advise_huge(raw, layout.size());
    }
    ptr
}

/// Advises the whole 2 MiB spans of `[start, start + bytes)` for transparent huge pages. Advice
/// only: when the kernel refuses (no THP support, `never`) the memory stays on small pages.
#[cfg(target_os = "linux")]
fn advise_huge(start: *mut u8, bytes: usize) {
    let first = (start as usize).next_multiple_of(HUGE_PAGE);
    let end = (start as usize + bytes) / HUGE_PAGE * HUGE_PAGE;
    if end > first {
        // SAFETY: `[first, end)` lies inside the allocation just made (rounded inwards to whole
        // pages); `madvise(MADV_HUGEPAGE)` changes no contents and no protection, only how the
        // kernel backs the pages when they are first touched.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

/// No transparent huge page advice off Linux.
#[cfg(not(target_os = "linux"))]
fn advise_huge(_start: *mut u8, _bytes: usize) {}

impl<T: Copy> Drop for HugeBuf<T> {
    fn drop(&mut self) {
        if let Some(layout) = self.layout {
            // SAFETY: allocated by `alloc` with exactly this layout and not freed before.
            unsafe { dealloc(self.ptr.as_ptr().cast::<u8>(), layout) };
        }
    }
}

impl<T: Copy> Deref for HugeBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` is valid for `len` initialised values (every constructor wrote them),
        // aligned for `T`, and borrowed immutably for the returned lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for HugeBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Clone for HugeBuf<T> {
    fn clone(&self) -> Self {
        let Some(layout) = self.layout else {
            return Self {
                ptr: NonNull::dangling(),
                len: self.len,
                layout: None,
            };
        };
        let ptr = allocate::<T>(layout);
        // SAFETY: both allocations hold `len` values of `T` and are distinct.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), ptr.as_ptr(), self.len) };
        Self {
            ptr,
            len: self.len,
            layout: Some(layout),
        }
    }
}

impl<T: Copy + fmt::Debug> fmt::Debug for HugeBuf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: Copy + PartialEq> PartialEq for HugeBuf<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Copy + Eq> Eq for HugeBuf<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_was_written_at_every_size() {
        for len in [
            0usize,
            1,
            7,
            HUGE_PAGE / 4 - 1,
            HUGE_PAGE / 4,
            3 * HUGE_PAGE / 4 + 5,
        ] {
            let src: Vec<u32> = (0..len as u32)
                .map(|i| i.wrapping_mul(2_654_435_761))
                .collect();
            let a = HugeBuf::from_slice(&src).unwrap();
            assert_eq!(&*a, &src[..]);
            let mut b = a.clone();
            assert_eq!(a, b);
            if len > 0 {
                b[len - 1] ^= 1;
                assert_ne!(a, b, "a clone is a copy, not a view");
            }
            let f = HugeBuf::filled(9u16, len).unwrap();
            assert!(f.len() == len && f.iter().all(|&v| v == 9));
        }
    }

    #[test]
    fn large_buffers_are_aligned_to_huge_pages_when_enabled() {
        let b = HugeBuf::filled(0u8, 3 * HUGE_PAGE).unwrap();
        let aligned = (b.as_ptr() as usize).is_multiple_of(HUGE_PAGE);
        assert_eq!(aligned, huge_pages_enabled());
        let small = HugeBuf::filled([0u64; 8], 10).unwrap();
        assert!((small.as_ptr() as usize).is_multiple_of(std::mem::align_of::<[u64; 8]>()));
    }

    #[test]
    fn an_impossible_length_is_an_error_not_a_panic() {
        let e = HugeBuf::<u64>::filled(0, usize::MAX / 4).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn zero_sized_values_allocate_nothing() {
        let b = HugeBuf::filled((), 1000).unwrap();
        assert_eq!(b.len(), 1000);
        assert_eq!(b.clone().len(), 1000);
    }
}
