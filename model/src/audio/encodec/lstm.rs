//! `EncodecLSTM`: a stacked `nn.LSTM(dim, dim, num_layers)` over the time axis of a `[B, C, T]`
//! activation, with a residual from its input to its output (`lstm(x) + x`).
//!
//! Must match torch's LSTM: gates `i, f, g, o` stacked in that order in `weight_ih_l{k}`
//! `[4H, in]` / `weight_hh_l{k}` `[4H, H]` (+ `bias_ih_l{k}`, `bias_hh_l{k}`), `c' = σ(f)·c +
//! σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`, zero initial state. The differentiable path steps with
//! candle ops; the fast path (f32 on the CPU) projects every frame's input in one matmul and runs
//! the recurrence as a tight loop (the `W_hh · h` product split over rayon's threads when large).

use super::conv::EncodecPath;
use super::params::Params;
use crate::error::Result;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::Init;
use rayon::prelude::*;

/// One layer's tensors.
#[derive(Debug, Clone)]
struct Layer {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    /// `W_hh` row-major on the host, for the fast path (set when loaded from a checkpoint).
    w_hh_host: Option<Vec<f32>>,
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
            let w_hh_host = if p.is_file() && p.device().is_cpu() {
                Some(w_hh.flatten_all()?.to_vec1::<f32>()?)
            } else {
                None
            };
            layers.push(Layer {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
                w_hh_host,
            });
        }
        Ok(Lstm {
            layers,
            hidden: dim,
        })
    }

    /// `[B, C, T]` → `lstm(x) + x`, `[B, C, T]`.
    pub(crate) fn forward(&self, x: &Tensor, path: EncodecPath) -> Result<Tensor> {
        let seq = x.transpose(1, 2)?.contiguous()?; // [B, T, C]
        let fast = path == EncodecPath::Fast && x.device().is_cpu() && x.dtype() == DType::F32;
        let mut h = seq.clone();
        for layer in &self.layers {
            h = if fast {
                self.layer_fast(layer, &h)?
            } else {
                self.layer_diff(layer, &h)?
            };
        }
        Ok((h + seq)?.transpose(1, 2)?.contiguous()?)
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

    fn layer_fast(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let hd = self.hidden;
        let xp = Self::project(layer, x)?.flatten_all()?.to_vec1::<f32>()?;
        let owned;
        let w = match &layer.w_hh_host {
            Some(w) => w.as_slice(),
            None => {
                owned = layer.w_hh.flatten_all()?.to_vec1::<f32>()?;
                owned.as_slice()
            }
        };
        let mut out = vec![0f32; b * t * hd];
        for item in 0..b {
            let xp = &xp[item * t * 4 * hd..(item + 1) * t * 4 * hd];
            let out = &mut out[item * t * hd..(item + 1) * t * hd];
            recur(w, xp, out, hd);
        }
        Ok(Tensor::from_vec(out, (b, t, hd), &Device::Cpu)?.to_device(x.device())?)
    }
}

/// `Σ a[i]·b[i]` with eight partial sums (so the compiler vectorises it).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn sigmoid_f(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The recurrence of one sequence: `xp` `[T, 4H]` (input projections with biases), `w` the
/// row-major `W_hh` `[4H, H]`, `out` `[T, H]` the hidden states.
fn recur(w: &[f32], xp: &[f32], out: &mut [f32], hd: usize) {
    let mut h = vec![0f32; hd];
    let mut c = vec![0f32; hd];
    let mut gates = vec![0f32; 4 * hd];
    let parallel = hd >= 128 && rayon::current_num_threads() > 1;
    let rows_per_task = (4 * hd).div_ceil(rayon::current_num_threads().max(1));
    for (step, out_t) in out.chunks_exact_mut(hd).enumerate() {
        let xp_t = &xp[step * 4 * hd..(step + 1) * 4 * hd];
        if parallel {
            gates
                .par_chunks_mut(rows_per_task)
                .enumerate()
                .for_each(|(chunk, g)| {
                    let r0 = chunk * rows_per_task;
                    for (k, gk) in g.iter_mut().enumerate() {
                        let r = r0 + k;
                        *gk = xp_t[r] + dot(&w[r * hd..(r + 1) * hd], &h);
                    }
                });
        } else {
            for (r, gk) in gates.iter_mut().enumerate() {
                *gk = xp_t[r] + dot(&w[r * hd..(r + 1) * hd], &h);
            }
        }
        for j in 0..hd {
            let i = sigmoid_f(gates[j]);
            let f = sigmoid_f(gates[hd + j]);
            let g = gates[2 * hd + j].tanh();
            let o = sigmoid_f(gates[3 * hd + j]);
            c[j] = f * c[j] + i * g;
            h[j] = o * c[j].tanh();
        }
        out_t.copy_from_slice(&h);
    }
}
