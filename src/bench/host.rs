//! The host a benchmark ran on, reported in every CPU benchmark's JSON (`host`): CPU model (its
//! name, and the family / model / stepping numbers with the core generation they name, since a
//! virtual machine's name can be as bare as `AMD EPYC` for Zen 3, 4 and 5 alike), the
//! instruction-set flags the kernels dispatch on, logical CPUs and the threads used, and the
//! kernel path each family chose at run time — so a figure is never read without its machine.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Flags the kernels look at, in `/proc/cpuinfo` spelling (x86) or the Arm names.
const FLAGS: [&str; 11] = [
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "asimd",
    "sve",
];

/// The core generation that x86 `cpuid` family and model numbers name (AMD's and Intel's published
/// numbers for the server and desktop parts; `None` for one not listed here).
fn microarch(vendor: &str, family: u32, model: u32) -> Option<&'static str> {
    match (vendor, family) {
        ("AuthenticAMD", 0x17) => Some(if model >= 0x30 { "Zen 2" } else { "Zen / Zen+" }),
        ("AuthenticAMD", 0x19) => match model {
            0x00..=0x0f | 0x20..=0x2f | 0x40..=0x5f => Some("Zen 3"),
            0x10..=0x1f | 0x60..=0x7f | 0xa0..=0xaf => Some("Zen 4"),
            _ => None,
        },
        ("AuthenticAMD", 0x1a) => Some("Zen 5"),
        ("GenuineIntel", 6) => match model {
            0x55 => Some("Skylake-SP / Cascade Lake"),
            0x6a | 0x6c => Some("Ice Lake-SP"),
            0x8f => Some("Sapphire Rapids"),
            0xcf => Some("Emerald Rapids"),
            0xad | 0xae => Some("Granite Rapids"),
            0xaf => Some("Sierra Forest"),
            0x97 | 0x9a | 0xb7 | 0xba | 0xbf => Some("Alder / Raptor Lake"),
            _ => None,
        },
        _ => None,
    }
}

/// The system's transparent huge page mode (`always`, `madvise` or `never`: the bracketed word
/// of `/sys/kernel/mm/transparent_hugepage/enabled`), if it has one.
fn thp_mode() -> Option<String> {
    let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let (_, rest) = s.split_once('[')?;
    Some(rest.split_once(']')?.0.to_string())
}

/// Which CPU this is, as `/proc/cpuinfo` names it (empty off Linux): the key under which
/// measurements of this machine are cached (`bench tune`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuKey {
    pub name: String,
    pub vendor: Option<String>,
    pub family: Option<u32>,
    pub model: Option<u32>,
    pub stepping: Option<u32>,
}

impl CpuKey {
    /// This machine's key.
    pub fn current() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
    }

    /// The key in `/proc/cpuinfo` text (its first processor's lines).
    fn parse(info: &str) -> Self {
        let field = |name: &str| cpuinfo_field(info, &[name]);
        let num = |name: &str| field(name).and_then(|v| v.parse::<u32>().ok());
        Self {
            name: cpuinfo_field(info, &["model name", "Model", "Hardware", "cpu model"])
                .unwrap_or_else(|| "unknown".into()),
            vendor: field("vendor_id"),
            family: num("cpu family"),
            model: num("model"),
            stepping: num("stepping"),
        }
    }
}

/// The first value of any of `names` in `/proc/cpuinfo` text.
fn cpuinfo_field(info: &str, names: &[&str]) -> Option<String> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        names.contains(&k.trim()).then(|| v.trim().to_string())
    })
}

