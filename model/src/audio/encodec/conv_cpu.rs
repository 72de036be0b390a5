//! EnCodec's convolutions on host frames (the fast path on the CPU in f32), without im2col: in
//! channels-last frames the window `x[t·s .. t·s + K]` of a padded `[L, Cin]` input is one run of
//! `K·Cin` values, so with dilation 1 the windows are the rows of a `[T_out, K·Cin]` matrix with
//! row stride `s·Cin` (overlapping rows, which `gemm` packs as it goes), times the weight laid
//! out `[K·Cin, Cout]`, into a destination that already holds the bias; a dilated conv takes one
//! `gemm` per tap. Convs with small weights run tile by tile over output rows in parallel, each
//! tile's padded input (with the ELU before the conv) built in cache; larger ones run as one
//! threaded `gemm`. A residual block without norms runs fused per tile ([`res_block`]): conv,
//! ELU, 1-wide conv and shortcut without a full-length intermediate.
//!
//! Must match candle's `conv1d` plus bias (and the one-group GroupNorm after it) over HF's
//! padding, and the candle residual block: tested in `conv_cpu_tests.rs`, `conv_tests.rs` and
//! `seanet.rs`.

use super::cpu::{
    add_inplace, elu1, matmul_acc_with, parallelism, BufferPool, Frames, Mat, Padded,
};
use crate::error::{Error, Result};
use candle_core::Tensor;
use gemm::Parallelism;
use rayon::prelude::*;

/// Padded-input values a tile aims at (with its output it stays in L2).
const TILE_FLOATS: usize = 32 * 1024;
/// Fewest output rows in a tile.
const MIN_TILE: usize = 64;
/// Weights (floats) up to which a conv runs tile by tile (each tile's `gemm` packs them anew).
const TILED_WEIGHTS: usize = 128 * 1024;
const GROUP_NORM_EPS: f64 = 1e-5;

/// A convolution's weights on the host: `w` `[K·Cin, Cout]` (row `k·Cin + i` is tap `k` of
/// input channel `i`), the bias, and the one-group GroupNorm's affine (`weight`, `bias`) if the
/// conv has one.
#[derive(Debug, Clone)]
pub(crate) struct HostConv {
    w: Vec<f32>,
    bias: Vec<f32>,
    norm: Option<(Vec<f32>, Vec<f32>)>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    dilation: usize,
}

impl HostConv {
    /// From torch's `[Cout, Cin, K]` weight, the `[Cout]` bias and the GroupNorm's tensors.
    pub fn new(
        w: &Tensor,
        bias: &Tensor,
        norm: Option<(&Tensor, &Tensor)>,
        stride: usize,
        dilation: usize,
    ) -> Result<HostConv> {
        let (cout, cin, k) = w.dims3()?;
        let host = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let norm = match norm {
            Some((g, b)) => Some((host(g)?, host(b)?)),
            None => None,
        };
        if stride == 0 || dilation == 0 || k == 0 || cin == 0 || cout == 0 {
            return Err(Error::Kernel(format!(
                "EnCodec conv: [{cout}, {cin}, {k}], stride {stride}, dilation {dilation}"
            )));
        }
        Ok(HostConv {
            w: host(&w.permute((2, 1, 0))?.contiguous()?)?,
            bias: host(bias)?,
            norm,
            cin,
            cout,
            k,
            stride,
            dilation,
        })
    }

    fn span(&self) -> usize {
        (self.k - 1) * self.dilation + 1
    }

    /// Output frames of a padded input of `lpad` frames.
    pub fn out_len(&self, lpad: usize) -> Result<usize> {
        if lpad < self.span() {
            return Err(Error::Kernel(format!(
                "EnCodec conv: {lpad} frames for a span of {}",
                self.span()
            )));
        }
        Ok((lpad - self.span()) / self.stride + 1)
    }

    /// Output rows per tile.
    fn tile_rows(&self) -> usize {
        (TILE_FLOATS / (self.stride * self.cin)).max(MIN_TILE)
    }

