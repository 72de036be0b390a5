//! Non-x86 targets: no specialised tile kernels; [`super::tile`] uses its generic build.

use super::tile::Kernels;

/// No specialised kernels here.
pub(crate) fn available() -> Vec<Kernels> {
    Vec::new()
}
