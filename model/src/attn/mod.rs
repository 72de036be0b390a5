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
#[cfg(target_arch = "x86_64")]
mod fused_x86_values;
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

/// Environment variable capping the attention kernels' instruction set, for measuring the
/// builds other CPUs run on this one: `avx2` (as on CPUs without AVX-512), `avx2-plain` (the
/// same without AVX-VNNI in the INT4 value sums, as on CPUs before Alder Lake and Zen 5) or
/// `scalar` (the portable code). Unset or any other value: the best build the CPU supports.
/// Read once per process; [`tile_kernel_name`] and [`fused_kernel_name`] say what was chosen.
pub const KERNELS_VAR: &str = "TRITTER_ATTN_KERNELS";

/// The level [`KERNELS_VAR`] allows (see [`kernel_level`]), read once.
pub(crate) fn kernel_cap() -> u8 {
    static CAP: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| cap_of(std::env::var(KERNELS_VAR).ok().as_deref()))
}

/// Whether the AVX2 build's INT4 value sums may use AVX-VNNI where the CPU has it (not under
/// `avx2-plain`, see [`KERNELS_VAR`]), read once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx_vnni_allowed() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| std::env::var(KERNELS_VAR).ok().as_deref() != Some("avx2-plain"))
}

/// The level a value of [`KERNELS_VAR`] allows.
fn cap_of(value: Option<&str>) -> u8 {
    match value {
        Some("avx2" | "avx2-plain") => 1,
        Some("scalar") => 0,
        _ => 2,
    }
}

/// Level of a kernel build's name: AVX-512 2, AVX2 1, portable code 0.
pub(crate) fn kernel_level(name: &str) -> u8 {
    match name {
        "avx512" => 2,
        "avx2" => 1,
        _ => 0,
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

#[cfg(test)]
mod kernel_choice_tests {
    use super::*;

    /// The cap admits exactly the builds at or below it, by name, and unknown values change
    /// nothing.
    #[test]
    fn the_cap_admits_the_builds_at_or_below_it() {
        let names = ["avx512", "avx2", "scalar", "generic"];
        let admitted = |v: Option<&str>| -> Vec<&str> {
            let cap = cap_of(v);
            names
                .into_iter()
                .filter(|n| kernel_level(n) <= cap)
                .collect()
        };
        assert_eq!(admitted(None), names);
        assert_eq!(admitted(Some("AVX2")), names);
        assert_eq!(admitted(Some("avx2")), ["avx2", "scalar", "generic"]);
        assert_eq!(admitted(Some("avx2-plain")), ["avx2", "scalar", "generic"]);
        assert_eq!(admitted(Some("scalar")), ["scalar", "generic"]);
        // Whatever the cap, the choice made in this process is one the cap admits.
        assert!(kernel_level(tile_kernel_name()) <= kernel_cap());
        assert!(kernel_level(fused_kernel_name()) <= kernel_cap());
    }
}
