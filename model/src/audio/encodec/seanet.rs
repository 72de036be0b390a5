//! The SEANet encoder and decoder as HF transformers' `EncodecEncoder` / `EncodecDecoder` build
//! them: a flat `layers` list whose indices name the tensors (`encoder.layers.{i}.…`; ELUs take
//! an index and hold nothing), residual blocks `EncodecResnetBlock` (`block.1` conv k × dilation
//! `growth^j`, `block.3` conv 1 wide, ELU before each; `shortcut` a 1-wide conv or identity).
//!
//! Encoder: conv(`audio_channels → num_filters`, `kernel_size`); per ratio of
//! `reversed(upsampling_ratios)`: residual blocks, ELU, conv(`C → 2C`, kernel `2r`, stride `r`);
//! LSTM; ELU; conv(`→ hidden_size`, `last_kernel_size`). Decoder: the mirror, with transposed
//! convs (`C → C/2`) and the ratios in order.
//!
//! On the fast path on the CPU in f32, a stack without transposed convs (the encoder) runs on
//! host frames (`cpu`), each ELU fused into the padding copy of the conv after it; the candle
//! form ([`Seanet::forward_candle`]) is what the tests hold it against.

use super::config::EncodecConfig;
use super::conv::{elu, Conv1d, ConvTranspose1d, EncodecPath};
use super::conv_cpu;
use super::cpu::{elu_inplace, BufferPool, Frames};
use super::lstm::Lstm;
use super::params::Params;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use std::sync::Arc;

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

    /// [`ResnetBlock::forward`] on host frames: fused per tile of rows where it can be, else
    /// conv by conv, the second conv accumulating into the shortcut's output.
    fn forward_host(&self, x: &Frames, pool: &BufferPool) -> Result<Frames> {
        let shortcut = self.shortcut.as_ref().map(|s| s.host()).transpose()?;
        let fused = conv_cpu::res_block(
            &*self.conv1.host()?,
            &*self.conv2.host()?,
            shortcut.as_deref(),
            &self.conv1.host_input(x, true),
            pool,
        )?;
        if let Some(y) = fused {
            return Ok(y);
        }
        let mut h = self.conv1.forward_host(x, true, pool)?;
        elu_inplace(&mut h);
        let mut y = match &self.shortcut {
            Some(s) => s.forward_host(x, false, pool)?,
            None => x.clone(),
        };
        self.conv2.forward_host_add(&h, false, &mut y, pool)?;
        pool.give(h.data);
        Ok(y)
    }
}

/// One entry of a `layers` list.
#[derive(Debug, Clone)]
enum Layer {
    Conv(Conv1d),
    ConvT(ConvTranspose1d),
    Res(Box<ResnetBlock>),
    Lstm(Lstm),
    Elu,
}

/// A SEANet stack (encoder or decoder).
#[derive(Debug, Clone)]
pub(crate) struct Seanet {
    layers: Vec<Layer>,
    /// The host path's activation buffers, kept between calls.
    pool: Arc<BufferPool>,
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
                s.layers.push(Layer::Res(Box::new(ResnetBlock::new(
                    &s.next(),
                    cfg,
                    ch,
                    dilation,
                )?)));
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
        Ok(Seanet {
            layers: s.layers,
            pool: Arc::default(),
        })
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
                s.layers.push(Layer::Res(Box::new(ResnetBlock::new(
                    &s.next(),
                    cfg,
                    ch / 2,
                    dilation,
                )?)));
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
        Ok(Seanet {
            layers: s.layers,
            pool: Arc::default(),
        })
    }

    /// Whether [`Seanet::forward_host`] can run this stack (no transposed convs).
    pub(crate) fn host_ok(&self) -> bool {
        !self.layers.iter().any(|l| matches!(l, Layer::ConvT(_)))
    }

    /// Runs the stack over `[B, C, L]`: on host frames for the fast path on the CPU in f32 where
    /// [`Seanet::host_ok`], else with candle's ops.
    pub(crate) fn forward(&self, x: &Tensor, path: EncodecPath) -> Result<Tensor> {
        if path == EncodecPath::Fast
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.host_ok()
        {
            let items = (0..x.dim(0)?)
                .map(|b| self.forward_host(Frames::from_tensor(x, b)?))
                .collect::<Result<Vec<_>>>()?;
            return Frames::to_tensor(items, x.device());
        }
        self.forward_candle(x, path)
    }

    /// One item's frames `[L, C]` through the stack on the host (an ELU is applied by the conv
    /// after it, in its padding copy).
    pub(crate) fn forward_host(&self, mut h: Frames) -> Result<Frames> {
        let mut pending_elu = false;
        for layer in &self.layers {
            if !matches!(layer, Layer::Conv(_)) && pending_elu {
                elu_inplace(&mut h);
                pending_elu = false;
            }
            let y = match layer {
                Layer::Elu => {
                    pending_elu = true;
                    continue;
                }
                Layer::Conv(c) => {
                    let y = c.forward_host(&h, pending_elu, &self.pool)?;
                    pending_elu = false;
                    y
                }
                Layer::Res(r) => r.forward_host(&h, &self.pool)?,
                Layer::Lstm(l) => l.forward_host(&h)?,
                Layer::ConvT(_) => {
                    return Err(Error::Invalid(
                        "EnCodec: the host path has no transposed conv".into(),
                    ))
                }
            };
            self.pool.give(std::mem::replace(&mut h, y).data);
        }
        if pending_elu {
            elu_inplace(&mut h);
        }
        Ok(h)
    }

    /// Runs the stack over `[B, C, L]` with candle's ops.
    pub(crate) fn forward_candle(&self, x: &Tensor, path: EncodecPath) -> Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{VarBuilder, VarMap};

    #[test]
    fn the_host_encoder_equals_the_candle_one_across_configs() {
        let dev = Device::Cpu;
        let variants = [
            (true, "reflect", "weight_norm", true),
            (false, "reflect", "time_group_norm", true),
            (true, "constant", "weight_norm", false),
            (false, "replicate", "weight_norm", true),
            (true, "replicate", "time_group_norm", false),
        ];
        for (causal, pad, norm, shortcut) in variants {
            let cfg = EncodecConfig {
                num_filters: 4,
                upsampling_ratios: vec![2, 3],
                hidden_size: 8,
                num_residual_layers: 2,
                use_causal_conv: causal,
                pad_mode: pad.into(),
                norm_type: norm.into(),
                use_conv_shortcut: shortcut,
                ..Default::default()
            };
            let map = VarMap::new();
            let p = Params::vars(VarBuilder::from_varmap(&map, DType::F32, &dev));
            let enc = Seanet::encoder(&p.pp("encoder"), &cfg).unwrap();
            let dec = Seanet::decoder(&p.pp("decoder"), &cfg).unwrap();
            assert!(enc.host_ok() && !dec.host_ok());
            for len in [50, 7] {
                let x = Tensor::randn(0f32, 1.0, (2, 1, len), &dev).unwrap();
                let want = enc.forward_candle(&x, EncodecPath::Differentiable).unwrap();
                let got = enc.forward(&x, EncodecPath::Fast).unwrap();
                assert_eq!(got.dims(), want.dims());
                let d = (got - want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(d < 1e-4, "{causal} {pad} {norm} {shortcut} len {len}: {d}");
            }
            let frames =
                Frames::from_tensor(&Tensor::zeros((1, 8, 3), DType::F32, &dev).unwrap(), 0);
            assert!(dec.forward_host(frames.unwrap()).is_err());
        }
    }
}
