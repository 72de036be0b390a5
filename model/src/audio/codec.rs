//! One type for the audio codecs a checkpoint's `audio/` folder may hold, chosen by the
//! `model_type` of its `config.json` (Hugging Face's: `"encodec"` → [`Encodec`], `"mimi"` →
//! [`Mimi`]). Both encode a mono clip at their sampling rate into residual codebook codes
//! `[B, n_q, T]` and decode codes back to a clip.

use super::encodec::Encodec;
use super::mimi::Mimi;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::Path;

/// A neural audio codec.
#[derive(Debug, Clone)]
pub enum Codec {
    /// Meta's EnCodec (HF `EncodecModel`): every codebook acoustic.
    Encodec(Box<Encodec>),
    /// Kyutai's Mimi (HF `MimiModel`): codebook 0 semantic, the rest acoustic.
    Mimi(Box<Mimi>),
}

impl Codec {
    /// Loads the codec in `dir` (`config.json` + `model.safetensors`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::ConfigJson { path, cause: e })?;
        match v.get("model_type").and_then(|t| t.as_str()) {
            Some("encodec") => Ok(Codec::Encodec(Box::new(Encodec::load(dir, device)?))),
            Some("mimi") => Ok(Codec::Mimi(Box::new(Mimi::load(dir, device)?))),
            Some(other) => Err(Error::config(
                "model_type",
                format!("audio codec `{other}` is not supported (encodec, mimi)"),
            )),
            None => Err(Error::config(
                "model_type",
                "missing: the audio codec's config.json must say encodec or mimi",
            )),
        }
    }

    /// `"encodec"` or `"mimi"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Codec::Encodec(_) => "encodec",
            Codec::Mimi(_) => "mimi",
        }
    }

    /// Codes `[B, n_q, T]` (i64) of `samples` `[B, 1, S]` (f32 at [`Codec::sample_rate`]).
    pub fn encode(&self, samples: &Tensor, n_q: usize) -> Result<Tensor> {
        match self {
            Codec::Encodec(c) => c.encode(samples, n_q),
            Codec::Mimi(c) => c.encode(samples, n_q),
        }
    }

    /// The clip `[B, 1, S]` of codes `[B, n_q, T]`.
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        match self {
            Codec::Encodec(c) => c.decode(codes),
            Codec::Mimi(c) => c.decode(codes),
        }
    }

    /// Samples per second the codec reads and writes.
    pub fn sample_rate(&self) -> u32 {
        match self {
            Codec::Encodec(c) => c.sample_rate(),
            Codec::Mimi(c) => c.sample_rate(),
        }
    }

    /// Code frames per second.
    pub fn frame_rate(&self) -> f64 {
        match self {
            Codec::Encodec(c) => c.frame_rate(),
            Codec::Mimi(c) => c.frame_rate(),
        }
    }

    /// Residual codebooks the codec has.
    pub fn num_quantizers(&self) -> usize {
        match self {
            Codec::Encodec(c) => c.num_quantizers(),
            Codec::Mimi(c) => c.num_quantizers(),
        }
    }

    /// Entries per codebook.
    pub fn codebook_size(&self) -> usize {
        match self {
            Codec::Encodec(c) => c.codebook_size(),
            Codec::Mimi(c) => c.codebook_size(),
        }
    }

    /// Parameters of the codec.
    pub fn param_count(&self) -> usize {
        match self {
            Codec::Encodec(c) => c.param_count(),
            Codec::Mimi(c) => c.param_count(),
        }
    }

    /// Codebooks that carry semantic content (Mimi's first; none for EnCodec).
    pub fn semantic_codebooks(&self) -> usize {
        match self {
            Codec::Encodec(_) => 0,
            Codec::Mimi(c) => c.num_semantic_quantizers(),
        }
    }
}
