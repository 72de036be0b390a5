//! The crate's error type. Every fallible public function returns [`KernelError`]; the messages
//! are one line and name the argument that was wrong.

use crate::Isa;

/// What went wrong in a `tritter-kernels` call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// The kernel cap variable named no instruction set.
    #[error("{var}={value:?} is not one of scalar, portable, avx2, avx512, avx512vnni")]
    BadKernelCap {
        /// The environment variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A matrix dimension was zero or too large for the kernels' i32 accumulators.
    #[error("invalid matrix shape {n}x{k}: {reason}")]
    BadShape {
        /// Rows (output features).
        n: usize,
        /// Columns (input features).
        k: usize,
        /// Why the shape was rejected.
        reason: &'static str,
    },
    /// A slice argument had the wrong number of elements.
    #[error("`{what}` has {got} elements, expected {expected}")]
    BadLength {
        /// The argument's name.
        what: &'static str,
        /// Elements required.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A ternary weight outside {-1, 0, 1}.
    #[error("ternary weight at index {index} is {value}, expected -1, 0 or 1")]
    NotTernary {
        /// Row-major index of the offending value.
        index: usize,
        /// The value found.
        value: i8,
    },
    /// A 2-bit code of 3 in a Hugging Face packed tensor (valid codes are 0, 1, 2).
    #[error("packed weight byte {byte} holds the invalid 2-bit code 3 (row {row}, column {col})")]
    BadCode {
        /// Index of the byte in the packed tensor.
        byte: usize,
        /// Weight row the code belongs to.
        row: usize,
        /// Weight column the code belongs to.
        col: usize,
    },
    /// A buffer whose byte size does not fit the address space.
    #[error("`{what}` of {len} elements is too large to allocate")]
    TooLarge {
        /// What was being allocated.
        what: &'static str,
        /// Elements asked for.
        len: usize,
    },
    /// A float weight that is NaN or infinite.
    #[error("weight at index {index} is not finite ({value})")]
    NotFinite {
        /// Row-major index of the offending value.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// The caller forced an instruction set this CPU does not have.
    #[error("instruction set {isa:?} is not available on this CPU")]
    IsaUnavailable {
        /// The instruction set asked for.
        isa: Isa,
    },
    /// A CUDA driver call or kernel launch failed (feature `cuda`), or a GPU buffer was the
    /// wrong size.
    #[error("CUDA: {0}")]
    Cuda(String),
}
