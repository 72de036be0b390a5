//! x86-64 back end: run-time feature detection and dispatch of the AVX2 / AVX-512 tiles and
//! quantisers, and the LM-head inner loops (`head`). Every tile and quantiser here must equal
//! the scalar specification (`crate::scalar`, `crate::quant::quantize_row_i8_scalar`) bit for
//! bit; the head loops equal `crate::head`'s scalar specs up to summation order.

mod avx2;
mod avx512;
mod head;

pub(crate) use head::{pick_head_f16, pick_head_f32, pick_head_i8};

use std::ops::Range;

use crate::format::{BlockT2, TernaryMatrix};
use crate::matmul::Sink;
use crate::Isa;

/// The SIMD instruction sets this CPU supports, in increasing order of preference.
pub(crate) fn detect() -> Vec<Isa> {
    let mut isas = Vec::new();
    if is_x86_feature_detected!("avx2") {
        isas.push(Isa::Avx2);
    }
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
        isas.push(Isa::Avx512);
        if is_x86_feature_detected!("avx512vnni") {
            isas.push(Isa::Avx512Vnni);
        }
    }
    isas
}

/// Asks for the cache line `pf` bytes past `p` when `pf > 0` (`crate::tuning`): a hint that
/// never faults and never changes a result.
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(p: *const T, pf: usize) {
    if pf > 0 {
        // SAFETY: a prefetch only hints the cache and never faults, even for an address past
        // the slice; `wrapping_add` makes no in-bounds claim.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.cast::<i8>().wrapping_add(pf),
            )
        }
    }
}

/// Tokens per GEMM tile for `isa` (the activation packing in `crate::matmul` follows it).
pub(crate) fn tile_tokens(isa: Isa) -> usize {
    match isa {
        Isa::Scalar | Isa::Portable => 1,
        Isa::Avx2 => 8,
        Isa::Avx512 | Isa::Avx512Vnni => 16,
    }
}

/// Quantises one row with `isa`'s SIMD quantiser; `None` for [`Isa::Scalar`] and
/// [`Isa::Portable`].
///
/// # Safety
/// `isa` must be one [`detect`] returned; `x.len() == out.len()`.
pub(crate) unsafe fn quantize_row(isa: Isa, x: &[f32], out: &mut [i8]) -> Option<(f32, i32)> {
    // SAFETY: the caller guarantees the CPU features and equal lengths.
    unsafe {
        match isa {
            Isa::Scalar | Isa::Portable => None,
            Isa::Avx2 => Some(avx2::quantize_row(x, out)),
            Isa::Avx512 | Isa::Avx512Vnni => Some(avx512::quantize_row(x, out)),
        }
    }
}

/// A tile function: one panel's `nb` blocks × `M` packed tokens → corrected dot products.
type TileFn<const M: usize> =
    unsafe fn(*const BlockT2, usize, *const i8, &[i32; M]) -> [[i32; 16]; M];

/// Runs `tile` over `panels` for one token tile and hands each result to `sink`.
///
/// # Safety
/// `tile`'s CPU features are present; `xp` holds `M · k_pad` packed bytes; `sums.len() == M`;
/// no other thread writes the same `(token, panel)` pairs of `sink`.
unsafe fn panels_loop<const M: usize, S: Sink>(
    tile: TileFn<M>,
    w: &TernaryMatrix,
    xp: &[i8],
    sums: &[i32],
    t0: usize,
    panels: Range<usize>,
    sink: &S,
) {
    let Ok(sums) = <&[i32; M]>::try_from(sums) else {
        return;
    };
    let nb = w.blocks_per_panel();
    for p in panels {
        // SAFETY: the panel has nb blocks and xp holds nb · M · 16 bytes (caller).
        let vals = unsafe { tile(w.panel(p).as_ptr(), nb, xp.as_ptr(), sums) };
        for (t, v) in vals.iter().enumerate() {
            // SAFETY: (t0 + t, p) is this task's own output (caller).
            unsafe { sink.put(t0 + t, p, v) };
        }
    }
}

