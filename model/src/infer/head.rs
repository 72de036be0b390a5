//! The LM head of the CPU inference path at a chosen precision ([`HeadKind`]): the model's f32
//! weights (GEMV on the host slice), an f16 copy (half the bytes per decoded token, which
//! dominate decode of large-vocabulary models) or an int8 copy with one scale per row.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use half::f16;
use tritter_kernels::HugeBuf;

/// Precision of the LM head on the CPU inference path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HeadKind {
    /// The model's f32 weights.
    #[default]
    F32,
    /// An f16 copy, GEMV with f32 accumulation.
    F16,
    /// An int8 copy with one absmax scale per row (a quarter of the f32 bytes).
    Int8,
}

impl HeadKind {
    /// Parses `f32`, `f16` or `int8` (the command line's and the benchmarks' names).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(HeadKind::F32),
            "f16" => Ok(HeadKind::F16),
            "int8" => Ok(HeadKind::Int8),
            other => Err(Error::Invalid(format!(
                "unknown head precision `{other}` (expected f32, f16 or int8)"
            ))),
        }
    }

    /// The name [`HeadKind::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::F32 => "f32",
            HeadKind::F16 => "f16",
            HeadKind::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for HeadKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        HeadKind::parse(s)
    }
}

/// The head's weights `[V, C]` at their precision.
#[derive(Debug, Clone)]
pub enum Head {
    /// The model's weights (shared with it).
    F32(Tensor),
    /// An f16 copy `[V, C]` (on huge pages: `tritter_kernels::huge`).
    F16(HugeBuf<f16>),
    /// An int8 copy with one scale per row.
    Int8(tritter_kernels::I8Rows),
}

/// `out[r] = Σ_c w[r, c] · x[c]` for f16 rows (`tritter_kernels::gemv_f16`).
pub fn gemv_f16(w: &[f16], x: &[f32], out: &mut [f32]) -> Result<()> {
    tritter_kernels::gemv_f16(w, x, out).map_err(|e| Error::Kernel(format!("f16 head: {e}")))
}

impl Head {
    /// The head of weights `w` `[V, C]` at precision `kind`.
    pub fn new(w: &Tensor, kind: HeadKind, hidden: usize) -> Result<Self> {
        Ok(match kind {
            HeadKind::F32 => Head::F32(w.clone()),
            HeadKind::F16 => {
                let v = w.to_dtype(DType::F16)?.flatten_all()?.to_vec1::<f16>()?;
                Head::F16(
                    HugeBuf::from_slice(&v).map_err(|e| Error::Kernel(format!("f16 head: {e}")))?,
                )
            }
            HeadKind::Int8 => {
                let v = w.flatten_all()?.to_vec1::<f32>()?;
                Head::Int8(
                    tritter_kernels::I8Rows::quantize(&v, hidden)
                        .map_err(|e| Error::Kernel(format!("int8 head: {e}")))?,
                )
            }
        })
    }

    pub fn kind(&self) -> HeadKind {
        match self {
            Head::F32(_) => HeadKind::F32,
            Head::F16(_) => HeadKind::F16,
            Head::Int8(_) => HeadKind::Int8,
        }
    }

    /// Bytes read per decoded token for a `[vocab, hidden]` head.
    pub fn bytes(&self, vocab: usize, hidden: usize) -> usize {
        match self {
            Head::F32(_) => vocab * hidden * 4,
            Head::F16(_) => vocab * hidden * 2,
            Head::Int8(q) => q.bytes(),
        }
    }

    /// Logits `[vocab]` of one final hidden row `h`.
    pub fn logits(&self, h: &[f32], vocab: usize) -> Result<Vec<f32>> {
        match self {
            Head::F32(w) => {
                let (storage, layout) = w.storage_and_layout();
                if let (candle_core::Storage::Cpu(cpu), Some((a, b))) =
                    (&*storage, layout.contiguous_offsets())
                {
                    if let Ok(all) = cpu.as_slice::<f32>() {
                        let mut out = vec![0f32; vocab];
                        tritter_kernels::gemv_f32(&all[a..b], h, &mut out)
                            .map_err(|e| Error::Kernel(format!("f32 head: {e}")))?;
                        return Ok(out);
                    }
                }
                drop(storage);
                // Weights not in host f32 (a bf16 model, another device): a candle matmul,
                // as `Transformer::logits_from_hidden` computes it.
                let x = Tensor::from_slice(h, (1, h.len()), w.device())?;
                Ok(x.broadcast_matmul(&w.to_dtype(x.dtype())?.t()?)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?)
            }
            Head::F16(w) => {
                let mut out = vec![0f32; vocab];
                gemv_f16(w, h, &mut out)?;
                Ok(out)
            }
            Head::Int8(q) => {
                let mut out = vec![0f32; vocab];
                tritter_kernels::gemv_i8(q, h, &mut out)
                    .map_err(|e| Error::Kernel(format!("int8 head: {e}")))?;
                Ok(out)
            }
        }
    }
}
