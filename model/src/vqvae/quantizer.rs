//! The vector quantiser: the nearest codebook entry of every latent position, and the lookup
//! back from codes to codebook vectors.
//!
//! Must match HF transformers' `ChameleonVQVAEVectorQuantizer` (tensor `quantize.embedding.weight`
//! `[num_embeddings, embed_dim]`): positions are taken in `(b, y, x)` order, and the distance is
//! computed in HF's form `(Σ z² + Σ e²) − 2 z·e` before the argmin (first index on ties), so the
//! float rounding is HF's and near-ties break the same way.

use super::blocks::Builder;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use candle_nn::Init;

/// The codebook (`quantize.embedding.weight`).
#[derive(Debug, Clone)]
pub(crate) struct Quantizer {
    embedding: Tensor,
}

impl Quantizer {
    /// `embedding.weight` under `b` (which is `…quantize`); initialised uniform in ±1/n as
    /// taming-transformers does.
    pub(crate) fn new(b: &Builder, n: usize, dim: usize) -> Result<Self> {
        let bound = 1.0 / n as f64;
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Quantizer {
            embedding: b.pp("embedding").get(&[n, dim], "weight", init)?,
        })
    }

    /// The codebook `[n, dim]`.
    pub(crate) fn embedding(&self) -> &Tensor {
        &self.embedding
    }

    /// Latents `[B, D, h, w]` → the nearest entry's index per position, `U32 [B·h·w]`.
    pub(crate) fn nearest(&self, z: &Tensor) -> Result<Tensor> {
        let (b, d, h, w) = z.dims4()?;
        let flat = z.permute((0, 2, 3, 1))?.reshape((b * h * w, d))?;
        let z2 = flat.sqr()?.sum_keepdim(1)?;
        let e2 = self.embedding.sqr()?.sum(1)?.unsqueeze(0)?;
        let ze = flat.matmul(&self.embedding.t()?)?;
        let dist = (z2.broadcast_add(&e2)? - (ze * 2.0)?)?;
        Ok(dist.argmin(1)?)
    }

    /// Codes (any integer dtype, any shape with `B·h·w` elements) → `[B, D, h, w]`.
    pub(crate) fn lookup(
        &self,
        codes: &Tensor,
        (b, h, w): (usize, usize, usize),
    ) -> Result<Tensor> {
        let n = self.embedding.dim(0)?;
        let flat = codes.flatten_all()?.to_dtype(DType::I64)?;
        if flat.dim(0)? != b * h * w {
            return Err(Error::Invalid(format!(
                "VQ-VAE decode: {} codes do not fill {b} × {h} × {w} positions",
                flat.dim(0)?
            )));
        }
        let values = flat.to_vec1::<i64>()?;
        if let Some(bad) = values.iter().find(|&&c| c < 0 || c >= n as i64) {
            return Err(Error::Invalid(format!(
                "VQ-VAE decode: code {bad} is outside the codebook (0..{n})"
            )));
        }
        let idx = flat.to_dtype(DType::U32)?;
        let d = self.embedding.dim(1)?;
        let e = self.embedding.index_select(&idx, 0)?;
        Ok(e.reshape((b, h, w, d))?
            .permute((0, 3, 1, 2))?
            .contiguous()?)
    }
}
