//! A model that runs one sequence step by step ([`Decoder`]) and the one function that picks it
//! for a device ([`open`]): the CPU inference path ([`CpuModel`]) or the GPU model
//! (`gpu::GpuModel`, feature `cuda`). This is the only module outside `gpu` that knows whether
//! the build has CUDA, so callers choose a device without `cfg` blocks of their own.

use crate::config::Config;
use crate::device::Compute;
use crate::error::{Error, Result};
use crate::infer::CpuModel;
use crate::transformer::Transformer;

/// One sequence run step by step on some device.
pub trait Decoder {
    fn config(&self) -> &Config;
    /// Starts a fresh sequence (empties the cache).
    fn start(&mut self) -> Result<()>;
    /// Appends `ids` and returns the logits `[V]` of the last one.
    fn step(&mut self, ids: &[u32]) -> Result<Vec<f32>>;
    /// Appends `ids` and returns the logits of every one of them, `[T][V]` row after row.
    fn step_all(&mut self, ids: &[u32]) -> Result<Vec<f32>>;
    /// Appends input embeddings `x` (`[T, C]` rows of `hidden_size`: an image's projected
    /// features, latent thoughts) and returns the logits `[V]` of the last one.
    fn step_embeds(&mut self, x: Vec<f32>) -> Result<Vec<f32>>;
    /// Appends `ids` and returns the final hidden state `[C]` of the last one (after the final
    /// norm, before the LM head): what latent mode feeds back as the next input embedding.
    /// Decoders without latent mode answer an error.
    fn step_hidden(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let _ = ids;
        Err(no_latent(&self.device_name()))
    }
    /// Appends input embeddings `x` `[T, C]` and returns the final hidden state `[C]` of the
    /// last one: one latent step when `x` is a thought. Decoders without latent mode answer an
    /// error.
    fn step_embeds_hidden(&mut self, x: Vec<f32>) -> Result<Vec<f32>> {
        let _ = x;
        Err(no_latent(&self.device_name()))
    }
    /// Tokens of the sequence so far.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Where it runs, for people: `cpu`, `cuda:0 (NVIDIA H200)`.
    fn device_name(&self) -> String;
    /// The KV kind, window and context chosen for the device's free memory
    /// ([`crate::plan_gpu::fit`]), when the decoder was sized to one.
    fn gpu_fit(&self) -> Option<&crate::plan_gpu::GpuFit> {
        None
    }
}

fn no_latent(device: &str) -> Error {
    Error::Invalid(format!(
        "latent (Coconut) mode is not available on {device} yet"
    ))
}

/// What a decoder from [`open`] is set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// f32 KV cache and f32 LM head with the config's window and sinks: what the CPU inference
    /// path computes by default (`GpuOptions::reference` on a GPU). Conformance probes.
    #[default]
    Reference,
    /// Chat speed: on a GPU an INT4 KV cache and an f16 head (`GpuOptions::fast`); on the CPU
    /// the same as [`Profile::Reference`] (the config's f32 cache, f32 head).
    Fast,
}

