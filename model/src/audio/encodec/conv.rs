//! EnCodec's convolutions: `EncodecConv1d` and `EncodecConvTranspose1d` of HF transformers'
//! `modeling_encodec.py` — weight normalisation or a one-group GroupNorm after the conv, causal or
//! centred padding with HF's `_get_extra_padding_for_conv1d` (so every frame is complete), its
//! `_pad1d` (reflect padding of inputs shorter than the pad gets zeros first), and the trim of the
//! transposed convolution's output (`trim_right_ratio` when causal, else centred).
//!
//! Weight-normalised convs load from HF 5's `conv.parametrizations.weight.original0/1` (`g`,
//! `v`; what `save_pretrained` writes), from the hub checkpoints' `conv.weight_g/weight_v`, or
//! from a plain `conv.weight`; they are recorded (and saved) in the `parametrizations` layout.
//! Weight norm is `v · (g / ‖v‖)` with the norm over all but dim 0, as torch computes it.
//!
//! Two paths ([`EncodecPath`]) compute the same function. `Differentiable` uses only ops whose
//! candle backward is exact: conv1d as im2col + matmul, and the transposed convolution as a
//! stride-1 conv over the input (polyphase form) — candle 0.11 has no backward for
//! `conv_transpose1d`, its CPU `conv_transpose1d` is wrong for batch > 1 (shown in the tests),
//! and its conv1d backward uses that op. `Fast` uses the weights normalised once at load: on the
//! CPU in f32 the convs run on host frames (`conv_cpu`, [`Conv1d::forward_host`]), elsewhere
//! candle's conv1d forward (1-wide convs as one matmul) and the polyphase transposed conv over
//! it. Tests hold them against naive sums, candle's ops and each other.

use super::config::{EncodecConfig, NormType, PadMode};
use super::conv_cpu::HostConv;
use super::cpu::{BufferPool, Frames, Padded};
use super::params::Params;
use crate::error::{Error, Result};
use candle_core::Tensor;
use candle_nn::Init;
use std::sync::{Arc, OnceLock};

/// Which implementation a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodecPath {
    /// Only ops with a candle backward: gradients reach every parameter (training).
    Differentiable,
    /// Inference: cached normalised weights; on the CPU in f32 the encoder runs on host
    /// buffers (`cpu`: convs straight into `gemm`, the LSTM's recurrence on scoped threads, the
    /// quantiser's search as one `gemm` per codebook), elsewhere candle's ops (the transposed
    /// conv in polyphase form).
    Fast,
}

const GROUP_NORM_EPS: f64 = 1e-5;

/// A conv weight: weight-normalised (`g`, `v`, and the product once computed for inference) or
/// plain.
#[derive(Debug, Clone)]
enum Weight {
    Normed {
        g: Tensor,
        v: Tensor,
        cached: Option<Tensor>,
    },
    Plain(Tensor),
}

/// `v · (g / ‖v‖)`, the norm over every dim but 0 (torch's `_weight_norm(v, g, 0)`).
fn weight_norm(g: &Tensor, v: &Tensor) -> Result<Tensor> {
    let norm = v.sqr()?.sum_keepdim(2)?.sum_keepdim(1)?.sqrt()?;
    Ok(v.broadcast_mul(&(g / norm)?)?)
}

