//! A plain dense transformer (no quantisation) with random weights, built directly on any candle
//! device in any float dtype: the GPU benchmark's baseline ("candle's bf16 dense path on the same
//! model shape"). Every BitLinear is [`BitWeights::Dense`], embeddings / head / norms are dense
//! tensors of the same dtype, and the model runs on the candle path
//! ([`Transformer::hidden_tensor_cache`] + [`Transformer::logits_from_hidden`], incremental decode
//! with a [`TensorKvCache`](crate::TensorKvCache)) in that dtype.
//!
//! Matrices are N(0, 0.02), norm weights ones. Each tensor is drawn in f32 and cast to the dtype
//! one tensor at a time, so a 2B-parameter bf16 model never holds an f32 copy of itself. On a
//! device with a seedable generator (CUDA, Metal) the values come from `Tensor::randn` on the
//! device after `set_seed(seed)`; on one without (candle's CPU device, whose memory is the host's)
//! from a seeded host generator. Either way the weights are a pure function of (config, seed,
//! device kind), and the bf16 model holds the f32 model's weights rounded to bf16.

use crate::bitlinear::BitWeights;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::transformer::Transformer;
use crate::weights::{check_shape, WeightSource};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

/// Standard deviation of the random matrices.
pub const DENSE_STD: f32 = 0.02;

/// A [`WeightSource`] of random dense weights (see the module docs), generated on request in
/// the order the loader asks for them.
pub struct DenseRandomSource {
    dtype: DType,
    device: Device,
    /// The host generator, for devices that cannot be seeded.
    host: Option<rand::rngs::StdRng>,
}

impl DenseRandomSource {
    pub fn new(seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::Invalid(format!(
                "dense model dtype {dtype:?}: expected F32, BF16 or F16"
            )));
        }
        let host = match device.set_seed(seed) {
            Ok(()) => None,
            Err(_) => Some(rand::rngs::StdRng::seed_from_u64(seed)),
        };
        Ok(Self {
            dtype,
            device: device.clone(),
            host,
        })
    }

    fn normal(&mut self, shape: &[usize]) -> Result<Tensor> {
        let t = match &mut self.host {
            None => Tensor::randn(0f32, DENSE_STD, shape, &self.device)?,
            Some(rng) => {
                let n: usize = shape.iter().product();
                let mut v = Vec::with_capacity(n + 1);
                while v.len() < n {
                    // Box–Muller: two normals from two uniforms.
                    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
                    let u2: f32 = rng.random::<f32>();
                    let r = DENSE_STD * (-2.0 * u1.ln()).sqrt();
                    let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
                    v.push(r * c);
                    v.push(r * s);
                }
                v.truncate(n);
                Tensor::from_vec(v, shape, &self.device)?
            }
        };
        Ok(t.to_dtype(self.dtype)?)
    }
}

impl WeightSource for DenseRandomSource {
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = if name.contains("norm") {
            Tensor::ones(shape, self.dtype, &self.device)?
        } else {
            self.normal(shape)?
        };
        check_shape(name, &t, shape)?;
        Ok(t)
    }

    fn bitlinear(&mut self, name: &str, out: usize, inp: usize) -> Result<BitWeights> {
        Ok(BitWeights::Dense(
            self.dense(&format!("{name}.weight"), &[out, inp])?,
        ))
    }

    fn contains(&self, _name: &str) -> bool {
        true
    }
}

