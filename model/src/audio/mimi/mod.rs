//! Mimi (Kyutai's neural audio codec, Hugging Face transformers' `MimiModel`), inference only:
//! 24 kHz mono audio ↔ up to 32 codebooks of 2048 entries at 12.5 frames per second. Must match
//! HF transformers 5.24's `MimiModel.encode(x, num_quantizers=n_q).audio_codes` and
//! `MimiModel.decode(codes).audio_values` (non-streaming), loading the `config.json` +
//! `model.safetensors` that `MimiModel.save_pretrained` writes; tested against
//! `tests/golden/mimi_tiny/` (`scripts/golden_mimi.py`).
//!
//! Path: SEANet encoder → encoder transformer → latent downsample → split residual VQ (encode);
//! split RVQ lookup → latent upsample → decoder transformer → SEANet decoder (decode). Codebook 0
//! is the semantic quantiser's, codebooks 1.. the acoustic quantiser's (see [`Mimi`]).
//!
//! Built on candle-transformers' `models::mimi` modules (SEANet, transformer, convolutions,
//! quantiser), which read HF's tensor names and reproduce HF's padding and RoPE layout. Our own
//! code is only what differs from HF or is missing there:
//! * the config: HF's `MimiConfig` JSON with HF's derived values (candle has only a hard-coded
//!   `v0_1` config); what candle's modules hard-code is checked and a different value is a
//!   config error (one semantic codebook, no GQA, GELU, LayerNorm eps 1e-5, depthwise upsample,
//!   `trim_right_ratio` 1, pad mode constant/replicate, quantiser projections present);
//! * the sliding window: candle's attention lets a query see `context + 1` keys, HF's
//!   `sliding_window` keys, so candle gets `context = sliding_window - 1` (without that, results
//!   would differ from HF's once a clip is longer than the window: 10 s for the real model);
//! * fewer codebooks than the model has: candle's `Encodec` quantises and decodes with all of
//!   them; we build the quantiser with the first `n_q` (HF decodes any prefix);
//! * decode runs one batch item at a time: candle-core 0.11.1's CPU `conv_transpose1d` (the
//!   col2im path both the latent upsample and the SEANet decoder use) gives wrong results for a
//!   batch of more than one (max|Δ|/max|ref| 1.7 on the upsample of `mimi_tiny`; one item at a
//!   time it matches torch to 6e-8);
//! * `&self` encode/decode (candle's take `&mut self` for their streaming caches: we run a clone
//!   of each transformer, whose caches start empty), and a name/shape check of every tensor
//!   before candle's constructors run, so a bad checkpoint is a clear error.
//!
//! Limits: a clip may be at most `max_position_embeddings` transformer steps long (candle's RoPE
//! tables are built at load; 8000 steps = 320 s for the real model), an error beyond; no
//! streaming API and no `padding_mask` (HF's batched-padding support).

mod config;
mod layout;
mod model;

pub use config::MimiConfig;
pub use model::Mimi;
