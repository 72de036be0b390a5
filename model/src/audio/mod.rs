//! Audio into the model (issue #15): neural audio codecs that turn a waveform into a few parallel
//! streams of discrete codes (and back), so audio can share the token vocabulary.
//!
//! Children: `encodec` (Meta's EnCodec, held against HF transformers' `EncodecModel`).

pub mod encodec;