    /// Every row of `dst` (`[rows, Cout]`) gets the bias: set, or added if `accumulate`.
    fn put_bias(&self, dst: &mut [f32], accumulate: bool) {
        for row in dst.chunks_exact_mut(self.cout) {
            if accumulate {
                row.iter_mut().zip(&self.bias).for_each(|(v, b)| *v += b);
            } else {
                row.copy_from_slice(&self.bias);
            }
        }
    }

    /// `dst += conv` (no bias) for `rows` output rows: `src` holds the padded input from the
    /// first row the first output reads.
    fn gemm_rows(&self, src: &[f32], rows: usize, dst: &mut [f32], par: Parallelism) -> Result<()> {
        let (cin, cout) = (self.cin, self.cout);
        // One gemm when the taps of a window are adjacent in memory (dilation 1), else per tap.
        let (taps, width) = if self.dilation == 1 || self.k == 1 {
            (1, self.k * cin)
        } else {
            (self.k, cin)
        };
        for tap in 0..taps {
            let lhs = Mat {
                data: src.get(tap * self.dilation * cin..).unwrap_or(&[]),
                rows,
                cols: width,
                rs: self.stride * cin,
                cs: 1,
            };
            let rhs = Mat {
                data: &self.w[tap * width * cout..],
                rows: width,
                cols: cout,
                rs: cout,
                cs: 1,
            };
            matmul_acc_with(dst, cout, lhs, rhs, 1.0, par)?;
        }
        Ok(())
    }

    /// `dst += conv` (no bias) for output rows `o0..o1` of `input` (`dst` holds exactly them).
    fn rows_into(
        &self,
        input: &Padded,
        (o0, o1): (usize, usize),
        dst: &mut [f32],
        buf: &mut Vec<f32>,
        par: Parallelism,
    ) -> Result<()> {
        if o1 <= o0 {
            return Ok(());
        }
        let src = input.rows(o0 * self.stride, (o1 - 1) * self.stride + self.span(), buf)?;
        self.gemm_rows(src, o1 - o0, dst, par)
    }

    /// `dst` ← (or `+=` if `accumulate`) `conv(input) + bias`, `dst` `[T_out, Cout]`; no norm.
    fn run(&self, input: &Padded, dst: &mut [f32], accumulate: bool) -> Result<()> {
        let (tout, cout) = (self.out_len(input.len())?, self.cout);
        if dst.len() != tout * cout || input.x.ch != self.cin {
            return Err(Error::Kernel(format!(
                "EnCodec conv: input [{}, {}] for Cin {}, output {} values for [{tout}, {cout}]",
                input.x.len,
                input.x.ch,
                self.cin,
                dst.len()
            )));
        }
        if self.w.len() > TILED_WEIGHTS {
            self.put_bias(dst, accumulate);
            return self.rows_into(input, (0, tout), dst, &mut Vec::new(), parallelism());
        }
        let tile = self.tile_rows();
        dst.par_chunks_mut(tile * cout)
            .enumerate()
            .try_for_each_init(Vec::new, |buf, (i, d)| {
                self.put_bias(d, accumulate);
                let o0 = i * tile;
                self.rows_into(input, (o0, o0 + d.len() / cout), d, buf, Parallelism::None)
            })
    }

    /// `conv(input) + bias`, then the GroupNorm if any: `[T_out, Cout]`, in a buffer from
    /// `pool`.
    pub fn forward(&self, input: &Padded, pool: &BufferPool) -> Result<Frames> {
        let len = self.out_len(input.len())?;
        let mut y = Frames {
            data: pool.take(len * self.cout),
            len,
            ch: self.cout,
        };
        self.run(input, &mut y.data, false)?;
        if let Some((g, b)) = &self.norm {
            group_norm(&mut y, g, b);
        }
        Ok(y)
    }