impl Weight {
    /// The weight `shape` under `p` (which is `…conv`), in whichever layout the source holds.
    fn load(p: &Params, shape: [usize; 3], norm: NormType, fan_in: usize) -> Result<Weight> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        if norm == NormType::TimeGroupNorm {
            return Ok(Weight::Plain(p.get(&shape, "weight", init)?));
        }
        let gs = [shape[0], 1, 1];
        let (g_name, v_name) = (
            "parametrizations.weight.original0",
            "parametrizations.weight.original1",
        );
        let pair = |g: &str, v: &str| -> Result<Option<(Tensor, Tensor)>> {
            match p.take(&shape, v)? {
                None => Ok(None),
                Some(v_t) => match p.take(&gs, g)? {
                    Some(g_t) => Ok(Some((g_t, v_t))),
                    None => Err(Error::MissingTensor(p.full(g))),
                },
            }
        };
        let (g, v) = if !p.is_file() {
            let v = p.get(&shape, v_name, init)?;
            let g = p.get(&gs, g_name, Init::Const(1.0))?;
            return Ok(Weight::Normed { g, v, cached: None });
        } else if let Some(gv) = pair(g_name, v_name)? {
            gv
        } else if let Some(gv) = pair("weight_g", "weight_v")? {
            gv
        } else if let Some(w) = p.take(&shape, "weight")? {
            let g = w.sqr()?.sum_keepdim(2)?.sum_keepdim(1)?.sqrt()?;
            (g, w)
        } else {
            return Err(Error::MissingTensor(p.full(v_name)));
        };
        p.put(g_name, &g);
        p.put(v_name, &v);
        let cached = Some(weight_norm(&g, &v)?);
        Ok(Weight::Normed { g, v, cached })
    }

    fn get(&self, path: EncodecPath) -> Result<Tensor> {
        match (self, path) {
            (Weight::Plain(w), _) => Ok(w.clone()),
            (
                Weight::Normed {
                    cached: Some(w), ..
                },
                EncodecPath::Fast,
            ) => Ok(w.clone()),
            (Weight::Normed { g, v, .. }, _) => weight_norm(g, v),
        }
    }
}

/// GroupNorm with one group (`nn.GroupNorm(1, C)`, eps 1e-5): statistics over (C, T) per item.
#[derive(Debug, Clone)]
struct GroupNorm1 {
    weight: Tensor,
    bias: Tensor,
}

