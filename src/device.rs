//! Where the model runs (`--device`): parsing and the no-CUDA error.

use anyhow::{bail, Result};
use candle_core::Device;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compute {
    Cpu,
    /// An NVIDIA GPU by ordinal (builds with the `cuda` feature).
    Cuda(usize),
}

/// Parses `--device` (`cpu`, `cuda`, `cuda:N`).
pub fn parse_compute(s: Option<&str>) -> Result<Compute> {
    let c = match s.unwrap_or("cpu") {
        "cpu" => Compute::Cpu,
        "cuda" => Compute::Cuda(0),
        s if s.starts_with("cuda:") => match s["cuda:".len()..].parse::<usize>() {
            Ok(n) => Compute::Cuda(n),
            Err(_) => bail!("--device {s}: the GPU ordinal must be a number (cuda:0, cuda:1, ...)"),
        },
        other => bail!("--device: unknown device `{other}` (expected cpu, cuda or cuda:N)"),
    };
    if let Compute::Cuda(_) = c {
        if !cfg!(feature = "cuda") {
            return Err(no_cuda(s.unwrap_or_default()));
        }
    }
    Ok(c)
}

/// The error for `--device DEVICE` in a build without the `cuda` feature.
pub fn no_cuda(device: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "--device {device}: this build has no CUDA support (build with --features cuda)"
    )
}

/// Parses `--device` into a candle device (the candle path: embeddings, training).
pub fn parse_device(s: Option<&str>) -> Result<Device> {
    match parse_compute(s)? {
        Compute::Cpu => Ok(Device::Cpu),
        Compute::Cuda(n) => cuda_device(n),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(n: usize) -> Result<Device> {
    use anyhow::Context;
    Device::new_cuda(n).with_context(|| format!("--device cuda:{n}: cannot open the GPU"))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(n: usize) -> Result<Device> {
    Err(no_cuda(&format!("cuda:{n}")))
}

#[cfg(test)]
mod compute_tests {
    use super::*;

    #[test]
    fn device_flag_parses_or_names_the_problem() {
        assert_eq!(parse_compute(None).unwrap(), Compute::Cpu);
        assert_eq!(parse_compute(Some("cpu")).unwrap(), Compute::Cpu);
        let e = parse_compute(Some("gpu")).unwrap_err().to_string();
        assert!(e.contains("unknown device `gpu`"), "{e}");
        let e = parse_compute(Some("cuda:x")).unwrap_err().to_string();
        assert!(e.contains("ordinal"), "{e}");
        if cfg!(feature = "cuda") {
            assert_eq!(parse_compute(Some("cuda:1")).unwrap(), Compute::Cuda(1));
        } else {
            let e = parse_compute(Some("cuda:1")).unwrap_err().to_string();
            assert!(e.contains("no CUDA support"), "{e}");
        }
    }
}
