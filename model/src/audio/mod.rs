//! Audio into the model (issue #15): neural audio codecs that turn a clip into a few parallel
//! streams of residual codebook codes and back, and the mapping of those codes into the unified
//! vocabulary's audio range (early fusion by tokens, between `<audio>` and `</audio>`).
//!
//! Children: `encodec` (Meta's EnCodec, held against HF transformers' `EncodecModel`), `tokens`
//! (codes ↔ vocabulary ids, codebooks the language model sees), `spectral` (multi-scale STFT
//! loss for codec training).

pub mod encodec;
pub mod spectral;
pub mod tokens;

pub use tokens::AudioTokens;
