//! Storage kinds of the CPU KV cache: f32, f16, bf16, or KIVI-style INT4 with a group size and
//! a full-precision residual of recent tokens; their names on the command line and their bytes
//! per token.
//!
//! The GPU cache has a kind of its own (`tritter_kernels::gpu_ref::GpuKvKind`, the kernels'
//! discriminant): it stores no bf16 (bf16 is kept as f16) and has one INT4 layout with no group
//! or residual to choose (per token, groups of channels fixed by `head_dim`, no f32 tail), so
//! the two enums describe different storage and are not merged; `GpuKvKind::parse` reads these
//! names.

use crate::attn::{config_err, Result};

/// Storage kind of a KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvKind {
    /// 4 bytes per element.
    F32,
    /// IEEE half, 2 bytes per element.
    F16,
    /// bfloat16, 2 bytes per element.
    Bf16,
    /// KIVI INT4: `group` tokens per key group and channels per value group (32 or 64), the
    /// newest `residual` tokens (≥ `group`) kept in f32.
    Int4 {
        /// Group size.
        group: usize,
        /// Full-precision recent tokens.
        residual: usize,
    },
}

impl KvKind {
    /// INT4 with KIVI's defaults scaled to 4 bits: group 64, residual 128.
    pub const INT4: KvKind = KvKind::Int4 {
        group: 64,
        residual: 128,
    };

    /// Parses `f32`, `f16`, `bf16`, `int4` (group 64, residual 128) or `int4-gG[-rR]`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            config_err(
                "kv cache kind",
                format!("{s:?} (expected f32, f16, bf16, int4 or int4-g32[-r128])"),
            )
        };
        match s {
            "f32" => return Ok(KvKind::F32),
            "f16" => return Ok(KvKind::F16),
            "bf16" => return Ok(KvKind::Bf16),
            "int4" => return Ok(KvKind::INT4),
            _ => {}
        }
        let rest = s.strip_prefix("int4-g").ok_or_else(bad)?;
        let (g, r) = match rest.split_once("-r") {
            Some((g, r)) => (g, Some(r)),
            None => (rest, None),
        };
        let group = g.parse().map_err(|_| bad())?;
        let residual = match r {
            Some(r) => r.parse().map_err(|_| bad())?,
            None => 2 * group,
        };
        Ok(KvKind::Int4 { group, residual })
    }

    /// Short name (`f16`, `int4`, `int4-g32-r64`, ...).
    pub fn name(&self) -> String {
        match *self {
            KvKind::F32 => "f32".into(),
            KvKind::F16 => "f16".into(),
            KvKind::Bf16 => "bf16".into(),
            k if k == KvKind::INT4 => "int4".into(),
            KvKind::Int4 { group, residual } => format!("int4-g{group}-r{residual}"),
        }
    }

    /// Bytes per stored token per kv head for keys + values, excluding the INT4 residual and the
    /// block rounding (the planner adds those).
    pub fn bytes_per_token_head(&self, head_dim: usize) -> f64 {
        let d = head_dim as f64;
        match *self {
            KvKind::F32 => 8.0 * d,
            KvKind::F16 | KvKind::Bf16 => 4.0 * d,
            KvKind::Int4 { group, .. } => {
                let vg = group.min(head_dim) as f64;
                // codes d/2 each; key min+step (2 × f16) per channel per group of `group` tokens;
                // value min+step per `vg` channels per token.
                d + 4.0 * d / group as f64 + 4.0 * d / vg
            }
        }
    }
}
