//! The SEANet encoder and decoder as HF transformers' `EncodecEncoder` / `EncodecDecoder` build
//! them: a flat `layers` list whose indices name the tensors (`encoder.layers.{i}.…`; ELUs take
//! an index and hold nothing), residual blocks `EncodecResnetBlock` (`block.1` conv k × dilation
//! `growth^j`, `block.3` conv 1 wide, ELU before each; `shortcut` a 1-wide conv or identity).
//!
//! Encoder: conv(`audio_channels → num_filters`, `kernel_size`); per ratio of
//! `reversed(upsampling_ratios)`: residual blocks, ELU, conv(`C → 2C`, kernel `2r`, stride `r`);
//! LSTM; ELU; conv(`→ hidden_size`, `last_kernel_size`). Decoder: the mirror, with transposed
//! convs (`C → C/2`) and the ratios in order.

use super::config::EncodecConfig;
use super::conv::{elu, Conv1d, ConvTranspose1d, EncodecPath};
use super::lstm::Lstm;
use super::params::Params;
use crate::error::Result;
use candle_core::Tensor;

/// `EncodecResnetBlock`.
#[derive(Debug, Clone)]
pub(crate) struct ResnetBlock {
    conv1: Conv1d,
    conv2: Conv1d,
    shortcut: Option<Conv1d>,
}

impl ResnetBlock {
    fn new(p: &Params, cfg: &EncodecConfig, dim: usize, dilation: usize) -> Result<Self> {
        let hidden = dim / cfg.compress;
        let b = p.pp("block");
        let conv1 = Conv1d::new(
            &b.pp(1),
            cfg,
            (dim, hidden),
            cfg.residual_kernel_size,
            1,
            dilation,
        )?;
        let conv2 = Conv1d::new(&b.pp(3), cfg, (hidden, dim), 1, 1, 1)?;
        let shortcut = if cfg.use_conv_shortcut {
            Some(Conv1d::new(&p.pp("shortcut"), cfg, (dim, dim), 1, 1, 1)?)
        } else {
            None
        };
        Ok(ResnetBlock {
            conv1,
            conv2,
            shortcut,
        })
    }

    fn forward(&self, x: &Tensor, path: EncodecPath) -> Result<Tensor> {
        let h = self.conv1.forward(&elu(x)?, path)?;
        let h = self.conv2.forward(&elu(&h)?, path)?;
        let residual = match &self.shortcut {
            Some(s) => s.forward(x, path)?,
            None => x.clone(),
        };
        Ok((residual + h)?)
    }
}

/// One entry of a `layers` list.
#[derive(Debug, Clone)]
enum Layer {
    Conv(Conv1d),
    ConvT(ConvTranspose1d),
    Res(ResnetBlock),
    Lstm(Lstm),
    Elu,
}

/// A SEANet stack (encoder or decoder).
#[derive(Debug, Clone)]
pub(crate) struct Seanet {
    layers: Vec<Layer>,
}

/// Appends layers while counting their HF indices.
struct Stack<'p, 'a> {
    p: &'p Params<'a>,
    layers: Vec<Layer>,
}

impl<'a> Stack<'_, 'a> {
    fn next(&self) -> Params<'a> {
        self.p.pp("layers").pp(self.layers.len())
    }
}

impl Seanet {
    /// `encoder.layers.*` under `p` (which is `encoder`).
    pub(crate) fn encoder(p: &Params, cfg: &EncodecConfig) -> Result<Self> {
        let mut s = Stack { p, layers: vec![] };
        let nf = cfg.num_filters;
        let first = Conv1d::new(
            &s.next(),
            cfg,
            (cfg.audio_channels, nf),
            cfg.kernel_size,
            1,
            1,
        )?;
        s.layers.push(Layer::Conv(first));
        let mut scale = 1;
        for &ratio in cfg.upsampling_ratios.iter().rev() {
            let ch = scale * nf;
            let mut dilation = 1;
            for _ in 0..cfg.num_residual_layers {
                s.layers
                    .push(Layer::Res(ResnetBlock::new(&s.next(), cfg, ch, dilation)?));
                dilation *= cfg.dilation_growth_rate;
            }
            s.layers.push(Layer::Elu);
            let down = Conv1d::new(&s.next(), cfg, (ch, 2 * ch), 2 * ratio, ratio, 1)?;
            s.layers.push(Layer::Conv(down));
            scale *= 2;
        }
        let lstm = Lstm::new(&s.next(), scale * nf, cfg.num_lstm_layers)?;
        s.layers.push(Layer::Lstm(lstm));
        s.layers.push(Layer::Elu);
        let last = Conv1d::new(
            &s.next(),
            cfg,
            (scale * nf, cfg.hidden_size),
            cfg.last_kernel_size,
            1,
            1,
        )?;
        s.layers.push(Layer::Conv(last));
        Ok(Seanet { layers: s.layers })
    }

    /// `decoder.layers.*` under `p` (which is `decoder`).
    pub(crate) fn decoder(p: &Params, cfg: &EncodecConfig) -> Result<Self> {
        let mut s = Stack { p, layers: vec![] };
        let nf = cfg.num_filters;
        let mut scale = 1usize << cfg.upsampling_ratios.len();
        let first = Conv1d::new(
            &s.next(),
            cfg,
            (cfg.hidden_size, scale * nf),
            cfg.kernel_size,
            1,
            1,
        )?;
        s.layers.push(Layer::Conv(first));
        let lstm = Lstm::new(&s.next(), scale * nf, cfg.num_lstm_layers)?;
        s.layers.push(Layer::Lstm(lstm));
        for &ratio in &cfg.upsampling_ratios {
            let ch = scale * nf;
            s.layers.push(Layer::Elu);
            let up = ConvTranspose1d::new(&s.next(), cfg, (ch, ch / 2), 2 * ratio, ratio)?;
            s.layers.push(Layer::ConvT(up));
            let mut dilation = 1;
            for _ in 0..cfg.num_residual_layers {
                s.layers.push(Layer::Res(ResnetBlock::new(
                    &s.next(),
                    cfg,
                    ch / 2,
                    dilation,
                )?));
                dilation *= cfg.dilation_growth_rate;
            }
            scale /= 2;
        }
        s.layers.push(Layer::Elu);
        let last = Conv1d::new(
            &s.next(),
            cfg,
            (nf, cfg.audio_channels),
            cfg.last_kernel_size,
            1,
            1,
        )?;
        s.layers.push(Layer::Conv(last));
        Ok(Seanet { layers: s.layers })
    }

    /// Runs the stack over `[B, C, L]`.
    pub(crate) fn forward(&self, x: &Tensor, path: EncodecPath) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = match layer {
                Layer::Conv(c) => c.forward(&h, path)?,
                Layer::ConvT(c) => c.forward(&h, path)?,
                Layer::Res(r) => r.forward(&h, path)?,
                Layer::Lstm(l) => l.forward(&h, path)?,
                Layer::Elu => elu(&h)?,
            };
        }
        Ok(h)
    }
}
