//! Rotary position embeddings in HF's rotate-half layout (`LlamaRotaryEmbedding`,
//! `apply_rotary_pos_emb`): `inv_freq[i] = θ^(-2i/d)`, angles `pos · inv_freq` duplicated over both
//! halves, `x·cos + rotate_half(x)·sin` with `rotate_half(x) = [-x₂, x₁]`. Differentiable on
//! tensors ([`Rope::apply`]); on f32 slices ([`Rope::rotate_rows`], the CPU inference path) the
//! same angles go through the one host rotation, [`crate::attn::rotate_half`].

use crate::error::Result;
use candle_core::{Device, Tensor, D};

/// RoPE for one head size; cos/sin are computed for the positions each call needs, so any
/// position works (as in HF, which does not enforce `max_position_embeddings`).
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64) -> Self {
        // HF: inv_freq = 1 / theta ** (arange(0, dim, 2).float() / dim), computed in f32.
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Self { inv_freq, head_dim }
    }

    /// `(cos, sin)` of `pos · inv_freq[i]` for every frequency, in f32 as HF computes them.
    fn angles(&self, pos: usize) -> impl Iterator<Item = (f32, f32)> + '_ {
        self.inv_freq.iter().map(move |f| {
            let (s, c) = (pos as f32 * f).sin_cos();
            (c, s)
        })
    }

    fn tables(
        &self,
        positions: impl Iterator<Item = usize>,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        let mut n = 0;
        for p in positions {
            n += 1;
            for _half in 0..2 {
                for (c, s) in self.angles(p) {
                    cos.push(c);
                    sin.push(s);
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (n, self.head_dim), device)?,
            Tensor::from_vec(sin, (n, self.head_dim), device)?,
        ))
    }

    fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let d = x.dim(D::Minus1)?;
        let cos = cos.to_dtype(x.dtype())?;
        let sin = sin.to_dtype(x.dtype())?;
        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?)?)
    }

    /// Rotates `x` `[B, H, T, D]` whose tokens sit at positions `offset..offset+T`.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (_b, _h, t, _d) = x.dims4()?;
        let (cos, sin) = self.tables(offset..offset + t, x.device())?;
        Self::rotate(x, &cos, &sin)
    }

    /// Rotates `x` `[H, T, D]` (f32 rows of `head_dim`, any number of heads) whose `t` tokens
    /// sit at positions `offset..offset+t`, in place: the slice form of [`Rope::apply`].
    pub fn rotate_rows(&self, x: &mut [f32], t: usize, offset: usize) {
        let half = self.inv_freq.len();
        let tables: Vec<(f32, f32)> = (0..t).flat_map(|p| self.angles(offset + p)).collect();
        for (r, row) in x.chunks_exact_mut(self.head_dim).enumerate() {
            crate::attn::rotate_half(row, &tables[(r % t) * half..][..half]);
        }
    }

    /// Rotates `x` `[B, H, T, D]` with explicit positions (one per token), for rolling caches.
    pub fn apply_positions(&self, x: &Tensor, positions: &[usize]) -> Result<Tensor> {
        let (_b, _h, t, _d) = x.dims4()?;
        if positions.len() != t {
            return Err(crate::Error::Invalid(format!(
                "{} positions for {t} tokens",
                positions.len()
            )));
        }
        let (cos, sin) = self.tables(positions.iter().copied(), x.device())?;
        Self::rotate(x, &cos, &sin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_matches_scalar_formula_and_preserves_norm() {
        let d = 8;
        let rope = Rope::new(d, 10_000.0);
        let v: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::from_vec(v.clone(), (1, 1, 1, d), &Device::Cpu).unwrap();
        let pos = 5usize;
        let y = rope
            .apply(&x, pos)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for i in 0..d / 2 {
            let f = 1f32 / 10_000f32.powf((2 * i) as f32 / d as f32);
            let (s, c) = (pos as f32 * f).sin_cos();
            let a = v[i] * c - v[i + d / 2] * s;
            let b = v[i + d / 2] * c + v[i] * s;
            assert!((y[i] - a).abs() < 1e-5 && (y[i + d / 2] - b).abs() < 1e-5);
        }
        let y2 = rope
            .apply_positions(&x, &[pos])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, y2);
        let mut rows = v.clone();
        rope.rotate_rows(&mut rows, 1, pos);
        for (a, b) in rows.iter().zip(&y) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
