//! Per-microarchitecture tuning of the streaming kernels, chosen once at run time: how far ahead
//! (in bytes) the weight-streaming loops — the LM-head row dots and the one-token ternary GEMV
//! tile — ask for their data with software prefetches.
//!
//! Measured (docs/BENCHMARKS.md): on an Intel Xeon (CPU family 6 model 207, AVX-512 VNNI) one
//! core's hardware prefetchers keep too few lines in flight to stream from DRAM at the memory's
//! speed; a `prefetcht0` per 64-byte line 4 KB ahead took the 2B4T-shaped ternary GEMVs, run cold
//! from DRAM, from 10.9–12.1 to 16.2–21.1 GB/s and the f16 head from 0.71–0.86 to 0.80–1.02 of
//! the copy bandwidth; on AMD Zen 3 and Zen 4 the hardware prefetchers alone already stream at
//! the copy bandwidth (Zen 4: no gain from 4 KB, alternated runs), while on Zen 5 (CPU family
//! 26) the same 4 KB took the 2B4T decode with the f16 head from a median 29.3 to 37.8 tok/s
//! (sweep of 0–16 KB, alternated processes). So Intel and AMD from family 26 on prefetch 4 KB
//! ahead, and every other CPU (not known to gain) gets no software prefetch. The
//! environment variable `TRITTER_PREFETCH_BYTES` overrides the choice (0 turns it off), for
//! sweeps on a new machine. Prefetches never change a result: every kernel stays equal to its
//! scalar specification whatever the distance.

use std::sync::OnceLock;

/// The tuning this process runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// CPU vendor from `cpuid` (`GenuineIntel`, `AuthenticAMD`, ...), or `unknown`.
    pub vendor: &'static str,
    /// CPU family from `cpuid` leaf 1 (base plus extended family; 0 off x86-64).
    pub family: u32,
    /// Software prefetch distance of the streaming loops in bytes (0: none).
    pub prefetch_bytes: usize,
    /// Where `prefetch_bytes` came from: `cpu default` (vendor and family) or
    /// `TRITTER_PREFETCH_BYTES`.
    pub source: &'static str,
}

/// Prefetch distance on Intel: 4 KB (the sweep in docs/BENCHMARKS.md, cold ternary GEMVs in GB/s:
/// 1 KB 12.6–14.7, 2 KB 15.0–15.9, 4 KB 18.4–21.1, 8 KB 16.5–21.7, 16 KB 15.2–17.5, none 10.9–12.1).
const INTEL_PREFETCH_BYTES: usize = 4096;

/// Prefetch distance on AMD Zen 5 and later: 4 KB (2B4T decode, f16 head, 2 threads, medians of 4
/// alternated rounds in tok/s: none 29.3, 1 KB 31.9, 2 KB 32.4, 4 KB 37.8, 8 KB 34.6, 16 KB 33.6).
const ZEN5_PREFETCH_BYTES: usize = 4096;

/// First AMD CPU family whose cores gain from the software prefetch (Zen 5).
const ZEN5_FAMILY: u32 = 0x1a;

/// Largest accepted override (1 MB): anything further is certainly a typo.
const MAX_PREFETCH_BYTES: usize = 1 << 20;

/// The tuning for this CPU, chosen on the first call.
pub fn tuning() -> &'static Tuning {
    static T: OnceLock<Tuning> = OnceLock::new();
    T.get_or_init(|| {
        choose(
            vendor(),
            family(),
            std::env::var("TRITTER_PREFETCH_BYTES").ok().as_deref(),
        )
    })
}

/// The prefetch distance in bytes the streaming loops use (0: none).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn prefetch_bytes() -> usize {
    tuning().prefetch_bytes
}

/// The tuning for `vendor` and `family` with the override `env` (the variable's value, if set).
/// An override that is not a whole number of bytes up to 1 MB is ignored (the CPU's default
/// stays).
fn choose(vendor: &'static str, family: u32, env: Option<&str>) -> Tuning {
    let default = match vendor {
        "GenuineIntel" => INTEL_PREFETCH_BYTES,
        "AuthenticAMD" if family >= ZEN5_FAMILY => ZEN5_PREFETCH_BYTES,
        _ => 0,
    };
    match env.and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(b) if b <= MAX_PREFETCH_BYTES => Tuning {
            vendor,
            family,
            prefetch_bytes: b,
            source: "TRITTER_PREFETCH_BYTES",
        },
        _ => Tuning {
            vendor,
            family,
            prefetch_bytes: default,
            source: "cpu default",
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

/// The CPU family from `cpuid` leaf 1: the base family, plus the extended family when the base
/// is 15 (as both vendors define it: Zen 4 is 25, Zen 5 26).
#[cfg(target_arch = "x86_64")]
fn family() -> u32 {
    family_of(std::arch::x86_64::__cpuid(1).eax)
}

/// The CPU family: not read off x86-64.
#[cfg(not(target_arch = "x86_64"))]
fn family() -> u32 {
    0
}

/// The family encoded in `cpuid` leaf 1's `eax`.
#[cfg(any(target_arch = "x86_64", test))]
fn family_of(eax: u32) -> u32 {
    let base = (eax >> 8) & 0xf;
    if base == 0xf {
        base + ((eax >> 20) & 0xff)
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intel_and_zen5_prefetch_and_others_do_not() {
        assert_eq!(
            choose("GenuineIntel", 6, None).prefetch_bytes,
            INTEL_PREFETCH_BYTES
        );
        // Zen 3 and Zen 4 (family 25) stream well alone; Zen 5 (26) gains.
        assert_eq!(choose("AuthenticAMD", 25, None).prefetch_bytes, 0);
        assert_eq!(
            choose("AuthenticAMD", 26, None).prefetch_bytes,
            ZEN5_PREFETCH_BYTES
        );
        assert_eq!(choose("unknown", 26, None).prefetch_bytes, 0);
        assert_eq!(choose("AuthenticAMD", 25, None).source, "cpu default");
    }

    #[test]
    fn the_family_adds_the_extended_family_to_base_15() {
        // cpuid leaf 1 eax of the hosts in docs/BENCHMARKS.md: Zen 4 (family 25 model 17 stepping
        // 1), Zen 5 (26, 2, 1), Intel Emerald Rapids (6, 207, 2).
        assert_eq!(family_of(0x00A1_0F11), 25);
        assert_eq!(family_of(0x00B0_0F21), 26);
        assert_eq!(family_of(0x000C_06F2), 6);
    }

    #[test]
    fn the_override_wins_and_bad_values_are_ignored() {
        let t = choose("AuthenticAMD", 25, Some(" 2048 "));
        assert_eq!(
            (t.prefetch_bytes, t.source),
            (2048, "TRITTER_PREFETCH_BYTES")
        );
        assert_eq!(choose("GenuineIntel", 6, Some("0")).prefetch_bytes, 0);
        for bad in ["-1", "4k", "", "99999999999"] {
            let t = choose("GenuineIntel", 6, Some(bad));
            assert_eq!(
                (t.prefetch_bytes, t.source),
                (INTEL_PREFETCH_BYTES, "cpu default")
            );
        }
    }

    #[test]
    fn the_vendor_is_read() {
        // On x86-64 cpuid always answers; the string is one of the known ones or `unknown`.
        assert!(!tuning().vendor.is_empty());
    }
}