    /// `acc += ` [`HostConv::forward`]`(input)`: accumulated in place by `gemm` when there is
    /// no norm.
    pub fn forward_add(&self, input: &Padded, acc: &mut Frames, pool: &BufferPool) -> Result<()> {
        if self.norm.is_some() {
            let y = self.forward(input, pool)?;
            add_inplace(acc, &y)?;
            pool.give(y.data);
            return Ok(());
        }
        if acc.ch != self.cout || acc.len != self.out_len(input.len())? {
            return Err(Error::Kernel(format!(
                "EnCodec conv: accumulating into [{}, {}]",
                acc.len, acc.ch
            )));
        }
        self.run(input, &mut acc.data, true)
    }
}

/// `nn.GroupNorm(1, C)` (eps 1e-5) over one item's `[T, C]`: statistics over every value, then
/// the per-channel affine.
pub(crate) fn group_norm(y: &mut Frames, weight: &[f32], bias: &[f32]) {
    let n = y.data.len().max(1) as f64;
    let mean = y.data.par_iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = y
        .data
        .par_iter()
        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
        .sum::<f64>()
        / n;
    let inv = 1.0 / (var + GROUP_NORM_EPS).sqrt();
    let (mean, inv) = (mean as f32, inv as f32);
    let ch = y.ch.max(1);
    y.data.par_chunks_mut(ch * 256).for_each(|d| {
        for row in d.chunks_exact_mut(ch) {
            for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    });
}

/// `EncodecResnetBlock` fused per tile of rows: `y = shortcut(x) + conv2(elu(conv1(elu(x))))`
/// (identity shortcut if `None`), `input` being `x` as `conv1` sees it (padded, ELU'd), into a
/// buffer from `pool`. `None`
/// when the block does not fit the fused form (a norm, a strided `conv1`, 1-wide convs that are
/// not, shapes that do not chain); the caller then runs the convs one by one.
pub(crate) fn res_block(
    conv1: &HostConv,
    conv2: &HostConv,
    shortcut: Option<&HostConv>,
    input: &Padded,
    pool: &BufferPool,
) -> Result<Option<Frames>> {
    let x = input.x;
    let (len, ch) = (x.len, x.ch);
    let pointwise = |c: &HostConv, cin: usize| c.k == 1 && c.stride == 1 && c.cin == cin;
    let fits = conv1.norm.is_none()
        && conv2.norm.is_none()
        && conv1.stride == 1
        && conv1.cin == ch
        && pointwise(conv2, conv1.cout)
        && conv2.cout == ch
        && shortcut.is_none_or(|s| s.norm.is_none() && pointwise(s, ch) && s.cout == ch)
        && input.len() >= conv1.span()
        && conv1.out_len(input.len())? == len;
    if !fits {
        return Ok(None);
    }
    let hid = conv1.cout;
    let tile = conv1.tile_rows();
    let mut out = pool.take(len * ch);
    out.par_chunks_mut(tile * ch)
        .enumerate()
        .try_for_each_init(
            || (Vec::new(), Vec::new()),
            |(buf, h), (i, y)| {
                let (o0, rows) = (i * tile, y.len() / ch);
                let span = (o0, o0 + rows);
                h.clear();
                h.resize(rows * hid, 0.0);
                conv1.put_bias(h, false);
                conv1.rows_into(input, span, h, buf, Parallelism::None)?;
                pulp::Arch::new().dispatch(|| h.iter_mut().for_each(|v| *v = elu1(*v)));
                match shortcut {
                    Some(s) => {
                        s.put_bias(y, false);
                        s.rows_into(&Padded::plain(x), span, y, buf, Parallelism::None)?;
                    }
                    None => y.copy_from_slice(&x.data[o0 * ch..(o0 + rows) * ch]),
                }
                conv2.put_bias(y, true);
                conv2.gemm_rows(h, rows, y, Parallelism::None)
            },
        )?;
    Ok(Some(Frames { data: out, len, ch }))
}

#[cfg(test)]
#[path = "conv_cpu_tests.rs"]
mod tests;
