//! The host a benchmark ran on, reported in every CPU benchmark's JSON (`host`): CPU model, the
//! instruction-set flags the kernels dispatch on, logical CPUs and the threads used, and the
//! kernel path each family chose at run time — so a figure is never read without its machine.

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

/// `{cpu, flags, logical_cpus, threads, arch, kernels: {ternary, ternary_available, head_f16,
/// attention_tiles, attention_fused}, tuning: {vendor, prefetch_bytes, prefetch_source}}` for a run on `threads` threads.
pub fn host_json(threads: usize) -> Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |names: &[&str]| {
        info.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            names.contains(&k.trim()).then(|| v.trim().to_string())
        })
    };
    let cpu = field(&["model name", "Model", "Hardware", "cpu model"])
        .unwrap_or_else(|| "unknown".into());
    let present: Vec<&str> = field(&["flags", "Features"])
        .map(|f| {
            let have: Vec<&str> = f.split_whitespace().collect();
            FLAGS.iter().copied().filter(|x| have.contains(x)).collect()
        })
        .unwrap_or_default();
    let tuning = tritter_kernels::tuning::tuning();
    let logical = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({
        "cpu": cpu,
        "arch": std::env::consts::ARCH,
        "flags": present,
        "logical_cpus": logical,
        "threads": threads,
        "kernels": {
            "ternary": format!("{:?}", tritter_kernels::best_isa()),
            "ternary_available": tritter_kernels::available_isas()
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>(),
            "head_f16": tritter_kernels::head::gemv_f16_isa(),
            "attention_tiles": tritter_model::attn::tile_kernel_name(),
            "attention_fused": tritter_model::attn::fused_kernel_name(),
        },
        "tuning": {
            "vendor": tuning.vendor,
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
        // The chosen ternary path is the best available one, and the portable path is always there.
        assert_eq!(avail.last().unwrap(), &h["kernels"]["ternary"]);
        assert!(avail.iter().any(|x| x == "Portable"));
        if cfg!(target_os = "linux") {
            assert_ne!(h["cpu"], "unknown");
        }
        // Every flag reported is one the kernels dispatch on.
        for f in h["flags"].as_array().unwrap() {
            assert!(FLAGS.contains(&f.as_str().unwrap()));
        }
    }
}
