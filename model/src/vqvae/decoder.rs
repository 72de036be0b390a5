//! The VQ-VAE decoder, which HF transformers' `ChameleonVQVAE` does not have: Chameleon's
//! original VQGAN decoder in the taming-transformers layout, mirroring the encoder — `conv_in`
//! from `latent_channels`, the middle, then the levels from the last to the first, each with
//! `num_res_blocks + 1` resnet blocks (attention after each where the level's resolution is in
//! `attn_resolutions`) and, except level 0, an upsample (nearest ×2, 3×3 conv); GroupNorm,
//! swish, `conv_out` to `out_channels`.
//!
//! Tensor names `decoder.conv_in.*`, `decoder.mid.*`, `decoder.up.{i}.block.{j}.*`,
//! `decoder.up.{i}.attn.{j}.*`, `decoder.up.{i}.upsample.conv.*`, `decoder.norm_out.*`,
//! `decoder.conv_out.*` (level `i` counted from the full-resolution end, as taming stores them).
//! Held against our own PyTorch statement of this decoder (`RefDecoder` in
//! `scripts/golden_vqvae.py`, built from HF's resnet and attention block classes), not against HF.

use super::blocks::{group_norm, swish, Builder, Conv, Level, Mid, Upsample};
use super::config::VqVaeConfig;
use crate::error::Result;
use candle_core::{Module, Tensor};
use candle_nn::GroupNorm;

/// The decoder (`decoder.*`).
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    conv_in: Conv,
    mid: Mid,
    /// Levels in run order (the last level first), each with its upsample.
    up: Vec<(Level, Option<Upsample>)>,
    norm_out: GroupNorm,
    conv_out: Conv,
}

impl Decoder {
    /// The decoder's tensors under `b` (which is `…decoder`).
    pub(crate) fn new(b: &Builder, cfg: &VqVaeConfig) -> Result<Self> {
        let top = cfg.levels() - 1;
        let mut ch = cfg.level_channels(top);
        let conv_in = Conv::new(&b.pp("conv_in"), cfg.latent_channels, ch, 3, 1, 1)?;
        let mid = Mid::new(&b.pp("mid"), ch, cfg.vanilla_attn(), cfg.dropout)?;
        let mut up = Vec::with_capacity(cfg.levels());
        for i in (0..cfg.levels()).rev() {
            let lb = b.pp("up").pp(i);
            let cout = cfg.level_channels(i);
            let level = Level::new(
                &lb,
                cfg.num_res_blocks + 1,
                (ch, cout),
                cfg.decoder_level_has_attn(i),
                cfg.dropout,
            )?;
            ch = cout;
            let us = if i > 0 {
                Some(Upsample::new(&lb.pp("upsample"), ch)?)
            } else {
                None
            };
            up.push((level, us));
        }
        Ok(Decoder {
            conv_in,
            mid,
            up,
            norm_out: group_norm(&b.pp("norm_out"), ch)?,
            conv_out: Conv::new(&b.pp("conv_out"), ch, cfg.out_channels(), 3, 1, 1)?,
        })
    }

    /// `[B, latent_channels, h, w]` → pixels `[B, out_channels, h·s, w·s]`.
    pub(crate) fn forward(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.conv_in.forward(z)?;
        let mut h = self.mid.forward(&h, train)?;
        for (level, us) in &self.up {
            h = level.forward(&h, train)?;
            if let Some(us) = us {
                h = us.forward(&h)?;
            }
        }
        let h = swish(&self.norm_out.forward(&h)?)?;
        self.conv_out.forward(&h)
    }
}
