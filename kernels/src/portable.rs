//! Back end for targets without x86-64 SIMD kernels: no SIMD instruction set is reported, so
//! every call runs the scalar specification (`crate::scalar`), and the LM heads run the
//! portable loops of `crate::head`.

use std::ops::Range;

use half::f16;

use crate::format::TernaryMatrix;
use crate::head::RowDot;
use crate::matmul::Sink;
use crate::Isa;

/// No SIMD instruction sets on this target.
pub(crate) fn detect() -> Vec<Isa> {
    Vec::new()
}

/// Tokens per tile: the scalar path packs one token per tile.
pub(crate) fn tile_tokens(_isa: Isa) -> usize {
    1
}

/// No SIMD quantiser here.
///
/// # Safety
/// None needed; `unsafe` only to match the x86-64 back end's signature.
pub(crate) unsafe fn quantize_row(_isa: Isa, _x: &[f32], _out: &mut [i8]) -> Option<(f32, i32)> {
    None
}

/// No SIMD tiles here: always `false`, so the caller runs the scalar tile.
///
/// # Safety
/// None needed; `unsafe` only to match the x86-64 back end's signature.
pub(crate) unsafe fn run_tile<S: Sink>(
    _isa: Isa,
    _w: &TernaryMatrix,
    _xp: &[i8],
    _sums: &[i32],
    _t0: usize,
    _panels: Range<usize>,
    _sink: &S,
) -> bool {
    false
}

/// No SIMD f16 head loop here: `crate::head` runs its portable one.
pub(crate) fn pick_head_f16(_cap: Isa) -> Option<(RowDot<f16>, &'static str)> {
    None
}

/// No SIMD f32 head loop here: `crate::head` runs its portable one.
pub(crate) fn pick_head_f32(_cap: Isa) -> Option<RowDot<f32>> {
    None
}

/// No SIMD int8 head loop here: `crate::head` runs its portable one.
pub(crate) fn pick_head_i8(_cap: Isa) -> Option<RowDot<i8>> {
    None
}
