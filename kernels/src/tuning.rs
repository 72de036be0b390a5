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
//! ahead, and every other CPU (not known to gain) gets no software prefetch. A distance measured
//! on the machine itself (`tritter bench tune`, which sweeps the distances and caches the winner)
//! replaces that default through [`install_tuned`]; the environment variable
//! `TRITTER_PREFETCH_BYTES` overrides both (0 turns it off). [`set_sweep_prefetch`] sets the
//! distance for the kernels that run next, for sweeps inside one process. Prefetches never
//! change a result: every kernel stays equal to its scalar specification whatever the distance.

use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Where `prefetch_bytes` came from: `cpu default` (vendor and family), `tuned` (measured
    /// on this machine, [`install_tuned`]) or `TRITTER_PREFETCH_BYTES`.
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

/// Largest accepted distance (1 MB): anything further is certainly a typo.
pub const MAX_PREFETCH_BYTES: usize = 1 << 20;

/// The environment variable that overrides every other choice of distance.
pub const PREFETCH_VAR: &str = "TRITTER_PREFETCH_BYTES";

/// The tuning of this process, chosen once.
static TUNING: OnceLock<Tuning> = OnceLock::new();

/// No sweep distance set ([`SWEEP`]).
const NO_SWEEP: usize = usize::MAX;

/// The distance a sweep set with [`set_sweep_prefetch`], or [`NO_SWEEP`].
static SWEEP: AtomicUsize = AtomicUsize::new(NO_SWEEP);

/// The tuning for this CPU, chosen on the first call (or by an earlier [`install_tuned`]).
pub fn tuning() -> &'static Tuning {
    TUNING.get_or_init(|| choose(vendor(), family(), env().as_deref(), None))
}

/// The CPU's default distance: what [`tuning`] gives without a measurement or an override.
pub fn cpu_default_prefetch_bytes() -> usize {
    default_for(vendor(), family())
}

/// Installs a distance measured on this machine in place of the CPU's default, before any kernel
/// has asked for the tuning; [`PREFETCH_VAR`] still wins. Returns whether it was installed: not
/// once the tuning has been chosen, nor a distance past [`MAX_PREFETCH_BYTES`].
pub fn install_tuned(bytes: usize) -> bool {
    bytes <= MAX_PREFETCH_BYTES
        && TUNING
            .set(choose(vendor(), family(), env().as_deref(), Some(bytes)))
            .is_ok()
}

/// Sets the distance every streaming kernel uses from now on, whatever [`tuning`] chose (`None`
/// returns to it): for sweeps that time several distances in one process. Clamped to
/// [`MAX_PREFETCH_BYTES`].
pub fn set_sweep_prefetch(bytes: Option<usize>) {
    let b = bytes.map_or(NO_SWEEP, |b| b.min(MAX_PREFETCH_BYTES));
    SWEEP.store(b, Ordering::Relaxed);
}

/// The prefetch distance in bytes the streaming loops use (0: none).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn prefetch_bytes() -> usize {
    match SWEEP.load(Ordering::Relaxed) {
        NO_SWEEP => tuning().prefetch_bytes,
        b => b,
    }
}

/// The override's value, if set.
fn env() -> Option<String> {
    std::env::var(PREFETCH_VAR).ok()
}

/// The distance known to suit `vendor` and `family` (module docs).
fn default_for(vendor: &str, family: u32) -> usize {
    match vendor {
        "GenuineIntel" => INTEL_PREFETCH_BYTES,
        "AuthenticAMD" if family >= ZEN5_FAMILY => ZEN5_PREFETCH_BYTES,
        _ => 0,
    }
}

/// The tuning for `vendor` and `family` with the override `env` (the variable's value, if set)
/// and a distance measured on this machine (`tuned`). An override that is not a whole number of
/// bytes up to 1 MB is ignored (the measured distance, else the CPU's default, stays).
fn choose(vendor: &'static str, family: u32, env: Option<&str>, tuned: Option<usize>) -> Tuning {
    let (prefetch_bytes, source) = match env.and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(b) if b <= MAX_PREFETCH_BYTES => (b, PREFETCH_VAR),
        _ => match tuned {
            Some(b) if b <= MAX_PREFETCH_BYTES => (b, "tuned"),
            _ => (default_for(vendor, family), "cpu default"),
        },
    };
    Tuning {
        vendor,
        family,
        prefetch_bytes,
        source,
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
            choose("GenuineIntel", 6, None, None).prefetch_bytes,
            INTEL_PREFETCH_BYTES
        );
        // Zen 3 and Zen 4 (family 25) stream well alone; Zen 5 (26) gains.
        assert_eq!(choose("AuthenticAMD", 25, None, None).prefetch_bytes, 0);
        assert_eq!(
            choose("AuthenticAMD", 26, None, None).prefetch_bytes,
            ZEN5_PREFETCH_BYTES
        );
        assert_eq!(choose("unknown", 26, None, None).prefetch_bytes, 0);
        assert_eq!(choose("AuthenticAMD", 25, None, None).source, "cpu default");
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
        let t = choose("AuthenticAMD", 25, Some(" 2048 "), None);
        assert_eq!(
            (t.prefetch_bytes, t.source),
            (2048, "TRITTER_PREFETCH_BYTES")
        );
        assert_eq!(choose("GenuineIntel", 6, Some("0"), None).prefetch_bytes, 0);
        for bad in ["-1", "4k", "", "99999999999"] {
            let t = choose("GenuineIntel", 6, Some(bad), None);
            assert_eq!(
                (t.prefetch_bytes, t.source),
                (INTEL_PREFETCH_BYTES, "cpu default")
            );
        }
    }

    #[test]
    fn a_measured_distance_replaces_the_default_but_not_the_override() {
        let t = choose("AuthenticAMD", 25, None, Some(8192));
        assert_eq!((t.prefetch_bytes, t.source), (8192, "tuned"));
        let t = choose("GenuineIntel", 6, None, Some(0));
        assert_eq!((t.prefetch_bytes, t.source), (0, "tuned"));
        let t = choose("GenuineIntel", 6, Some("1024"), Some(0));
        assert_eq!((t.prefetch_bytes, t.source), (1024, PREFETCH_VAR));
        // A bad override falls back to the measurement, a bad measurement to the default.
        assert_eq!(
            choose("GenuineIntel", 6, Some("x"), Some(0)).source,
            "tuned"
        );
        let t = choose("GenuineIntel", 6, None, Some(MAX_PREFETCH_BYTES + 1));
        assert_eq!(
            (t.prefetch_bytes, t.source),
            (INTEL_PREFETCH_BYTES, "cpu default")
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_sweep_distance_wins_until_cleared_and_installing_late_fails() {
        let chosen = tuning().prefetch_bytes;
        set_sweep_prefetch(Some(12_345));
        assert_eq!(prefetch_bytes(), 12_345);
        set_sweep_prefetch(Some(usize::MAX - 1));
        assert_eq!(prefetch_bytes(), MAX_PREFETCH_BYTES);
        set_sweep_prefetch(None);
        assert_eq!(prefetch_bytes(), chosen);
        // The tuning was chosen above: a measurement can no longer replace it.
        assert!(!install_tuned(0));
        assert_eq!(tuning().prefetch_bytes, chosen);
    }

    #[test]
    fn the_vendor_is_read() {
        // On x86-64 cpuid always answers; the string is one of the known ones or `unknown`.
        assert!(!tuning().vendor.is_empty());
    }
}