/// The decoder for `model` on `compute`: the CPU inference path, or the model uploaded to GPU
/// `N` (a build without the `cuda` feature answers
/// [`DeviceError::NoCuda`](crate::device::DeviceError::NoCuda)). Models only the candle path
/// runs ([`Config::needs_candle_path`]: hybrid layers, Granite's switches) get the
/// [`CandleDecoder`](crate::decoder_candle::CandleDecoder) on the CPU, and an error on a GPU.
pub fn open(
    model: &Transformer,
    compute: Compute,
    profile: Profile,
) -> Result<Box<dyn Decoder + Send>> {
    if model.config().needs_candle_path() {
        if model.config().attention_mode == crate::attn::AttentionMode::PrefixLm {
            // The candle path's cached forward knows no prompt length: it would decode causally.
            return Err(Error::Invalid(format!(
                "attention_mode prefix_lm is decoded by the CPU inference path only, and this \
                 model has {}, which only the candle path runs",
                crate::transformer::candle_only_features(model.config())
            )));
        }
        return match compute {
            Compute::Cpu => Ok(Box::new(crate::decoder_candle::CandleDecoder::new(model))),
            Compute::Cuda(_) => Err(Error::Invalid(format!(
                "this model has {}, which runs on the CPU only for now (--device cpu)",
                crate::transformer::candle_only_features(model.config())
            ))),
        };
    }
    match compute {
        Compute::Cpu => Ok(Box::new(CpuModel::new(model)?)),
        Compute::Cuda(n) => {
            crate::gpu_scope::check(model.config())?;
            open_cuda(model, n, profile)
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(
    model: &Transformer,
    ordinal: usize,
    profile: Profile,
) -> Result<Box<dyn Decoder + Send>> {
    use crate::gpu::{GpuModel, GpuOptions};
    let cfg = model.config();
    let opts = match profile {
        Profile::Reference => GpuOptions::reference(cfg),
        Profile::Fast => GpuOptions::fast(cfg),
    };
    if profile == Profile::Reference {
        return Ok(Box::new(GpuModel::new(model, opts, ordinal)?));
    }
    // Chat: the cache sized to the memory the device has free once its context exists.
    let gpu = tritter_kernels::cuda::Gpu::new(ordinal).map_err(|e| Error::Kernel(e.to_string()))?;
    let (free, _) = gpu.mem_info().map_err(|e| Error::Kernel(e.to_string()))?;
    let req = crate::plan_gpu::GpuFitRequest::chat(cfg);
    let dims = crate::plan::ModelDims::from_config(cfg);
    let fit = crate::plan_gpu::fit(&dims, free as u64, &req)
        .map_err(|e| Error::Invalid(format!("cuda:{ordinal} ({}): {e}", gpu.name())))?;
    let opts = GpuOptions {
        kv: req.kv,
        window: fit.window,
        max_context: fit.context,
        max_chunk: req.chunk,
        head_f16: req.head_f16,
        fit: Some(fit),
        ..opts
    };
    Ok(Box::new(GpuModel::with_gpu(model, opts, gpu)?))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_: &Transformer, _: usize, _: Profile) -> Result<Box<dyn Decoder + Send>> {
    Err(crate::device::DeviceError::NoCuda.into())
}

/// The methods both decoders answer the same way: their own `config`, `reset` to start,
/// `forward(ids, all)` for the last or every position's logits, and `forward_embeds(x, all)`.
macro_rules! decoder_steps {
    () => {
        fn config(&self) -> &Config {
            Self::config(self)
        }

        fn start(&mut self) -> Result<()> {
            self.reset()
        }

        fn step(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
            self.forward(ids, false)
        }

        fn step_all(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
            self.forward(ids, true)
        }

        fn step_embeds(&mut self, x: Vec<f32>) -> Result<Vec<f32>> {
            self.forward_embeds(x, false)
        }
    };
}

impl Decoder for CpuModel {
    decoder_steps!();

    fn step_hidden(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.forward_hidden(ids)
    }

    fn step_embeds_hidden(&mut self, x: Vec<f32>) -> Result<Vec<f32>> {
        self.forward_embeds_hidden(x)
    }

    fn len(&self) -> usize {
        self.cache().len()
    }

    fn device_name(&self) -> String {
        "cpu".into()
    }
}

impl Decoder for crate::decoder_candle::CandleDecoder {
    decoder_steps!();

    fn step_hidden(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.forward_hidden(ids)
    }

    fn step_embeds_hidden(&mut self, x: Vec<f32>) -> Result<Vec<f32>> {
        self.forward_embeds_hidden(x)
    }

    fn len(&self) -> usize {
        Self::len(self)
    }

    fn device_name(&self) -> String {
        Self::device_name(self)
    }
}

/// A decoding session on the GPU.
#[cfg(feature = "cuda")]
impl Decoder for crate::gpu::GpuModel {
    decoder_steps!();

    fn step_hidden(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.forward_hidden(ids)
    }

    fn step_embeds_hidden(&mut self, x: Vec<f32>) -> Result<Vec<f32>> {
        self.forward_embeds_hidden(x)
    }

    fn len(&self) -> usize {
        self.seen()
    }

    fn device_name(&self) -> String {
        format!("cuda:{} ({})", self.gpu().ordinal(), self.gpu().name())
    }

    fn gpu_fit(&self) -> Option<&crate::plan_gpu::GpuFit> {
        self.fit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-layer model small enough to build in a test.
    fn small_config() -> Config {
        let mut cfg = Config::tritter_tiny();
        cfg.vocab_size = 32;
        cfg.hidden_size = 32;
        cfg.intermediate_size = 48;
        cfg.num_layers = 1;
        cfg.num_heads = 2;
        cfg.num_kv_heads = 1;
        cfg.head_dim = 16;
        cfg
    }

    #[test]
    fn a_gpu_without_cuda_is_a_plain_error() {
        let cfg = small_config();
        let mut src = crate::random::RandomSource::new(1, &candle_core::Device::Cpu);
        let m = Transformer::load(&cfg, &mut src, &candle_core::Device::Cpu).unwrap();
        let mut d = open(&m, Compute::Cpu, Profile::Fast).unwrap();
        assert_eq!(d.device_name(), "cpu");
        assert_eq!(d.step_all(&[1, 2, 3]).unwrap().len(), 3 * 32);
        assert_eq!(d.len(), 3);
        d.start().unwrap();
        assert!(d.is_empty());
        if !crate::device::CUDA_BUILD {
            let e = open(&m, Compute::Cuda(0), Profile::Reference)
                .err()
                .unwrap();
            assert!(e.to_string().contains("no CUDA support"), "{e}");
        }
    }

    /// Item 5 of issue #19: the CUDA path masks causally only, so other modes are refused on
    /// `cuda` (in every build, before a device is opened) and still run on the CPU.
    #[test]
    fn non_causal_modes_are_refused_on_cuda_by_name() {
        let mut cfg = small_config();
        cfg.attention_mode = crate::attn::AttentionMode::Bidirectional;
        let mut src = crate::random::RandomSource::new(1, &candle_core::Device::Cpu);
        let m = Transformer::load(&cfg, &mut src, &candle_core::Device::Cpu).unwrap();
        let e = open(&m, Compute::Cuda(0), Profile::Fast).err().unwrap();
        assert!(
            e.to_string().contains("attention_mode bidirectional"),
            "{e}"
        );
        assert!(open(&m, Compute::Cpu, Profile::Fast).is_ok());
    }
}
