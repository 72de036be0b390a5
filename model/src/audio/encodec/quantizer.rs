//! EnCodec's residual vector quantiser (`EncodecResidualVectorQuantizer`): codebook `q` quantises
//! what codebooks `0..q` left over; decoding sums the chosen entries.
//!
//! Must match HF transformers: codebooks `quantizer.layers.{q}.codebook.embed`
//! `[codebook_size, codebook_dim]`, the nearest entry by HF's distance form
//! `(Σx² − 2·x·e) + Σe²` (argmin, so float rounding and near-ties go HF's way). HF's codebooks
//! are EMA-updated buffers (`inited`, `cluster_size`, `embed_avg` beside `embed`); those are kept
//! when loaded, and written on save (`embed_avg = embed`, `cluster_size = 0`, `inited = 1` for a
//! model trained here), but our training moves `embed` by gradient (the VQ-VAE codebook loss),
//! see [`Rvq::train_forward`]. On the CPU in f32, [`Rvq::encode_host`] searches on host buffers
//! (`rvq_cpu`, one `gemm` per block of rows and codebook).

use super::conv::cached;
use super::params::Params;
use super::rvq_cpu::{self, HostCodebook};
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use candle_nn::Init;
use std::sync::{Arc, OnceLock};

/// The codebooks.
#[derive(Debug, Clone)]
pub(crate) struct Rvq {
    embeds: Vec<Tensor>,
    /// The codebooks on the host, made on first use and kept where they cannot change (loaded
    /// from a checkpoint onto the CPU).
    host: Option<OnceLock<Arc<Vec<HostCodebook>>>>,
}

impl Rvq {
    /// `layers.{q}.codebook.*` under `p` (which is `quantizer`), `n` codebooks.
    pub(crate) fn new(p: &Params, n: usize, size: usize, dim: usize) -> Result<Self> {
        let mut embeds = Vec::with_capacity(n);
        let init = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        for q in 0..n {
            let cb = p.pp("layers").pp(q).pp("codebook");
            let embed = cb.get(&[size, dim], "embed", init)?;
            // The EMA buffers: kept from a checkpoint, synthesised for a fresh model.
            let buffers: [(&str, Vec<usize>); 3] = [
                ("inited", vec![1]),
                ("cluster_size", vec![size]),
                ("embed_avg", vec![size, dim]),
            ];
            for (name, shape) in buffers {
                let t = match cb.take(&shape, name)? {
                    Some(t) => t,
                    None => match name {
                        "inited" => Tensor::ones(1, DType::F32, embed.device())?,
                        "cluster_size" => Tensor::zeros(size, DType::F32, embed.device())?,
                        _ => embed.detach(),
                    },
                };
                cb.put(name, &t);
            }
            embeds.push(embed);
        }
        let host = (p.is_file() && p.device().is_cpu()).then(OnceLock::new);
        Ok(Rvq { embeds, host })
    }

    /// One item's embeddings, frames `[T, D]` (row-major, consumed) → codes `[n_q, T]` of the
    /// first `n_q` codebooks, searched on the host.
    pub(crate) fn encode_host(&self, frames: Vec<f32>, len: usize, n_q: usize) -> Result<Vec<u32>> {
        // Every codebook when they are kept, else the ones this call uses.
        let keep = match self.host {
            Some(_) => self.len(),
            None => n_q.min(self.len()),
        };
        let books = cached(self.host.as_ref(), || {
            self.embeds[..keep].iter().map(HostCodebook::new).collect()
        })?;
        if n_q > books.len() {
            return Err(Error::Invalid(format!(
                "EnCodec: {n_q} codebooks requested of {}",
                books.len()
            )));
        }
        let books: Vec<&HostCodebook> = books[..n_q].iter().collect();
        rvq_cpu::encode(&books, frames, len)
    }

    /// Number of codebooks.
    pub(crate) fn len(&self) -> usize {
        self.embeds.len()
    }

    /// Entries per codebook.
    pub(crate) fn size(&self) -> Result<usize> {
        Ok(self
            .embeds
            .first()
            .map(|e| e.dim(0))
            .transpose()?
            .unwrap_or(0))
    }

    /// Rows `[N, D]` → the nearest entry of codebook `q`, `U32 [N]`.
    fn nearest(&self, q: usize, flat: &Tensor) -> Result<Tensor> {
        let e = &self.embeds[q];
        let x2 = flat.sqr()?.sum_keepdim(1)?;
        let xe = (flat * 2.0)?.matmul(&e.t()?)?;
        let e2 = e.sqr()?.sum(1)?.unsqueeze(0)?;
        let dist = x2.broadcast_sub(&xe)?.broadcast_add(&e2)?;
        Ok(dist.argmin(1)?)
    }

