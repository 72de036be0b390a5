//! Non-x86 targets: no specialised builds; [`super::fused`] uses its generic build, written so
//! the compiler vectorises it.

use super::fused::FusedKernels;

/// No specialised builds here.
pub(crate) fn available() -> Vec<FusedKernels> {
    Vec::new()
}
