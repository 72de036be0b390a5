//! `EncodecLSTM`: a stacked `nn.LSTM(dim, dim, num_layers)` over the time axis of a `[B, C, T]`
//! activation, with a residual from its input to its output (`lstm(x) + x`).
//!
//! Must match torch's LSTM: gates `i, f, g, o` stacked in that order in `weight_ih_l{k}`
//! `[4H, in]` / `weight_hh_l{k}` `[4H, H]` (+ `bias_ih_l{k}`, `bias_hh_l{k}`), `c' = σ(f)·c +
//! σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`, zero initial state. The differentiable path steps with
//! candle ops; the fast path (f32 on the CPU) projects every frame's input in one matmul and runs
//! the recurrence as a tight loop (`W_hh · h` with AVX2/FMA dot products where the CPU has them,
//! rows split over rayon's threads).

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

    /// The fast path: one matmul for every frame's input projection, then per step the
    /// `W_hh · h` product (rows split over rayon's threads, AVX2/FMA dot products where the CPU
    /// has them) and the gate arithmetic.
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
            recur(w, xp, &mut out[item * t * hd..(item + 1) * t * hd], hd);
        }
        Ok(Tensor::from_vec(out, (b, t, hd), &Device::Cpu)?.to_device(x.device())?)
    }
}

/// `Σ a[i]·b[i]`, eight partial sums.
fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
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

/// `Σ a[i]·b[i]` with AVX2 + FMA (four 8-wide accumulators).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Four accumulators in locals (the loop stays register-resident even without optimisation).
    let (mut a0, mut a1, mut a2, mut a3) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    let mut i = 0;
    // SAFETY: every load reads 8 floats starting at an offset o with o + 8 ≤ n, inside both
    // slices.
    unsafe {
        while i + 32 <= n {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), a0);
            a1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                a1,
            );
            a2 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 16)),
                _mm256_loadu_ps(pb.add(i + 16)),
                a2,
            );
            a3 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 24)),
                _mm256_loadu_ps(pb.add(i + 24)),
                a3,
            );
            i += 32;
        }
        while i + 8 <= n {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), a0);
            i += 8;
        }
    }
    let sum = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let mut s: f32 = lanes.iter().sum();
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// Rows `r0..` of `W · h` into `out` (`W` row-major with rows of `h.len()`).
fn matvec_rows(w: &[f32], h: &[f32], r0: usize, out: &mut [f32], simd: bool) {
    let hd = h.len();
    for (k, o) in out.iter_mut().enumerate() {
        let row = &w[(r0 + k) * hd..(r0 + k + 1) * hd];
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is set only when the CPU reports AVX2 and FMA.
            *o = unsafe { dot_avx2(row, h) };
            continue;
        }
        let _ = simd;
        *o = dot_scalar(row, h);
    }
}

/// The recurrence of one sequence: `xp` `[T, 4H]` (input projections with biases), `w` the
/// row-major `W_hh` `[4H, H]`, `out` `[T, H]` the hidden states.
fn recur(w: &[f32], xp: &[f32], out: &mut [f32], hd: usize) {
    #[cfg(target_arch = "x86_64")]
    let simd = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    let threads = rayon::current_num_threads().max(1);
    let parallel = hd >= 128 && threads > 1;
    let per_task = (4 * hd).div_ceil(threads);
    let mut h = vec![0f32; hd];
    let mut c = vec![0f32; hd];
    let mut hh = vec![0f32; 4 * hd];
    for (step, out_t) in out.chunks_exact_mut(hd).enumerate() {
        if parallel {
            hh.par_chunks_mut(per_task)
                .enumerate()
                .for_each(|(k, part)| matvec_rows(w, &h, k * per_task, part, simd));
        } else {
            matvec_rows(w, &h, 0, &mut hh, simd);
        }
        cell(&xp[step * 4 * hd..(step + 1) * 4 * hd], &hh, &mut h, &mut c);
        out_t.copy_from_slice(&h);
    }
}

fn sigmoid_f(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One LSTM cell update: `xp` and `hh` `[4H]` (input and recurrent parts of the gates).
fn cell(xp: &[f32], hh: &[f32], h: &mut [f32], c: &mut [f32]) {
    let hd = h.len();
    for j in 0..hd {
        let i = sigmoid_f(xp[j] + hh[j]);
        let f = sigmoid_f(xp[hd + j] + hh[hd + j]);
        let g = (xp[2 * hd + j] + hh[2 * hd + j]).tanh();
        let o = sigmoid_f(xp[3 * hd + j] + hh[3 * hd + j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * c[j].tanh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.03).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot_scalar(&a, &b) - want).abs() < 1e-4);
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU reports AVX2 and FMA.
            let got = unsafe { dot_avx2(&a, &b) };
            assert!((got - want).abs() < 1e-4);
        }
    }
}
