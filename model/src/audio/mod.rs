//! Audio into the model (issue #15): neural audio codecs that turn a clip into a few parallel
//! streams of residual codebook codes and back, and the mapping of those codes into the unified
//! vocabulary's audio range (early fusion by tokens, between `<audio>` and `</audio>`).
//!
//! Children: `encodec` (Meta's EnCodec, held against HF transformers' `EncodecModel`), `mimi`
//! (Kyutai's Mimi on candle-transformers' modules, held against HF's `MimiModel`; codebook 0 is
//! semantic), `codec` (the codecs a checkpoint may hold, by `model_type`), `part` (a
//! checkpoint's `audio/` folder), `tokens` (codes ↔ vocabulary ids, codebooks the language model
//! sees), `spectral` (multi-scale STFT loss for codec training).

pub mod codec;
pub mod encodec;
pub mod mimi;
pub mod part;
pub mod spectral;
pub mod tokens;

pub use codec::Codec;
pub use part::{save_audio, AudioPart, AUDIO_DIR};
pub use tokens::AudioTokens;
