//! `--device` for the binary: the model crate's one device type and parser
//! (`tritter_model::device`), with the flag named in errors.

use anyhow::Result;
use candle_core::Device;

/// Where the model runs.
pub use tritter_model::device::Compute;

/// Parses `--device` (`cpu`, `cuda`, `cuda:N`; absent: `cpu`).
pub fn parse_compute(s: Option<&str>) -> Result<Compute> {
    let s = s.unwrap_or("cpu");
    Compute::parse(s).map_err(|e| anyhow::anyhow!("--device {s}: {e}"))
}

/// Parses `--device` into a candle device (the candle path: embeddings).
pub fn parse_device(s: Option<&str>) -> Result<Device> {
    let c = parse_compute(s)?;
    c.device()
        .map_err(|e| anyhow::anyhow!("--device {}: {e}", c.name()))
}

#[cfg(test)]
mod tests {
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
