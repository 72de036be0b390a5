//! Per-microarchitecture tuning of the streaming kernels, chosen once at run time: how far ahead
//! (in bytes) the weight-streaming loops — the LM-head row dots and the one-token ternary GEMV
//! tile — ask for their data with software prefetches.
//!
//! Measured (docs/BENCHMARKS.md): on an Intel Xeon (CPU family 6 model 207, AVX-512 VNNI) one
//! core's hardware prefetchers keep too few lines in flight to stream from DRAM at the memory's
//! speed; a `prefetcht0` per 64-byte line 4 KB ahead took the 2B4T-shaped ternary GEMVs, run cold
//! from DRAM, from 10.9–12.1 to 16.2–21.1 GB/s and the f16 head from 0.71–0.86 to 0.80–1.02 of
//! the copy bandwidth; on AMD Zen 3 the hardware prefetchers alone already stream at the copy
//! bandwidth, so AMD (and every CPU not known to gain) gets no software prefetch. The
//! environment variable `TRITTER_PREFETCH_BYTES` overrides the choice (0 turns it off), for
//! sweeps on a new machine. Prefetches never change a result: every kernel stays equal to its
//! scalar specification whatever the distance.

use std::sync::OnceLock;

/// The tuning this process runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// CPU vendor from `cpuid` (`GenuineIntel`, `AuthenticAMD`, ...), or `unknown`.
    pub vendor: &'static str,
    /// Software prefetch distance of the streaming loops in bytes (0: none).
    pub prefetch_bytes: usize,
    /// Where `prefetch_bytes` came from: `vendor default` or `TRITTER_PREFETCH_BYTES`.
    pub source: &'static str,
}

/// Prefetch distance on Intel: 4 KB (the sweep in docs/BENCHMARKS.md, cold ternary GEMVs in GB/s:
/// 1 KB 12.6–14.7, 2 KB 15.0–15.9, 4 KB 18.4–21.1, 8 KB 16.5–21.7, 16 KB 15.2–17.5, none 10.9–12.1).
const INTEL_PREFETCH_BYTES: usize = 4096;

/// Largest accepted override (1 MB): anything further is certainly a typo.
const MAX_PREFETCH_BYTES: usize = 1 << 20;

/// The tuning for this CPU, chosen on the first call.
pub fn tuning() -> &'static Tuning {
    static T: OnceLock<Tuning> = OnceLock::new();
    T.get_or_init(|| {
        choose(
            vendor(),
            std::env::var("TRITTER_PREFETCH_BYTES").ok().as_deref(),
        )
    })
}

/// The prefetch distance in bytes the streaming loops use (0: none).
#[inline]
pub(crate) fn prefetch_bytes() -> usize {
    tuning().prefetch_bytes
}

/// The tuning for `vendor` with the override `env` (the variable's value, if set). An override
/// that is not a whole number of bytes up to 1 MB is ignored (the vendor default stays).
fn choose(vendor: &'static str, env: Option<&str>) -> Tuning {
    let default = if vendor == "GenuineIntel" {
        INTEL_PREFETCH_BYTES
    } else {
        0
    };
    match env.and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(b) if b <= MAX_PREFETCH_BYTES => Tuning {
            vendor,
            prefetch_bytes: b,
            source: "TRITTER_PREFETCH_BYTES",
        },
        _ => Tuning {
            vendor,
            prefetch_bytes: default,
            source: "vendor default",
        },
    }
}

/// The CPU vendor string from `cpuid` leaf 0.
#[cfg(target_arch = "x86_64")]
fn vendor() -> &'static str {
    let r = std::arch::x86_64::__cpuid(0);
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&r.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&r.edx.to_le_bytes());
    id[8..].copy_from_slice(&r.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => "GenuineIntel",
        b"AuthenticAMD" => "AuthenticAMD",
        b"HygonGenuine" => "HygonGenuine",
        _ => "unknown",
    }
}

/// The CPU vendor: not read off x86-64 (no software prefetch is tuned there).
#[cfg(not(target_arch = "x86_64"))]
fn vendor() -> &'static str {
    "unknown"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intel_prefetches_and_others_do_not() {
        assert_eq!(
            choose("GenuineIntel", None).prefetch_bytes,
            INTEL_PREFETCH_BYTES
        );
        assert_eq!(choose("AuthenticAMD", None).prefetch_bytes, 0);
        assert_eq!(choose("unknown", None).prefetch_bytes, 0);
        assert_eq!(choose("AuthenticAMD", None).source, "vendor default");
    }

    #[test]
    fn the_override_wins_and_bad_values_are_ignored() {
        let t = choose("AuthenticAMD", Some(" 2048 "));
        assert_eq!(
            (t.prefetch_bytes, t.source),
            (2048, "TRITTER_PREFETCH_BYTES")
        );
        assert_eq!(choose("GenuineIntel", Some("0")).prefetch_bytes, 0);
        for bad in ["-1", "4k", "", "99999999999"] {
            let t = choose("GenuineIntel", Some(bad));
            assert_eq!(
                (t.prefetch_bytes, t.source),
                (INTEL_PREFETCH_BYTES, "vendor default")
            );
        }
    }

    #[test]
    fn the_vendor_is_read() {
        // On x86-64 cpuid always answers; the string is one of the known ones or `unknown`.
        assert!(!tuning().vendor.is_empty());
    }
}
