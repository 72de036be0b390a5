//! With the `cuda` feature, compiles `cuda/*.cu` to PTX with nvcc (from CUDA_HOME/bin or PATH)
//! for `compute_$CUDA_COMPUTE_CAP` (default 80: PTX that newer GPUs JIT-compile). Without the
//! feature it does nothing, so the default build needs no CUDA software.

use std::path::PathBuf;
use std::process::Command;

const SOURCES: [&str; 3] = ["ternary", "attention", "ops"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=cuda");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap: String = cap.chars().filter(|c| c.is_ascii_digit()).collect();
    // The PTX target, for the launch code (programmatic dependent launch needs compute_90+).
    println!("cargo:rustc-env=TRITTER_PTX_ARCH={cap}");
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|h| PathBuf::from(h).join("bin").join("nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    for name in SOURCES {
        let src = PathBuf::from("cuda").join(format!("{name}.cu"));
        let dst = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", "-Icuda"])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-o")
            .arg(&dst)
            .arg(&src)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("nvcc failed on {} ({s})", src.display()),
            Err(e) => panic!(
                "the `cuda` feature needs nvcc (set CUDA_HOME or PATH; see scripts/cuda-env.sh): {e}"
            ),
        }
    }
}