/// A dense (unquantised) transformer with `cfg`'s shapes and random N(0, 0.02) weights in
/// `dtype`, built directly on `device`; it computes in `dtype` on the candle path.
pub fn dense_random(cfg: &Config, seed: u64, dtype: DType, device: &Device) -> Result<Transformer> {
    let mut src = DenseRandomSource::new(seed, dtype, device)?;
    Transformer::load(cfg, &mut src, device)?.with_compute_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transformer::TensorKvCache;

    fn tiny() -> Config {
        let mut c = Config::tritter_tiny();
        c.vocab_size = 97;
        c.hidden_size = 32;
        c.intermediate_size = 48;
        c.num_layers = 2;
        c.num_heads = 4;
        c.num_kv_heads = 2;
        c.head_dim = 8;
        c
    }

    const IDS: [u32; 12] = [3, 41, 7, 88, 15, 2, 96, 50, 11, 63, 29, 74];

    /// Logits `[12, V]` (f32) of prefill of 8 tokens then 4 single-token steps.
    fn prefill_then_decode(m: &Transformer) -> Vec<Vec<f32>> {
        let dev = m.device().clone();
        let mut cache = TensorKvCache::new(m.config().num_layers);
        let mut rows = Vec::new();
        let mut run = |ids: &[u32], cache: &mut TensorKvCache| {
            let t = Tensor::from_slice(ids, (1, ids.len()), &dev).unwrap();
            let x = m.embed(&t).unwrap();
            assert_eq!(x.dtype(), m.compute_dtype());
            let h = m.hidden_tensor_cache(&x, cache).unwrap();
            assert_eq!(h.dtype(), m.compute_dtype());
            let l = m.logits_from_hidden(&h).unwrap();
            assert_eq!(l.dtype(), DType::F32);
            rows.extend(l.squeeze(0).unwrap().to_vec2::<f32>().unwrap());
        };
        run(&IDS[..8], &mut cache);
        for i in 8..12 {
            run(&IDS[i..i + 1], &mut cache);
        }
        assert_eq!(cache.len(), 12);
        let elem = m.compute_dtype().size_in_bytes();
        let c = m.config();
        assert_eq!(
            cache.bytes(),
            2 * c.num_layers * c.num_kv_heads * 12 * c.head_dim * elem
        );
        rows
    }

    fn full_forward(m: &Transformer) -> Vec<Vec<f32>> {
        let t = Tensor::from_slice(&IDS, (1, IDS.len()), m.device()).unwrap();
        m.forward(&t)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    }

    /// max |a − b| / max |b|.
    fn rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        let max = b.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        diff / max.max(f32::MIN_POSITIVE)
    }

    /// The CPU, and the first CUDA device when the build and the machine have one.
    fn devices() -> Vec<Device> {
        let mut v = vec![Device::Cpu];
        if candle_core::utils::cuda_is_available() {
            if let Ok(d) = Device::new_cuda(0) {
                v.push(d);
            }
        }
        v
    }

    #[test]
    fn bf16_dense_decode_matches_f32_and_the_full_forward() {
        for dev in devices() {
            check_bf16_decode(&dev);
        }
    }

    fn check_bf16_decode(dev: &Device) {
        let cfg = tiny();
        let m32 = dense_random(&cfg, 3, DType::F32, dev).unwrap();
        let m16 = dense_random(&cfg, 3, DType::BF16, dev).unwrap();
        assert!(m16.device().same_device(dev));
        assert_eq!(m16.compute_dtype(), DType::BF16);
        let d32 = prefill_then_decode(&m32);
        let d16 = prefill_then_decode(&m16);
        assert_eq!(d16.len(), 12);
        assert!(d32.iter().flatten().all(|v| v.is_finite()));
        let e = rel_err(&d16, &d32);
        assert!(e < 3e-2, "bf16 vs f32 decode: relative error {e}");
        assert!(e > 0.0, "the bf16 model must actually compute in bf16");
        // Incremental decoding equals the full forward.
        let e32 = rel_err(&d32, &full_forward(&m32));
        assert!(e32 < 1e-5, "f32 prefill+decode vs full forward: {e32}");
        let e16 = rel_err(&d16, &full_forward(&m16));
        assert!(e16 < 2e-2, "bf16 prefill+decode vs full forward: {e16}");
        eprintln!(
            "{dev:?}: bf16 vs f32 {e:.4}; prefill+decode vs full: f32 {e32:.2e}, bf16 {e16:.4}"
        );
    }

    #[test]
    fn the_weights_are_a_function_of_the_seed() {
        let cfg = tiny();
        let a = full_forward(&dense_random(&cfg, 5, DType::F32, &Device::Cpu).unwrap());
        let b = full_forward(&dense_random(&cfg, 5, DType::F32, &Device::Cpu).unwrap());
        let c = full_forward(&dense_random(&cfg, 6, DType::F32, &Device::Cpu).unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(dense_random(&cfg, 5, DType::U8, &Device::Cpu).is_err());
    }
}
