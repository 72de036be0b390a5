//! Picks the engine for a run: the scripted test engine behind `TRITTER_TEST_ENGINE=echo`, or the
//! model-backed engine for `--model DIR` or the built-in default model, on the device asked for.

use std::path::PathBuf;

use anyhow::Context;

use crate::engine::Engine;

/// Where the engine comes from for this run.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    pub model_dir: Option<PathBuf>,
    pub device: Option<String>,
}

/// The hidden switch that makes the binary run the scripted test engine (tests only).
pub const TEST_ENGINE_VAR: &str = "TRITTER_TEST_ENGINE";

/// Picks the engine for this run. `TRITTER_TEST_ENGINE=echo` gives the scripted test engine;
/// otherwise the model-backed engine: `--model DIR`, or the built-in default model.
pub fn load(opts: &EngineOptions) -> anyhow::Result<Box<dyn Engine>> {
    match std::env::var(TEST_ENGINE_VAR)
        .ok()
        .as_deref()
        .filter(|v| !v.is_empty())
    {
        Some("echo") => Ok(Box::new(crate::engine::scripted::ScriptedEngine::from_env())),
        Some(other) => {
            anyhow::bail!("{TEST_ENGINE_VAR}={other:?} is not a known test engine (known: echo)")
        }
        None => {
            let device_name = opts.device.as_deref().unwrap_or("cpu");
            let compute = crate::device::parse_compute(Some(device_name))?;
            // Weights are read on the host; `--device cuda` then uploads them to the GPU.
            let device = candle_core::Device::Cpu;
            let engine = match &opts.model_dir {
                Some(dir) => crate::engine::model::ModelEngine::load_dir(dir, &device, device_name)
                    .with_context(|| format!("loading model {}", dir.display()))?,
                None => crate::engine::default_model::load(&device, device_name)?,
            };
            Ok(Box::new(engine.on(compute)?))
        }
    }
}
