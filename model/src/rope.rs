//! Rotary position embeddings in HF's rotate-half layout (`LlamaRotaryEmbedding`,
//! `apply_rotary_pos_emb`): `inv_freq[i] = θ^(-2i/d)`, angles `pos · inv_freq` duplicated over both
//! halves, `x·cos + rotate_half(x)·sin` with `rotate_half(x) = [-x₂, x₁]`. Differentiable.

use crate::error::Result;
use candle_core::{Device, Tensor, D};

/// Precomputed cos/sin tables for positions `0..max_pos`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    max_pos: usize,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64, max_pos: usize, device: &Device) -> Result<Self> {
        let half = head_dim / 2;
        // HF: inv_freq = 1 / theta ** (arange(0, dim, 2).float() / dim), computed in f32.
        let inv: Vec<f32> = (0..half)
            .map(|i| 1f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(max_pos * head_dim);
        let mut sin = Vec::with_capacity(max_pos * head_dim);
        for p in 0..max_pos {
            for _half in 0..2 {
                for f in &inv {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_pos, head_dim), device)?,
            sin: Tensor::from_vec(sin, (max_pos, head_dim), device)?,
            max_pos,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.max_pos
    }

    /// Rotates `x` `[B, H, T, D]` whose tokens sit at positions `offset..offset+T`.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (_b, _h, t, d) = x.dims4()?;
        if offset + t > self.max_pos {
            return Err(crate::Error::TooLong {
                len: offset + t,
                limit: self.max_pos,
            });
        }
        let cos = self.cos.narrow(0, offset, t)?.to_dtype(x.dtype())?;
        let sin = self.sin.narrow(0, offset, t)?.to_dtype(x.dtype())?;
        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?)?)
    }

    /// Rotates `x` `[B, H, T, D]` with explicit positions (one per token), for rolling caches.
    pub fn apply_positions(&self, x: &Tensor, positions: &[usize]) -> Result<Tensor> {
        let (_b, _h, t, d) = x.dims4()?;
        if positions.len() != t {
            return Err(crate::Error::Invalid(format!(
                "{} positions for {t} tokens",
                positions.len()
            )));
        }
        if let Some(&p) = positions.iter().find(|&&p| p >= self.max_pos) {
            return Err(crate::Error::TooLong {
                len: p + 1,
                limit: self.max_pos,
            });
        }
        let idx: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let idx = Tensor::new(idx.as_slice(), x.device())?;
        let cos = self.cos.index_select(&idx, 0)?.to_dtype(x.dtype())?;
        let sin = self.sin.index_select(&idx, 0)?.to_dtype(x.dtype())?;
        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_matches_scalar_formula_and_preserves_norm() {
        let d = 8;
        let rope = Rope::new(d, 10_000.0, 16, &Device::Cpu).unwrap();
        let v: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::from_vec(v.clone(), (1, 1, 1, d), &Device::Cpu).unwrap();
        let pos = 5usize;
        let y = rope.apply(&x, pos).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..d / 2 {
            let f = 1f32 / 10_000f32.powf((2 * i) as f32 / d as f32);
            let (s, c) = (pos as f32 * f).sin_cos();
            let a = v[i] * c - v[i + d / 2] * s;
            let b = v[i + d / 2] * c + v[i] * s;
            assert!((y[i] - a).abs() < 1e-5 && (y[i + d / 2] - b).abs() < 1e-5);
        }
        let y2 = rope.apply_positions(&x, &[pos]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(y, y2);
    }
}