/// Runs one token tile (`sums.len()` tokens packed in `xp`) against `panels` with `isa`.
/// Returns `false` (doing nothing) when `isa` has no tile of that many tokens.
///
/// # Safety
/// `isa` is one [`detect`] returned; the rest as for [`panels_loop`].
pub(crate) unsafe fn run_tile<S: Sink>(
    isa: Isa,
    w: &TernaryMatrix,
    xp: &[i8],
    sums: &[i32],
    t0: usize,
    panels: Range<usize>,
    sink: &S,
) -> bool {
    // `go!(M, tile)`: run the tile function monomorphised for M tokens.
    macro_rules! go {
        ($m:literal, $tile:expr) => {
            // SAFETY: forwarded caller guarantees (features present, sizes, disjoint output).
            unsafe { panels_loop::<$m, S>($tile, w, xp, sums, t0, panels, sink) }
        };
    }
    match (isa, sums.len()) {
        (Isa::Avx2, 1) => go!(1, avx2::tile::<1>),
        (Isa::Avx2, 2) => go!(2, avx2::tile::<2>),
        (Isa::Avx2, 3) => go!(3, avx2::tile::<3>),
        (Isa::Avx2, 4) => go!(4, avx2::tile::<4>),
        (Isa::Avx2, 5) => go!(5, avx2::tile::<5>),
        (Isa::Avx2, 6) => go!(6, avx2::tile::<6>),
        (Isa::Avx2, 7) => go!(7, avx2::tile::<7>),
        (Isa::Avx2, 8) => go!(8, avx2::tile::<8>),
        (Isa::Avx512Vnni, 1) => go!(1, avx512::tile_vnni_gemv),
        (Isa::Avx512Vnni, 2) => go!(2, avx512::tile_vnni::<2, 2>),
        (Isa::Avx512Vnni, 3) => go!(3, avx512::tile_vnni::<3, 2>),
        (Isa::Avx512Vnni, 4) => go!(4, avx512::tile_vnni::<4, 1>),
        (Isa::Avx512Vnni, 5) => go!(5, avx512::tile_vnni::<5, 1>),
        (Isa::Avx512Vnni, 6) => go!(6, avx512::tile_vnni::<6, 1>),
        (Isa::Avx512Vnni, 7) => go!(7, avx512::tile_vnni::<7, 1>),
        (Isa::Avx512Vnni, 8) => go!(8, avx512::tile_vnni::<8, 1>),
        (Isa::Avx512Vnni, 9) => go!(9, avx512::tile_vnni::<9, 1>),
        (Isa::Avx512Vnni, 10) => go!(10, avx512::tile_vnni::<10, 1>),
        (Isa::Avx512Vnni, 11) => go!(11, avx512::tile_vnni::<11, 1>),
        (Isa::Avx512Vnni, 12) => go!(12, avx512::tile_vnni::<12, 1>),
        (Isa::Avx512Vnni, 13) => go!(13, avx512::tile_vnni::<13, 1>),
        (Isa::Avx512Vnni, 14) => go!(14, avx512::tile_vnni::<14, 1>),
        (Isa::Avx512Vnni, 15) => go!(15, avx512::tile_vnni::<15, 1>),
        (Isa::Avx512Vnni, 16) => go!(16, avx512::tile_vnni::<16, 1>),
        (Isa::Avx512, 1) => go!(1, avx512::tile_bw::<1>),
        (Isa::Avx512, 2) => go!(2, avx512::tile_bw::<2>),
        (Isa::Avx512, 3) => go!(3, avx512::tile_bw::<3>),
        (Isa::Avx512, 4) => go!(4, avx512::tile_bw::<4>),
        (Isa::Avx512, 5) => go!(5, avx512::tile_bw::<5>),
        (Isa::Avx512, 6) => go!(6, avx512::tile_bw::<6>),
        (Isa::Avx512, 7) => go!(7, avx512::tile_bw::<7>),
        (Isa::Avx512, 8) => go!(8, avx512::tile_bw::<8>),
        (Isa::Avx512, 9) => go!(9, avx512::tile_bw::<9>),
        (Isa::Avx512, 10) => go!(10, avx512::tile_bw::<10>),
        (Isa::Avx512, 11) => go!(11, avx512::tile_bw::<11>),
        (Isa::Avx512, 12) => go!(12, avx512::tile_bw::<12>),
        (Isa::Avx512, 13) => go!(13, avx512::tile_bw::<13>),
        (Isa::Avx512, 14) => go!(14, avx512::tile_bw::<14>),
        (Isa::Avx512, 15) => go!(15, avx512::tile_bw::<15>),
        (Isa::Avx512, 16) => go!(16, avx512::tile_bw::<16>),
        _ => return false,
    }
    true
}
