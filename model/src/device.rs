//! Where a model computes: [`Compute`], parsed once from the names the command line and the
//! training config use (`cpu`, `cuda`, `cuda:N`), and the candle [`Device`] it opens. Errors are
//! one line without the setting's name ([`DeviceError`]); callers prefix the flag or config key
//! that named the device (`--device cuda:x: bad GPU ordinal ...`).

use candle_core::Device;

/// A compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compute {
    /// The host CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal (builds with the `cuda` feature).
    Cuda(usize),
}

/// Whether this build of the model crate has the CUDA path (feature `cuda`).
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// Why a device name could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device `{0}` (expected cpu, cuda or cuda:N)")]
    Unknown(String),
    /// `cuda:` followed by something other than a number.
    #[error("bad GPU ordinal in `{0}` (expected cuda:N)")]
    BadOrdinal(String),
    /// A GPU was asked for in a build without the `cuda` feature.
    #[error("this build has no CUDA support (build with --features cuda)")]
    NoCuda,
    /// The GPU exists in the name only (no such ordinal, driver failure).
    #[error("cannot open CUDA device {ordinal}: {msg}")]
    Open { ordinal: usize, msg: String },
}

impl Compute {
    /// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`; a GPU in a build without CUDA support is an
    /// error here, before any model is loaded.
    pub fn parse(name: &str) -> Result<Self, DeviceError> {
        let c = match name {
            "cpu" => Compute::Cpu,
            "cuda" => Compute::Cuda(0),
            s => match s.strip_prefix("cuda:") {
                Some(n) => Compute::Cuda(
                    n.parse::<usize>()
                        .map_err(|_| DeviceError::BadOrdinal(s.to_string()))?,
                ),
                None => return Err(DeviceError::Unknown(s.to_string())),
            },
        };
        if matches!(c, Compute::Cuda(_)) && !CUDA_BUILD {
            return Err(DeviceError::NoCuda);
        }
        Ok(c)
    }

    /// The name it parses from (`cpu`, `cuda:N`).
    pub fn name(self) -> String {
        match self {
            Compute::Cpu => "cpu".into(),
            Compute::Cuda(n) => format!("cuda:{n}"),
        }
    }

    /// The candle device (the candle path: training, embeddings).
    pub fn device(self) -> Result<Device, DeviceError> {
        match self {
            Compute::Cpu => Ok(Device::Cpu),
            Compute::Cuda(n) => Device::new_cuda(n).map_err(|e| match e {
                candle_core::Error::NotCompiledWithCudaSupport => DeviceError::NoCuda,
                other => DeviceError::Open {
                    ordinal: n,
                    msg: other.to_string().replace('\n', " "),
                },
            }),
        }
    }
}

impl std::str::FromStr for Compute {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        Compute::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_or_say_what_is_wrong() {
        assert_eq!(Compute::parse("cpu"), Ok(Compute::Cpu));
        assert_eq!(
            Compute::parse("gpu").unwrap_err().to_string(),
            "unknown device `gpu` (expected cpu, cuda or cuda:N)"
        );
        assert_eq!(
            Compute::parse("cuda:x"),
            Err(DeviceError::BadOrdinal("cuda:x".into()))
        );
        if CUDA_BUILD {
            assert_eq!(Compute::parse("cuda"), Ok(Compute::Cuda(0)));
            assert_eq!(Compute::parse("cuda:3"), Ok(Compute::Cuda(3)));
        } else {
            assert_eq!(Compute::parse("cuda:3"), Err(DeviceError::NoCuda));
        }
        assert_eq!(Compute::Cuda(2).name(), "cuda:2");
        assert!(Compute::Cpu.device().unwrap().is_cpu());
    }
}