    /// Embeddings `[B, D, T]` → codes `I64 [B, n_q, T]` of the first `n_q` codebooks.
    pub(crate) fn encode(&self, emb: &Tensor, n_q: usize) -> Result<Tensor> {
        let (b, d, t) = emb.dims3()?;
        let mut residual = emb.transpose(1, 2)?.reshape((b * t, d))?;
        let mut codes = Vec::with_capacity(n_q);
        for q in 0..n_q {
            let idx = self.nearest(q, &residual)?;
            if q + 1 < n_q {
                residual = (residual - self.embeds[q].index_select(&idx, 0)?)?;
            }
            codes.push(idx.reshape((b, t))?);
        }
        Ok(Tensor::stack(&codes, 1)?.to_dtype(DType::I64)?)
    }

    /// Checks codes `[B, n_q, T]` (any integer dtype) against the codebooks; `U32` codes.
    fn check(&self, codes: &Tensor) -> Result<Tensor> {
        let dims = codes.dims();
        if dims.len() != 3 || dims[1] == 0 || dims[1] > self.len() {
            return Err(Error::Invalid(format!(
                "EnCodec decode: codes of shape {dims:?}; expected [batch, n_q, frames] with 1 ≤ \
                 n_q ≤ {}",
                self.len()
            )));
        }
        let n = self.size()? as i64;
        let wide = codes.to_dtype(DType::I64)?;
        let (lo, hi) = (
            wide.flatten_all()?.min(0)?.to_scalar::<i64>()?,
            wide.flatten_all()?.max(0)?.to_scalar::<i64>()?,
        );
        if lo < 0 || hi >= n {
            let bad = if lo < 0 { lo } else { hi };
            return Err(Error::Invalid(format!(
                "EnCodec decode: code {bad} is outside the codebook (0..{n})"
            )));
        }
        Ok(wide.to_dtype(DType::U32)?)
    }

    /// Codes `[B, n_q, T]` → the sum of the chosen entries, `[B, D, T]`.
    pub(crate) fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let codes = self.check(codes)?;
        let (b, n_q, t) = codes.dims3()?;
        let mut sum: Option<Tensor> = None;
        for q in 0..n_q {
            let idx = codes.narrow(1, q, 1)?.flatten_all()?;
            let e = self.embeds[q].index_select(&idx, 0)?;
            sum = Some(match sum {
                Some(s) => (s + e)?,
                None => e,
            });
        }
        let d = self.embeds[0].dim(1)?;
        let sum = sum.ok_or_else(|| Error::Invalid("EnCodec decode: no codebooks".into()))?;
        Ok(sum.reshape((b, t, d))?.transpose(1, 2)?.contiguous()?)
    }

    /// Training form over embeddings `z` `[B, D, T]` with all codebooks: the codes, the
    /// straight-through quantised latents `z + sg[Σe − z]` (value `Σe`, gradient to `z`), the
    /// codebook loss `mean_q mean((sg[r_q] − e_q)²)` (gradient to the codebooks) and the
    /// commitment loss `mean_q mean((r_q − sg[e_q])²)` (gradient to the encoder), where `r_q` is
    /// the residual codebook `q` sees (`r_{q+1} = r_q − sg[e_q]`); last, the first level alone
    /// straight-through, `z + sg[e_0 − z]` `[B, D, T]` (what semantic distillation teaches).
    pub(crate) fn train_forward(
        &self,
        z: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor, Tensor)> {
        let (b, d, t) = z.dims3()?;
        let flat = z.transpose(1, 2)?.reshape((b * t, d))?;
        let mut residual = flat.clone();
        let mut quantized: Option<Tensor> = None;
        let (mut codebook, mut commitment) = (Vec::new(), Vec::new());
        let mut codes = Vec::new();
        let mut first = None;
        for q in 0..self.len() {
            let idx = self.nearest(q, &residual.detach())?;
            let e = self.embeds[q].index_select(&idx, 0)?;
            if q == 0 {
                first = Some((&flat + (e.detach() - &flat)?.detach())?);
            }
            codebook.push((residual.detach() - &e)?.sqr()?.mean_all()?);
            commitment.push((&residual - e.detach())?.sqr()?.mean_all()?);
            residual = (residual - e.detach())?;
            quantized = Some(match quantized {
                Some(s) => (s + e.detach())?,
                None => e.detach(),
            });
            codes.push(idx.reshape((b, t))?);
        }
        let n = self.len() as f64;
        let quantized = quantized.ok_or_else(|| Error::Invalid("EnCodec: no codebooks".into()))?;
        let z_q = (&flat + (quantized - &flat)?.detach())?
            .reshape((b, t, d))?
            .transpose(1, 2)?
            .contiguous()?;
        let codebook = (Tensor::stack(&codebook, 0)?.sum_all()? / n)?;
        let commitment = (Tensor::stack(&commitment, 0)?.sum_all()? / n)?;
        let codes = Tensor::stack(&codes, 1)?.to_dtype(DType::I64)?;
        let first = first
            .ok_or_else(|| Error::Invalid("EnCodec: no codebooks".into()))?
            .reshape((b, t, d))?
            .transpose(1, 2)?
            .contiguous()?;
        Ok((z_q, codes, commitment, codebook, first))
    }
}
