//! The VQ-VAE encoder: `conv_in`, one level per `channel_multiplier` entry (resnet blocks, their
//! attention blocks where the level's resolution is in `attn_resolutions`, a downsample between
//! levels), the middle, GroupNorm, swish, `conv_out` to `latent_channels`.
//!
//! Must match HF transformers' `ChameleonVQVAEEncoder` (forward and tensor names
//! `encoder.conv_in.*`, `encoder.down.{i}.block.{j}.*`, `encoder.down.{i}.attn.{j}.*`,
//! `encoder.down.{i}.downsample.conv.*`, `encoder.mid.*`, `encoder.norm_out.*`,
//! `encoder.conv_out.*`); held against HF's output by `model/tests/golden_vqvae.rs`.

use super::blocks::{group_norm, swish, Builder, Conv, Downsample, Level, Mid};
use super::config::VqVaeConfig;
use crate::error::Result;
use candle_core::{Module, Tensor};
use candle_nn::GroupNorm;

/// The encoder (`encoder.*`).
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    conv_in: Conv,
    down: Vec<(Level, Option<Downsample>)>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv,
}

impl Encoder {
    /// The encoder's tensors under `b` (which is `…encoder`).
    pub(crate) fn new(b: &Builder, cfg: &VqVaeConfig) -> Result<Self> {
        let conv_in = Conv::new(
            &b.pp("conv_in"),
            cfg.in_channels,
            cfg.base_channels,
            3,
            1,
            1,
        )?;
        let mut down = Vec::with_capacity(cfg.levels());
        let mut ch = cfg.base_channels;
        for i in 0..cfg.levels() {
            let lb = b.pp("down").pp(i);
            let cout = cfg.level_channels(i);
            let level = Level::new(
                &lb,
                cfg.num_res_blocks,
                (ch, cout),
                cfg.level_has_attn(i),
                cfg.dropout,
            )?;
            ch = cout;
            let ds = if i + 1 < cfg.levels() {
                Some(Downsample::new(&lb.pp("downsample"), ch)?)
            } else {
                None
            };
            down.push((level, ds));
        }
        Ok(Encoder {
            conv_in,
            down,
            mid: Mid::new(&b.pp("mid"), ch, cfg.vanilla_attn(), cfg.dropout)?,
            norm_out: group_norm(&b.pp("norm_out"), ch)?,
            conv_out: Conv::new(&b.pp("conv_out"), ch, cfg.latent_channels, 3, 1, 1)?,
        })
    }

    /// Pixels `[B, in_channels, H, W]` → `[B, latent_channels, H / s, W / s]`.
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for (level, ds) in &self.down {
            h = level.forward(&h, train)?;
            if let Some(ds) = ds {
                h = ds.forward(&h)?;
            }
        }
        let h = self.mid.forward(&h, train)?;
        let h = swish(&self.norm_out.forward(&h)?)?;
        self.conv_out.forward(&h)
    }
}