impl GroupNorm1 {
    fn new(p: &Params, ch: usize) -> Result<Self> {
        Ok(GroupNorm1 {
            weight: p.get(&[ch], "weight", Init::Const(1.0))?,
            bias: p.get(&[ch], "bias", Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let flat = x.reshape((b, c * t))?;
        let mean = flat.mean_keepdim(1)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(1)?;
        let normed = centred.broadcast_div(&(var + GROUP_NORM_EPS)?.sqrt()?)?;
        Ok(normed
            .reshape((b, c, t))?
            .broadcast_mul(&self.weight.reshape((1, c, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1))?)?)
    }
}

/// HF's `_pad1d`: pads the last dim of `[B, C, L]` by `(left, right)`; reflect padding of an
/// input no longer than the pad first appends zeros (then drops them again).
pub(crate) fn pad1d(x: &Tensor, left: usize, right: usize, mode: PadMode) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    match mode {
        PadMode::Zeros => Ok(x.pad_with_zeros(2, left, right)?),
        PadMode::Replicate => Ok(x.pad_with_same(2, left, right)?),
        PadMode::Reflect => {
            let len = x.dim(2)?;
            let max_pad = left.max(right);
            let extra = if len <= max_pad { max_pad - len + 1 } else { 0 };
            let x = if extra > 0 {
                x.pad_with_zeros(2, 0, extra)?
            } else {
                x.contiguous()?
            };
            let n = len + extra;
            let dev = x.device();
            let mut parts = Vec::with_capacity(3);
            if left > 0 {
                // x[left], x[left − 1], …, x[1]
                let idx: Vec<u32> = (1..=left as u32).rev().collect();
                parts.push(x.index_select(&Tensor::new(idx, dev)?, 2)?);
            }
            parts.push(x.clone());
            if right > 0 {
                // x[n − 2], x[n − 3], …, x[n − 1 − right]
                let idx: Vec<u32> = (0..right).map(|i| (n - 2 - i) as u32).collect();
                parts.push(x.index_select(&Tensor::new(idx, dev)?, 2)?);
            }
            let padded = Tensor::cat(&parts, 2)?;
            Ok(padded.narrow(2, 0, padded.dim(2)? - extra)?)
        }
    }
}

/// What `make` returns, kept in `cell` after the first call when there is a cell.
pub(crate) fn cached<T>(
    cell: Option<&OnceLock<Arc<T>>>,
    make: impl FnOnce() -> Result<T>,
) -> Result<Arc<T>> {
    match cell {
        Some(cell) => match cell.get() {
            Some(v) => Ok(v.clone()),
            None => {
                let v = Arc::new(make()?);
                Ok(cell.get_or_init(|| v).clone())
            }
        },
        None => Ok(Arc::new(make()?)),
    }
}

/// `EncodecConv1d`.
#[derive(Debug, Clone)]
pub(crate) struct Conv1d {
    weight: Weight,
    bias: Tensor,
    norm: Option<GroupNorm1>,
    stride: usize,
    dilation: usize,
    kernel: usize,
    causal: bool,
    pad_mode: PadMode,
    /// The weights laid out for `conv_cpu`, made on first use and kept where the weights cannot
    /// change (loaded from a checkpoint onto the CPU); `None` for a model built from variables.
    host: Option<OnceLock<Arc<HostConv>>>,
}

impl Conv1d {
    /// `conv.*` (and `norm.*` for `time_group_norm`) under `p`.
    pub(crate) fn new(
        p: &Params,
        cfg: &EncodecConfig,
        (cin, cout): (usize, usize),
        kernel: usize,
        stride: usize,
        dilation: usize,
    ) -> Result<Self> {
        let norm_type = cfg.norm()?;
        let c = p.pp("conv");
        let weight = Weight::load(&c, [cout, cin, kernel], norm_type, cin * kernel)?;
        let bound = 1.0 / ((cin * kernel) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let bias = c.get(&[cout], "bias", init)?;
        let norm = match norm_type {
            NormType::TimeGroupNorm => Some(GroupNorm1::new(&p.pp("norm"), cout)?),
            NormType::WeightNorm => None,
        };
        Ok(Conv1d {
            weight,
            bias,
            norm,
            stride,
            dilation,
            kernel,
            causal: cfg.use_causal_conv,
            pad_mode: cfg.pad()?,
            host: (p.is_file() && p.device().is_cpu()).then(OnceLock::new),
        })
    }

    /// The weights (as the fast path normalises them) laid out for `conv_cpu`.
    fn host_weights(&self) -> Result<HostConv> {
        let norm = self.norm.as_ref().map(|n| (&n.weight, &n.bias));
        let w = self.weight.get(EncodecPath::Fast)?;
        HostConv::new(&w, &self.bias, norm, self.stride, self.dilation)
    }

    /// HF's padding: `(left, right)` for an input of `len` samples.
    fn padding(&self, len: usize) -> (usize, usize) {
        let k = (self.kernel - 1) * self.dilation + 1;
        let total = k.saturating_sub(self.stride);
        // _get_extra_padding_for_conv1d: frames = ceil((len − k + total) / stride + 1) − 1.
        let frames = ((len as f64 - k as f64 + total as f64) / self.stride as f64 + 1.0).ceil();
        let frames = (frames - 1.0).max(0.0) as usize;
        let ideal = frames * self.stride + k - total;
        let extra = ideal.saturating_sub(len);
        if self.causal {
            (total, extra)
        } else {
            let right = total / 2;
            (total - right, right + extra)
        }
    }

    /// `[B, Cin, L]` → `[B, Cout, ceil(L / stride)]`.
    pub(crate) fn forward(&self, x: &Tensor, path: EncodecPath) -> Result<Tensor> {
        let (left, right) = self.padding(x.dim(2)?);
        let x = pad1d(x, left, right, self.pad_mode)?;
        let w = self.weight.get(path)?;
        let y = match path {
            // A 1-wide conv is a matmul: no im2col copy.
            EncodecPath::Fast if self.kernel == 1 && self.stride == 1 => {
                let (b, cin, _) = x.dims3()?;
                let cout = w.dim(0)?;
                w.reshape((1, cout, cin))?
                    .broadcast_as((b, cout, cin))?
                    .matmul(&x)?
            }
            EncodecPath::Fast => x.conv1d(&w, 0, self.stride, self.dilation, 1)?,
            EncodecPath::Differentiable => conv1d_diff(&x, &w, self.stride, self.dilation)?,
        };
        let y = y.broadcast_add(&self.bias.reshape((1, (), 1))?)?;
        match &self.norm {
            Some(n) => n.forward(&y),
            None => Ok(y),
        }
    }

    /// The host weights: kept from an earlier call, or laid out now.
    pub(crate) fn host(&self) -> Result<Arc<HostConv>> {
        cached(self.host.as_ref(), || self.host_weights())
    }

    /// `x` as this conv sees it: padded as HF pads it, ELU'd first if `elu_in`.
    pub(crate) fn host_input<'a>(&self, x: &'a Frames, elu_in: bool) -> Padded<'a> {
        let (left, right) = self.padding(x.len);
        Padded {
            x,
            left,
            right,
            mode: self.pad_mode,
            elu: elu_in,
        }
    }

    /// The conv on host frames `[L, Cin]` → `[ceil(L / stride), Cout]`, ELU applied to the input
    /// first if `elu_in`, the output in a buffer from `pool`.
    pub(crate) fn forward_host(
        &self,
        x: &Frames,
        elu_in: bool,
        pool: &BufferPool,
    ) -> Result<Frames> {
        self.host()?.forward(&self.host_input(x, elu_in), pool)
    }

    /// `acc += ` [`Conv1d::forward_host`]`(x, elu_in)`.
    pub(crate) fn forward_host_add(
        &self,
        x: &Frames,
        elu_in: bool,
        acc: &mut Frames,
        pool: &BufferPool,
    ) -> Result<()> {
        self.host()?
            .forward_add(&self.host_input(x, elu_in), acc, pool)
    }
}

/// conv1d without padding as im2col + matmul from basic ops (narrow, reshape, stack, matmul),
/// whose candle backward is exact: candle 0.11's own conv1d backward gives wrong gradients for
/// some shapes (its `conv_transpose1d` is wrong for batch > 1 on the CPU; see the tests).
/// `x` `[B, Cin, L]`, `w` `[Cout, Cin, K]` → `[B, Cout, (L − (K−1)·d − 1) / s + 1]`.
pub(crate) fn conv1d_diff(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
) -> Result<Tensor> {
    let (b, cin, len) = x.dims3()?;
    let (cout, wcin, k) = w.dims3()?;
    let span = (k - 1) * dilation + 1;
    if wcin != cin || len < span || stride == 0 {
        return Err(Error::Invalid(format!(
            "conv1d: input {:?}, weight {:?}, stride {stride}, dilation {dilation}",
            x.dims(),
            w.dims()
        )));
    }
    let out = (len - span) / stride + 1;
    let mut taps = Vec::with_capacity(k);
    for j in 0..k {
        let t = x.narrow(2, j * dilation, (out - 1) * stride + 1)?;
        let t = if stride > 1 {
            t.pad_with_zeros(2, 0, stride - 1)?
                .reshape((b, cin, out, stride))?
                .narrow(3, 0, 1)?
                .squeeze(3)?
        } else {
            t
        };
        taps.push(t);
    }
    // cols[b, i·K + j, t] = x[b, i, t·s + j·d]
    let cols = Tensor::stack(&taps, 2)?.reshape((b, cin * k, out))?;
    let w2 = w
        .reshape((1, cout, cin * k))?
        .broadcast_as((b, cout, cin * k))?;
    Ok(w2.matmul(&cols)?)
}

/// A transposed conv1d (no padding) as a stride-1 conv1d, differentiable in candle: output
/// phase `r` of `y[t·s + r] = Σ_j x[t − j] · w[:, :, j·s + r]` is one group of output channels.
/// `x` `[B, Cin, L]`, `w` `[Cin, Cout, K]` (torch's layout) → `[B, Cout, (L − 1)·s + K]`.
pub(crate) fn conv_transpose1d_poly(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let (b, cin, len) = x.dims3()?;
    let (wcin, cout, k) = w.dims3()?;
    if wcin != cin || stride == 0 || len == 0 {
        return Err(Error::Invalid(format!(
            "conv_transpose1d: input {:?}, weight {:?}, stride {stride}",
            x.dims(),
            w.dims()
        )));
    }
    let s = stride;
    let taps = k.div_ceil(s);
    let rev: Vec<u32> = (0..taps as u32).rev().collect();
    let wp = w
        .pad_with_zeros(2, 0, taps * s - k)?
        .reshape((cin, cout, taps, s))?
        .index_select(&Tensor::new(rev, w.device())?, 2)?
        .permute((3, 1, 0, 2))?
        .reshape((s * cout, cin, taps))?;
    let z = conv1d_diff(&x.pad_with_zeros(2, taps - 1, taps - 1)?, &wp, 1, 1)?;
    let t = len + taps - 1;
    let y = z
        .reshape((b, s, cout, t))?
        .permute((0, 2, 3, 1))?
        .reshape((b, cout, t * s))?;
    Ok(y.narrow(2, 0, (len - 1) * s + k)?)
}

/// The transposed conv for inference: the polyphase form over candle's conv1d (candle 0.11's
/// `conv_transpose1d` is wrong for batch > 1 on the CPU).
pub(crate) fn conv_transpose_fast(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let (b, cin, len) = x.dims3()?;
    let (_, cout, k) = w.dims3()?;
    let s = stride;
    let taps = k.div_ceil(s);
    let rev: Vec<u32> = (0..taps as u32).rev().collect();
    let wp = w
        .pad_with_zeros(2, 0, taps * s - k)?
        .reshape((cin, cout, taps, s))?
        .index_select(&Tensor::new(rev, w.device())?, 2)?
        .permute((3, 1, 0, 2))?
        .reshape((s * cout, cin, taps))?;
    let z = x
        .pad_with_zeros(2, taps - 1, taps - 1)?
        .conv1d(&wp, 0, 1, 1, 1)?;
    let t = len + taps - 1;
    let y = z
        .reshape((b, s, cout, t))?
        .permute((0, 2, 3, 1))?
        .reshape((b, cout, t * s))?;
    Ok(y.narrow(2, 0, (len - 1) * s + k)?)
}

/// `EncodecConvTranspose1d`.
#[derive(Debug, Clone)]
pub(crate) struct ConvTranspose1d {
    weight: Weight,
    bias: Tensor,
    norm: Option<GroupNorm1>,
    stride: usize,
    kernel: usize,
    causal: bool,
    trim_right_ratio: f64,
}

impl ConvTranspose1d {
    /// `conv.*` (and `norm.*`) under `p`; the weight is `[Cin, Cout, K]`, weight-normalised
    /// over dim 0 as torch's `weight_norm` does by default.
    pub(crate) fn new(
        p: &Params,
        cfg: &EncodecConfig,
        (cin, cout): (usize, usize),
        kernel: usize,
        stride: usize,
    ) -> Result<Self> {
        let norm_type = cfg.norm()?;
        let c = p.pp("conv");
        let weight = Weight::load(&c, [cin, cout, kernel], norm_type, cout * kernel)?;
        let bound = 1.0 / ((cout * kernel) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let bias = c.get(&[cout], "bias", init)?;
        let norm = match norm_type {
            NormType::TimeGroupNorm => Some(GroupNorm1::new(&p.pp("norm"), cout)?),
            NormType::WeightNorm => None,
        };
        Ok(ConvTranspose1d {
            weight,
            bias,
            norm,
            stride,
            kernel,
            causal: cfg.use_causal_conv,
            trim_right_ratio: cfg.trim_right_ratio,
        })
    }

    /// `[B, Cin, L]` → `[B, Cout, L · stride]`.
    pub(crate) fn forward(&self, x: &Tensor, path: EncodecPath) -> Result<Tensor> {
        let w = self.weight.get(path)?;
        let y = match path {
            EncodecPath::Fast => conv_transpose_fast(x, &w, self.stride)?,
            EncodecPath::Differentiable => conv_transpose1d_poly(x, &w, self.stride)?,
        };
        let y = y.broadcast_add(&self.bias.reshape((1, (), 1))?)?;
        let y = match &self.norm {
            Some(n) => n.forward(&y)?,
            None => y,
        };
        let total = self.kernel.saturating_sub(self.stride);
        let right = if self.causal {
            (total as f64 * self.trim_right_ratio).ceil() as usize
        } else {
            total / 2
        };
        let left = total - right;
        let len = y.dim(2)?;
        Ok(y.narrow(2, left, len - left - right)?)
    }
}

/// `elu(x)` with α = 1 (`nn.ELU()`).
pub(crate) fn elu(x: &Tensor) -> Result<Tensor> {
    Ok(x.elu(1.0)?)
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // the references index like the formulas they state
#[path = "conv_tests.rs"]
mod tests;
