//! Attention machinery on plain `f32` slices: composable masks and block masks ([`mask`]), the
//! fused tiled online-softmax kernels for prefill and decode ([`flash`]), per-layer KV caches with
//! rolling sink windows and a KIVI-style INT4 kind ([`kv`], [`int4`]), attention modes from the
//! model config ([`mode`]), a naive reference used by the tests ([`reference`]) and the fused
//! differentiable attention of CPU training ([`train_op`]).
//!
//! Everything here works on row-major slices with explicit shape arguments so that the candle
//! transformer can wrap it; no candle types appear in the hot paths. The kernels must equal the
//! naive masked softmax attention (`softmax(q kᵀ · scale + mask) v`) within float tolerance.

pub mod flash;
mod fused;
#[cfg(target_arch = "x86_64")]
#[path = "fused_x86.rs"]
mod fused_arch;
#[cfg(not(target_arch = "x86_64"))]
#[path = "fused_other.rs"]
mod fused_arch;
mod fused_int4;
mod fused_int4_values;
#[cfg(target_arch = "x86_64")]
mod fused_x86_int4;
pub mod int4;
pub mod kv;
mod lanes;
pub mod mask;
pub mod mode;
pub mod packed;
pub mod reference;
mod rope;
mod tile;
#[cfg(target_arch = "x86_64")]
#[path = "tile_x86.rs"]
mod tile_arch;
#[cfg(not(target_arch = "x86_64"))]
#[path = "tile_other.rs"]
mod tile_arch;
pub mod train_op;
mod train_op_kernel;

pub use flash::{
    attention_cached, attention_decode, attention_prefill, attention_prefill_blocks, AttnShape,
};
pub use kv::{KvCache, KvCacheConfig, KvKind};
pub use mask::{BlockMask, BlockMaskCache, Mask, TileKind};
pub use mode::{mean_pool, AttentionMode, MaskSpec};
pub use rope::{rotate_half, RopeShift};

/// Errors of the attention module: bad shapes and bad configuration, each naming what was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttnError {
    /// A slice length does not match the shape it was given with.
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        /// Which argument was wrong.
        what: &'static str,
        /// Length the shape implies.
        expected: usize,
        /// Length actually passed.
        got: usize,
    },
    /// A configuration value is out of range or inconsistent with another.
    #[error("invalid {what}: {why}")]
    Config {
        /// Which setting was wrong.
        what: &'static str,
        /// Why it was rejected.
        why: String,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, AttnError>;

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(AttnError::Length {
            what,
            expected,
            got,
        })
    }
}

pub(crate) fn config_err(what: &'static str, why: impl Into<String>) -> AttnError {
    AttnError::Config {
        what,
        why: why.into(),
    }
}

/// Name of the tile kernels chosen for this CPU (`avx512`, `avx2` or `scalar`).
pub fn tile_kernel_name() -> &'static str {
    tile::kernels().name
}

/// Name of the fused decode kernels (f16 and INT4 caches read in registers) chosen for this CPU.
pub fn fused_kernel_name() -> &'static str {
    fused::kernels().name
}
