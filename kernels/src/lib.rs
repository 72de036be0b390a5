//! `tritter-kernels`: ternary (BitNet b1.58) weight packing, int8 activation quantisation and
//! CPU GEMV/GEMM kernels. Works on plain slices; never allocates tensors (the model crate wraps
//! these in candle ops). SIMD paths are chosen at run time and equal the scalar specification
//! bit for bit.
//!
//! - [`format`]: the T2 block format, [`TernaryMatrix`], Hugging Face layout conversion.
//! - [`quant`]: per-token int8 activation quantisation ([`quantize_row_i8`]).
//! - [`head`]: LM-head GEMVs: f16 ([`gemv_f16`]), f32 ([`gemv_f32`]), int8 per row ([`gemv_i8`]).
//! - [`gpu_ref`]: host statements of the GPU formats (G2 ternary layout, INT4 KV groups,
//!   window/sink slots) that the CUDA kernels must match.
//! - `cuda` (feature `cuda`): launches of the CUDA kernels in `kernels/cuda/` through cudarc.
//! - [`matmul`]: integer [`gemv`]/[`gemm`] over T2 matrices, the f32 BitLinear product
//!   [`ternary_matmul`], the run-time instruction-set choice ([`Isa`]) and forced-ISA variants
//!   for tests and benchmarks.
//! - [`tuning`]: per-microarchitecture choices made at run time (software prefetch distance).

mod autovec;
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
pub mod format;
pub mod gpu_ref;
pub mod head;
pub mod huge;
pub mod matmul;
pub mod quant;
mod scalar;
pub mod tuning;

#[cfg(target_arch = "x86_64")]
#[path = "x86/mod.rs"]
mod arch;
#[cfg(not(target_arch = "x86_64"))]
#[path = "portable.rs"]
mod arch;

#[cfg(test)]
mod tests;

pub use error::KernelError;
pub use format::{BlockT2, TernaryMatrix};
pub use head::{
    gemv_f16, gemv_f16_isa, gemv_f16_scalar, gemv_f32, gemv_i8, gemv_i8_scalar, I8Rows,
};
pub use huge::HugeBuf;
pub use matmul::{
    available_isas, best_isa, gemm, gemm_with, gemv, gemv_with, isa_cap, ternary_matmul,
    ternary_matmul_with, Isa, KERNELS_VAR,
};
pub use quant::{quantize_row_i8, quantize_row_i8_scalar};
