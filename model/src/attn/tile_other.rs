//! Non-x86 targets: no specialised tile kernels; [`super::tile`] uses its generic build.

use super::tile::Kernels;

/// Always `None` here.
pub(crate) fn detect() -> Option<Kernels> {
    None
}

/// No specialised kernels here.
#[cfg(test)]
pub(crate) fn available() -> Vec<Kernels> {
    Vec::new()
}
