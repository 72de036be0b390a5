//! `EncodecLSTM`: a stacked `nn.LSTM(dim, dim, num_layers)` over the time axis of a `[B, C, T]`
//! activation, with a residual from its input to its output (`lstm(x) + x`).
//!
//! Must match torch's LSTM: gates `i, f, g, o` stacked in that order in `weight_ih_l{k}`
//! `[4H, in]` / `weight_hh_l{k}` `[4H, H]` (+ `bias_ih_l{k}`, `bias_hh_l{k}`), `c' = σ(f)·c +
//! σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`, zero initial state. The differentiable path steps with
//! candle ops; the fast path (f32 on the CPU) runs each layer on host buffers (`lstm_cpu`: one
//! `gemm` for every frame's input projection, the recurrence on scoped threads), held against
//! the candle-op path in the tests.

use super::conv::{cached, EncodecPath};
use super::cpu::Frames;
use super::lstm_cpu::HostLayer;
use super::params::Params;
use crate::error::Result;
use candle_core::{DType, Tensor, D};
use candle_nn::Init;
use std::sync::{Arc, OnceLock};

/// One layer's tensors.
#[derive(Debug, Clone)]
struct Layer {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    /// The weights on the host for the fast path, made on first use and kept where the weights
    /// cannot change (loaded from a checkpoint onto the CPU).
    host: Option<OnceLock<Arc<HostLayer>>>,
}

impl Layer {
    fn host(&self) -> Result<Arc<HostLayer>> {
        cached(self.host.as_ref(), || {
            HostLayer::new(&self.w_ih, &self.w_hh, &self.b_ih, &self.b_hh)
        })
    }
}

/// The encoder's / decoder's LSTM with its residual.
#[derive(Debug, Clone)]
pub(crate) struct Lstm {
    layers: Vec<Layer>,
    hidden: usize,
}

fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok((x.neg()?.exp()? + 1.0)?.recip()?)
}

impl Lstm {
    /// `lstm.*` under `p`.
    pub(crate) fn new(p: &Params, dim: usize, num_layers: usize) -> Result<Self> {
        let p = p.pp("lstm");
        let bound = 1.0 / (dim as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let mut layers = Vec::with_capacity(num_layers);
        for l in 0..num_layers {
            let w_ih = p.get(&[4 * dim, dim], &format!("weight_ih_l{l}"), init)?;
            let w_hh = p.get(&[4 * dim, dim], &format!("weight_hh_l{l}"), init)?;
            let b_ih = p.get(&[4 * dim], &format!("bias_ih_l{l}"), init)?;
            let b_hh = p.get(&[4 * dim], &format!("bias_hh_l{l}"), init)?;
            let host = (p.is_file() && p.device().is_cpu()).then(OnceLock::new);
            layers.push(Layer {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
                host,
            });
        }
        Ok(Lstm {
            layers,
            hidden: dim,
        })
    }

    /// `[B, C, T]` → `lstm(x) + x`, `[B, C, T]`.
    pub(crate) fn forward(&self, x: &Tensor, path: EncodecPath) -> Result<Tensor> {
        if path == EncodecPath::Fast && x.device().is_cpu() && x.dtype() == DType::F32 {
            let items = (0..x.dim(0)?)
                .map(|b| self.forward_host(&Frames::from_tensor(x, b)?))
                .collect::<Result<Vec<_>>>()?;
            return Frames::to_tensor(items, x.device());
        }
        let seq = x.transpose(1, 2)?.contiguous()?; // [B, T, C]
        let mut h = seq.clone();
        for layer in &self.layers {
            h = self.layer_diff(layer, &h)?;
        }
        Ok((h + seq)?.transpose(1, 2)?.contiguous()?)
    }

    /// The fast path on one item's host frames `[T, C]` → `lstm(x) + x`.
    pub(crate) fn forward_host(&self, x: &Frames) -> Result<Frames> {
        let threads = candle_core::utils::get_num_threads();
        let mut h = std::borrow::Cow::Borrowed(&x.data);
        for layer in &self.layers {
            h = std::borrow::Cow::Owned(layer.host()?.forward(&h, x.len, threads)?);
        }
        let mut y = Frames {
            data: h.into_owned(),
            len: x.len,
            ch: self.hidden,
        };
        super::cpu::add_inplace(&mut y, x)?;
        Ok(y)
    }

    /// `[B, T, in]` → `[B, T, 4H]`: every frame's input projection plus both biases.
    fn project(layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let bias = (&layer.b_ih + &layer.b_hh)?;
        Ok(x.reshape((b * t, c))?
            .matmul(&layer.w_ih.t()?)?
            .broadcast_add(&bias)?
            .reshape((b, t, ()))?)
    }

    fn layer_diff(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let hd = self.hidden;
        let xp = Self::project(layer, x)?;
        let w_hh_t = layer.w_hh.t()?;
        let mut h = Tensor::zeros((b, hd), x.dtype(), x.device())?;
        let mut c = h.clone();
        let mut outs = Vec::with_capacity(t);
        for step in 0..t {
            let gates = (xp.narrow(1, step, 1)?.squeeze(1)? + h.matmul(&w_hh_t)?)?;
            let i = sigmoid(&gates.narrow(D::Minus1, 0, hd)?)?;
            let f = sigmoid(&gates.narrow(D::Minus1, hd, hd)?)?;
            let g = gates.narrow(D::Minus1, 2 * hd, hd)?.tanh()?;
            let o = sigmoid(&gates.narrow(D::Minus1, 3 * hd, hd)?)?;
            c = ((f * c)? + (i * g)?)?;
            h = (o * c.tanh()?)?;
            outs.push(h.clone());
        }
        Ok(Tensor::stack(&outs, 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{VarBuilder, VarMap};

    #[test]
    fn the_fast_recurrence_equals_the_candle_one_at_a_threaded_size() {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let p = Params::vars(VarBuilder::from_varmap(&map, DType::F32, &dev));
        let lstm = Lstm::new(&p, 136, 2).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 136, 9), &dev).unwrap();
        let fast = lstm.forward(&x, EncodecPath::Fast).unwrap();
        let diff = lstm.forward(&x, EncodecPath::Differentiable).unwrap();
        let d = (fast - diff)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{d}");
    }
}
