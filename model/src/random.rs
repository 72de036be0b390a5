//! A [`WeightSource`] of random weights for benchmarks and memory tests: BitLinears come out as
//! packed ternary matrices directly (no f32 master weights, so a 2B-parameter model needs only its
//! packed bytes), dense tensors as small uniform values, norm weights as ones. Deterministic for a
//! seed (SplitMix64). It must produce weights any loader accepts: codes in -1..=1, finite scales.

use crate::bitlinear::{BitWeights, PackedLinear};
use crate::error::{Error, Result};
use crate::source::WeightSource;
use candle_core::{Device, Tensor};
use tritter_kernels::TernaryMatrix;

/// Random weights (see the module docs).
#[derive(Debug, Clone)]
pub struct RandomSource {
    state: u64,
    /// Half-width of the uniform distribution of dense tensors.
    pub dense_range: f32,
    device: Device,
}

impl RandomSource {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            dense_range: 0.05,
            device: device.clone(),
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl WeightSource for RandomSource {
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            let r = self.dense_range;
            (0..n)
                .map(|_| {
                    let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
                    (2.0 * u - 1.0) * r
                })
                .collect()
        };
        Ok(Tensor::from_vec(vals, shape, &self.device)?)
    }

    fn bitlinear(&mut self, name: &str, out: usize, inp: usize) -> Result<BitWeights> {
        let mut vals = vec![0i8; out * inp];
        let mut bits = 0u64;
        let mut left = 0;
        for v in vals.iter_mut() {
            if left == 0 {
                bits = self.next();
                left = 32;
            }
            // 2 bits: 0 → -1, 1 and 2 → 0, 3 → +1 (half the weights zero, as absmean gives).
            *v = match bits & 3 {
                0 => -1,
                3 => 1,
                _ => 0,
            };
            bits >>= 2;
            left -= 1;
        }
        let m = TernaryMatrix::from_ternary(&vals, out, inp)
            .map_err(|e| Error::Kernel(format!("{name}: {e}")))?;
        // Divisor of the accumulator: keeps outputs at the scale of the inputs (≈ √(inp/2)).
        let scale = ((inp as f32) / 2.0).sqrt().max(1.0);
        Ok(BitWeights::Packed(PackedLinear::new(m, scale)?))
    }

    fn contains(&self, _name: &str) -> bool {
        false
    }
}
