//! The image tokenizer (issue #14): Chameleon's VQ-VAE. An image `[B, 3, H, W]` in [-1, 1]
//! becomes `(H/s)·(W/s)` codes (`s = 2^(levels − 1)`; 16 for Chameleon's 512-pixel config, 1024
//! codes), which map into the image range of the unified vocabulary; codes decode back to pixels.
//!
//! What each part is held against:
//! - encoder, `quant_conv`, quantiser (codes and latents): HF transformers' `ChameleonVQVAE`
//!   (`modeling_chameleon.py`), tensor names and config keys included — golden fixtures in
//!   `tests/golden/chameleon_vqvae/`, written by `scripts/golden_vqvae.py`.
//! - `post_quant_conv` + decoder: HF has no decoder, so this follows Chameleon's original VQGAN
//!   (taming-transformers layout, `decoder.*`) and is held against our own PyTorch statement of
//!   it in the same script (`tests/golden/chameleon_vqvae_decoder/`).
//! - losses: the VQ-VAE paper's form (reconstruction MSE, codebook, β·commitment, straight-through
//!   quantiser), tested as a property (AdamW steps lower the loss). HF's `embedding_loss` is the
//!   taming "legacy" form with the β on the other term: `commitment / β + β · codebook`.
//!
//! Children: `config` (HF config), `blocks` (convs, norms, resnet / attention / resampling
//! blocks), `encoder`, `decoder`, `quantizer`, `model` ([`VqVae`], load / save / losses),
//! `ids` (codes ↔ vocabulary ids), `train` (a small AdamW loop).

mod blocks;
pub mod config;
mod decoder;
mod encoder;
pub mod ids;
pub mod model;
mod quantizer;
pub mod train;

pub use config::VqVaeConfig;
pub use ids::{check_codebook_fits, codes_to_ids, ids_to_codes};
pub use model::{VqLosses, VqVae};
pub use train::{train_vqvae, VqTrainOptions};