/// `{cpu, cpu_id: {vendor, family, model, stepping, microarch}, flags, logical_cpus, threads,
/// arch, kernels: {ternary, ternary_available, head_f16, attention_tiles, attention_fused},
/// huge_pages: {advised, thp}, tuning: {vendor, family, prefetch_bytes, prefetch_source}}` for a
/// run on `threads` threads.
pub fn host_json(threads: usize) -> Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let key = CpuKey::parse(&info);
    let present: Vec<&str> = cpuinfo_field(&info, &["flags", "Features"])
        .map(|f| {
            let have: Vec<&str> = f.split_whitespace().collect();
            FLAGS.iter().copied().filter(|x| have.contains(x)).collect()
        })
        .unwrap_or_default();
    let tuning = tritter_kernels::tuning::tuning();
    let cpu_id = json!({
        "vendor": key.vendor,
        "family": key.family,
        "model": key.model,
        "stepping": key.stepping,
        "microarch": key.family.zip(key.model).and_then(|(f, m)| microarch(tuning.vendor, f, m)),
    });
    let logical = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({
        "cpu": key.name,
        "cpu_id": cpu_id,
        "arch": std::env::consts::ARCH,
        "flags": present,
        "logical_cpus": logical,
        "threads": threads,
        "kernels": {
            "ternary": format!("{:?}", tritter_kernels::best_isa()),
            "ternary_cap": tritter_kernels::isa_cap().ok().flatten().map(|i| format!("{i:?}")),
            "ternary_available": tritter_kernels::available_isas()
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>(),
            "head_f16": tritter_kernels::head::gemv_f16_isa(),
            "attention_tiles": tritter_model::attn::tile_kernel_name(),
            "attention_fused": tritter_model::attn::fused_kernel_name(),
        },
        "huge_pages": {
            "advised": tritter_kernels::huge::huge_pages_enabled(),
            "thp": thp_mode(),
        },
        "tuning": {
            "vendor": tuning.vendor,
            "family": tuning.family,
            "prefetch_bytes": tuning.prefetch_bytes,
            "prefetch_source": tuning.source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_the_cpu_threads_and_chosen_paths() {
        let h = host_json(3);
        assert_eq!(h["threads"], 3);
        assert!(h["logical_cpus"].as_u64().unwrap() >= 1);
        assert_eq!(h["arch"], std::env::consts::ARCH);
        let avail = h["kernels"]["ternary_available"].as_array().unwrap();
        // The chosen ternary path is the best available one (uncapped), and the portable path is
        // always there.
        if h["kernels"]["ternary_cap"].is_null() {
            assert_eq!(avail.last().unwrap(), &h["kernels"]["ternary"]);
        }
        assert!(avail.iter().any(|x| x == "Portable"));
        if cfg!(target_os = "linux") {
            assert_ne!(h["cpu"], "unknown");
            assert_eq!(
                h["huge_pages"]["advised"],
                tritter_kernels::huge::huge_pages_enabled()
            );
            if let Some(mode) = h["huge_pages"]["thp"].as_str() {
                assert!(["always", "madvise", "never"].contains(&mode), "{mode}");
            }
        }
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert!(h["cpu_id"]["family"].is_u64(), "{}", h["cpu_id"]);
        }
        // Every flag reported is one the kernels dispatch on.
        for f in h["flags"].as_array().unwrap() {
            assert!(FLAGS.contains(&f.as_str().unwrap()));
        }
    }

    #[test]
    fn the_cpu_key_reads_the_first_processor() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
                    model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\nmodel\t\t: 99\n";
        let k = CpuKey::parse(info);
        assert_eq!(
            k,
            CpuKey {
                name: "AMD EPYC".into(),
                vendor: Some("AuthenticAMD".into()),
                family: Some(25),
                model: Some(17),
                stepping: Some(1),
            }
        );
        assert_eq!(CpuKey::parse("").name, "unknown");
    }

    #[test]
    fn family_and_model_name_the_core_generation() {
        // Hosts these benchmarks ran on (docs/BENCHMARKS.md) and the vendors' published numbers.
        assert_eq!(microarch("AuthenticAMD", 25, 1), Some("Zen 3"));
        assert_eq!(microarch("AuthenticAMD", 25, 17), Some("Zen 4"));
        assert_eq!(microarch("AuthenticAMD", 26, 2), Some("Zen 5"));
        assert_eq!(microarch("AuthenticAMD", 23, 49), Some("Zen 2"));
        assert_eq!(microarch("GenuineIntel", 6, 207), Some("Emerald Rapids"));
        assert_eq!(microarch("GenuineIntel", 6, 143), Some("Sapphire Rapids"));
        assert_eq!(microarch("GenuineIntel", 6, 1), None);
        assert_eq!(microarch("AuthenticAMD", 25, 0x80), None);
        assert_eq!(microarch("unknown", 26, 2), None);
    }
}
