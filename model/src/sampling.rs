//! Next-token sampling over a logits vector: greedy, temperature, top-k, top-p (nucleus) and
//! repetition penalty (HF `RepetitionPenaltyLogitsProcessor`: positive logits of seen tokens are
//! divided by the penalty, negative ones multiplied), seeded for reproducibility.
//!
//! Order as HF's `generate`: repetition penalty → temperature → top-k → top-p → sample.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};

/// Sampling knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1.0 = off.
    pub top_p: f32,
    /// 1.0 = off.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.1,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Invalid(format!(
                "temperature {} must be ≥ 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Invalid(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::Invalid(format!(
                "repetition_penalty {} must be > 0",
                self.repetition_penalty
            )));
        }
        Ok(())
    }
}

/// A seeded sampler.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = rand::rngs::StdRng::seed_from_u64(params.seed);
        Ok(Self { params, rng })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits`, given the tokens seen so far (for the penalty).
    pub fn sample(&mut self, logits: &[f32], seen: &[u32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::Invalid("empty logits".into()));
        }
        let mut l = logits.to_vec();
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut done = vec![false; l.len()];
            for &t in seen {
                let i = t as usize;
                if i < l.len() && !done[i] {
                    done[i] = true;
                    l[i] = if l[i] > 0.0 {
                        l[i] / p.repetition_penalty
                    } else {
                        l[i] * p.repetition_penalty
                    };
                }
            }
        }
        if p.temperature == 0.0 {
            return Ok(argmax(&l));
        }
        for v in &mut l {
            *v /= p.temperature;
        }
        // Candidates sorted by logit, descending (stable: ties keep id order).
        let mut idx: Vec<usize> = (0..l.len()).filter(|&i| !l[i].is_nan()).collect();
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        if p.top_k > 0 && idx.len() > p.top_k {
            idx.truncate(p.top_k);
        }
        let max = l[idx[0]];
        let mut probs: Vec<f64> = idx.iter().map(|&i| ((l[i] - max) as f64).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= total);
        if p.top_p < 1.0 {
            // Keep the smallest prefix whose mass reaches top_p (at least one token).
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (n, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
            idx.truncate(keep);
            probs.truncate(keep);
            let t: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|q| *q /= t);
        }
        let r: f64 = self.rng.random::<f64>();
        let mut acc = 0.0;
        for (n, q) in probs.iter().enumerate() {
            acc += q;
            if r < acc {
                return Ok(idx[n] as u32);
            }
        }
        Ok(idx[idx.len() - 1] as u32)
    }
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in l.iter().enumerate() {
        if *v > l[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_max_and_penalty_applies() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 2.0, 1.9], &[]).unwrap(), 1);
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        })
        .unwrap();
        // 2.0 / 2 = 1.0 < 1.9
        assert_eq!(s.sample(&[0.1, 2.0, 1.9], &[1]).unwrap(), 2);
        // negative logits are multiplied: -0.1*2 < -0.15
        assert_eq!(s.sample(&[-0.1, -0.15], &[0]).unwrap(), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7919) % 13) as f32 * 0.3).collect();
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            repetition_penalty: 1.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&logits, &[]).unwrap(), argmax(&logits));
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                repetition_penalty: 1.0,
            })
            .unwrap();
            (0..20)
                .map(|_| s.sample(&logits, &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
    }

    #[test]
    fn frequencies_follow_softmax_and_top_p_cuts_the_tail() {
        let logits = [2.0f32, 1.0, 0.0, -3.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 3,
        })
        .unwrap();
        let n = 20_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[s.sample(&logits, &[]).unwrap() as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&v| (v as f64).exp()).sum();
        for i in 0..4 {
            let p = (logits[i] as f64).exp() / z;
            let f = counts[i] as f64 / n as f64;
            assert!((p - f).abs() < 0.015, "token {i}: p {p} f {f}");
        }
        // p = [0.66, 0.24, 0.09, 0.004]: top_p 0.8 keeps the first two only.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.8,
            repetition_penalty: 1.0,
            seed: 3,
        })
        .unwrap();
        for _ in 0..2000 {
            assert!(s.sample(&logits, &[]).unwrap() < 2);
        }
    }

    #[test]
    fn bad_params_are_rejected() {
        assert!(Sampler::new(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        })
        .is_err());
        assert!(Sampler::new(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        })
        .is_err());
    }
}
