//! Non-x86 targets: no specialised builds; [`super::fused`] uses its generic build, written so
//! the compiler vectorises it.

use super::fused::FusedKernels;

/// Always `None` here.
pub(crate) fn detect() -> Option<FusedKernels> {
    None
}

/// No specialised builds here.
#[cfg(test)]
pub(crate) fn available() -> Vec<FusedKernels> {
    Vec::new()
}
