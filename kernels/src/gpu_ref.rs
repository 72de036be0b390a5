//! Host-side statements of the GPU formats and kernels (always compiled, tested on the CPU):
//! - the "G2" ternary weight layout the CUDA GEMV/GEMM read (`kernels/cuda/ternary.cu`), with a
//!   scalar product over it that must equal [`crate::gemv`] / [`crate::ternary_matmul`];
//! - the INT4 KV-cache group quantisation, slot and visibility rules of
//!   `kernels/cuda/attention.cu`, and a naive f64 attention over such a cache.
//!
//! The CUDA tests (`kernels/tests/cuda/`, feature `cuda`) check the GPU against these.

use crate::{KernelError, TernaryMatrix};
use half::f16;
use rayon::prelude::*;

/// Columns are padded to a multiple of this (one 16-byte load of 2-bit codes).
pub const G2_COLS: usize = 64;

/// `k` rounded up to the G2 padding.
pub fn g2_k_pad(k: usize) -> usize {
    k.div_ceil(G2_COLS) * G2_COLS
}

/// Bit offset of column `c` (0..16) inside its word: codes of columns 4j..4j+3 sit in byte
/// lanes 0..3 at shift 2j, lined up with 4 int8 activations for one dp4a.
#[inline]
fn g2_shift(c: usize) -> u32 {
    (8 * (c % 4) + 2 * (c / 4)) as u32
}

/// Ternary weights in the GPU layout: row-major, `k_pad / 16` u32 words per row, code `w + 1`
/// per column (padding = code 1), plus one weight scale per row (`y = acc / (x_scale · scale)`),
/// so several BitLinears sharing an input can be stacked into one matrix.
#[derive(Debug, Clone)]
pub struct G2Matrix {
    pub n: usize,
    pub k: usize,
    pub k_pad: usize,
    pub words: Vec<u32>,
    pub scales: Vec<f32>,
}

impl G2Matrix {
    /// Stacks the rows of `parts` (each a matrix with its weight scale; all with the same `k`).
    pub fn stack(parts: &[(&TernaryMatrix, f32)]) -> Result<Self, KernelError> {
        let Some((first, _)) = parts.first() else {
            return Err(KernelError::BadShape {
                n: 0,
                k: 0,
                reason: "no matrices to stack",
            });
        };
        let k = first.k();
        if let Some((m, _)) = parts.iter().find(|(m, _)| m.k() != k) {
            return Err(KernelError::BadShape {
                n: m.n(),
                k: m.k(),
                reason: "stacked matrices need the same number of columns",
            });
        }
        let k_pad = g2_k_pad(k);
        let kw = k_pad / 16;
        let n: usize = parts.iter().map(|(m, _)| m.n()).sum();
        let mut words = Vec::with_capacity(n * kw);
        let mut scales = Vec::with_capacity(n);
        for (m, s) in parts {
            let mut block = vec![0u32; m.n() * kw];
            block
                .par_chunks_mut(kw)
                .enumerate()
                .for_each(|(r, row)| pack_row(|c| m.code(r, c), k, row));
            words.extend_from_slice(&block);
            scales.extend(std::iter::repeat_n(*s, m.n()));
        }
        Ok(Self {
            n,
            k,
            k_pad,
            words,
            scales,
        })
    }

    /// Words per row.
    pub fn kw(&self) -> usize {
        self.k_pad / 16
    }

    /// The code (`w + 1`) at `(row, col)`.
    pub fn code(&self, row: usize, col: usize) -> u8 {
        let w = self.words[row * self.kw() + col / 16];
        ((w >> g2_shift(col % 16)) & 3) as u8
    }

    /// The scalar statement of `ternary_gemv`/`ternary_gemm` for one token: `xq` has `k_pad`
    /// int8 values (zero padded), `x_scale` and `x_sum = Σ xq` come from the quantiser.
    pub fn matvec_ref(&self, xq: &[i8], x_scale: f32, x_sum: i32) -> Vec<f32> {
        (0..self.n)
            .map(|r| {
                let mut acc = 0i32;
                for (c, &x) in xq.iter().enumerate().take(self.k_pad) {
                    acc += i32::from(self.code(r, c)) * i32::from(x);
                }
                (acc - x_sum) as f32 / (x_scale * self.scales[r])
            })
            .collect()
    }
}

/// Packs one row from its codes (`code(col)` = w + 1 for `col < k`; padding gets code 1).
fn pack_row(code: impl Fn(usize) -> u8, k: usize, row: &mut [u32]) {
    for (wi, word) in row.iter_mut().enumerate() {
        let mut w = 0u32;
        for c in 0..16 {
            let col = wi * 16 + c;
            let v = if col < k { u32::from(code(col)) } else { 1 };
            w |= v << g2_shift(c);
        }
        *word = w;
    }
}

/// Storage of the GPU KV cache (the discriminant is the `kind` argument of `attention.cu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuKvKind {
    F32 = 0,
    F16 = 1,
    Int4 = 2,
}

impl GpuKvKind {
    /// Parses `f32`, `f16` (or `bf16`, stored as f16) and `int4` (the CPU cache's `int4-gG-rR`
    /// forms count as `int4`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(GpuKvKind::F32),
            "f16" | "bf16" => Some(GpuKvKind::F16),
            s if s.starts_with("int4") => Some(GpuKvKind::Int4),
            _ => None,
        }
    }

    /// Bytes per token per KV head for keys plus values with head dimension `d` (INT4: codes
    /// plus an f16 scale and min per group of channels).
    pub fn bytes_per_head(self, d: usize) -> usize {
        match self {
            GpuKvKind::F32 => 2 * 4 * d,
            GpuKvKind::F16 => 2 * 2 * d,
            GpuKvKind::Int4 => 2 * (d / 2 + 4 * (d / int4_group(d).unwrap_or(d))),
        }
    }
}

/// INT4 group size for a head dimension: the largest of 64, 32, 16, 8 dividing `d`.
pub fn int4_group(d: usize) -> Option<usize> {
    [64, 32, 16, 8].into_iter().find(|g| d.is_multiple_of(*g))
}

/// Quantises one group (even length) into `dst` (`x.len() / 2` bytes; channel 2i in the low
/// nibble of byte i) and returns its (scale, min) as stored.
pub fn quant_group_i4(x: &[f32], dst: &mut [u8]) -> (f16, f16) {
    let (mut mn, mut mx) = (x[0], x[0]);
    for &v in &x[1..] {
        mn = mn.min(v);
        mx = mx.max(v);
    }
    let hs = f16::from_f32((mx - mn) / 15.0);
    let hm = f16::from_f32(mn);
    let (s, m0) = (hs.to_f32(), hm.to_f32());
    let code = |v: f32| -> u8 {
        if s > 0.0 {
            ((v - m0) / s).round_ties_even().clamp(0.0, 15.0) as u8
        } else {
            0
        }
    };
    for (i, b) in dst.iter_mut().enumerate().take(x.len() / 2) {
        *b = code(x[2 * i]) | (code(x[2 * i + 1]) << 4);
    }
    (hs, hm)
}

/// The value of code `q` in a group with stored (scale, min).
pub fn dequant_i4(q: u8, scale: f16, min: f16) -> f32 {
    f32::from(q).mul_add(scale.to_f32(), min.to_f32())
}

/// Quantise-then-dequantise a row of `d` channels with groups of `group` (what the INT4 cache
/// returns for it).
pub fn roundtrip_i4(x: &[f32], group: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    let mut buf = vec![0u8; group / 2];
    for g in x.chunks(group) {
        let (s, m) = quant_group_i4(g, &mut buf);
        for (i, _) in g.iter().enumerate() {
            let b = buf[i / 2];
            let q = if i % 2 == 1 { b >> 4 } else { b & 15 };
            out.push(dequant_i4(q, s, m));
        }
    }
    out
}

/// The cache slot of position `p` (see `attention.cu`).
pub fn slot_of(p: usize, cap: usize, window: usize, sinks: usize) -> usize {
    if window == 0 || p < sinks {
        p
    } else {
        sinks + (p - sinks) % (cap - sinks)
    }
}

/// Whether query position `qp` sees key position `p` (StreamingLLM mask; `window == 0`: causal).
pub fn visible(p: usize, qp: usize, window: usize, sinks: usize) -> bool {
    p <= qp && (window == 0 || p < sinks || qp - p < window - sinks)
}

/// The StreamingLLM shift of sink keys for query position `qp`: once the window has rolled,
/// sinks sit right before the oldest visible token, `qp + 1 - window` positions later than
/// where RoPE put them.
pub fn sink_shift(qp: usize, window: usize, sinks: usize) -> usize {
    if window > 0 && sinks > 0 {
        (qp + 1).saturating_sub(window)
    } else {
        0
    }
}

/// Naive attention in f64 for queries `q` `[T][H][d]` at positions `q0 + t` over keys/values
/// `[P][hkv][d]` at positions `0..P` (all kept), with the window/sink mask; sink keys are
/// rotated (rotate-half RoPE, base `theta`; 0 = off) by [`sink_shift`]. Returns `[T][H][d]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    d: usize,
    q0: usize,
    window: usize,
    sinks: usize,
    scale: f32,
    theta: f32,
) -> Vec<f32> {
    let t_len = q.len() / (heads * d);
    let p_len = k.len() / (kv_heads * d);
    let mut out = vec![0f32; q.len()];
    for t in 0..t_len {
        let qp = q0 + t;
        for h in 0..heads {
            let kvh = h / (heads / kv_heads);
            let qr = &q[(t * heads + h) * d..][..d];
            let keys: Vec<usize> = (0..p_len)
                .filter(|&p| visible(p, qp, window, sinks))
                .collect();
            let shift = if theta > 0.0 {
                sink_shift(qp, window, sinks)
            } else {
                0
            };
            let scores: Vec<f64> = keys
                .iter()
                .map(|&p| {
                    let mut kr: Vec<f64> = k[(p * kv_heads + kvh) * d..][..d]
                        .iter()
                        .map(|&x| f64::from(x))
                        .collect();
                    if p < sinks && shift > 0 {
                        let half = d / 2;
                        for j in 0..half {
                            let a =
                                shift as f64 * f64::from(theta).powf(-2.0 * j as f64 / d as f64);
                            let (sn, c) = a.sin_cos();
                            let (u, w) = (kr[j], kr[j + half]);
                            kr[j] = u * c - w * sn;
                            kr[j + half] = w * c + u * sn;
                        }
                    }
                    qr.iter()
                        .zip(&kr)
                        .map(|(a, b)| f64::from(*a) * b)
                        .sum::<f64>()
                        * f64::from(scale)
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let l: f64 = e.iter().sum();
            for c in 0..d {
                let acc: f64 = keys
                    .iter()
                    .zip(&e)
                    .map(|(&p, w)| w * f64::from(v[(p * kv_heads + kvh) * d + c]))
                    .sum();
                out[(t * heads + h) * d + c] = (acc / l) as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{quantize_row_i8_scalar, ternary_matmul};

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn ternary(n: usize, k: usize, seed: u64) -> TernaryMatrix {
        let v: Vec<i8> = lcg(n * k, seed)
            .iter()
            .map(|x| (x * 1.5).round().clamp(-1.0, 1.0) as i8)
            .collect();
        TernaryMatrix::from_ternary(&v, n, k).unwrap()
    }

    #[test]
    fn g2_layout_round_trips_codes_and_pads_with_zero_weights() {
        let m = ternary(7, 100, 1);
        let g = G2Matrix::stack(&[(&m, 0.5)]).unwrap();
        assert_eq!((g.n, g.k, g.k_pad), (7, 100, 128));
        for r in 0..7 {
            for c in 0..128 {
                let want = if c < 100 { m.code(r, c) } else { 1 };
                assert_eq!(g.code(r, c), want, "({r}, {c})");
            }
        }
    }

    /// The G2 scalar statement equals the CPU BitLinear product bit for bit, stacked rows keep
    /// their own scales.
    #[test]
    fn g2_product_equals_cpu_ternary_matmul() {
        for &(n1, n2, k) in &[(5, 3, 64), (9, 4, 100), (16, 8, 2560)] {
            let (a, b) = (ternary(n1, k, 2), ternary(n2, k, 3));
            let g = G2Matrix::stack(&[(&a, 0.75), (&b, 1.25)]).unwrap();
            let x = lcg(k, 4);
            let mut xq = vec![0i8; g.k_pad];
            let xs = quantize_row_i8_scalar(&x, &mut xq[..k]);
            let sum: i32 = xq.iter().map(|&v| i32::from(v)).sum();
            let got = g.matvec_ref(&xq, xs, sum);
            let mut wa = vec![0f32; n1];
            let mut wb = vec![0f32; n2];
            ternary_matmul(&a, 0.75, &x, 1, &mut wa).unwrap();
            ternary_matmul(&b, 1.25, &x, 1, &mut wb).unwrap();
            wa.extend(wb);
            assert_eq!(got, wa, "n {n1}+{n2} k {k}");
        }
    }

    #[test]
    fn stack_rejects_mismatched_columns() {
        let (a, b) = (ternary(2, 64, 1), ternary(2, 65, 2));
        assert!(G2Matrix::stack(&[(&a, 1.0), (&b, 1.0)]).is_err());
        assert!(G2Matrix::stack(&[]).is_err());
    }

    #[test]
    fn int4_roundtrip_error_is_within_half_a_step() {
        let x = lcg(128, 9);
        let y = roundtrip_i4(&x, 64);
        for g in 0..2 {
            let xs = &x[g * 64..][..64];
            let (mn, mx) = xs
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let step = (mx - mn) / 15.0;
            for (a, b) in xs.iter().zip(&y[g * 64..][..64]) {
                // f16 rounding of scale and min adds a little to half a step.
                assert!((a - b).abs() <= 0.5 * step + 2e-3, "{a} vs {b}");
            }
        }
        // A constant group has scale 0 and returns its value (to f16 precision).
        let c = roundtrip_i4(&[0.3; 8], 8);
        assert!(c.iter().all(|&v| (v - 0.3).abs() < 1e-3));
    }

    #[test]
    fn slots_roll_past_the_sinks_and_visibility_is_streaming_llm() {
        // cap 10 with 2 sinks: positions 2.. roll through slots 2..10.
        assert_eq!(slot_of(1, 10, 6, 2), 1);
        assert_eq!(slot_of(2, 10, 6, 2), 2);
        assert_eq!(slot_of(9, 10, 6, 2), 9);
        assert_eq!(slot_of(10, 10, 6, 2), 2);
        assert_eq!(slot_of(123, 0, 0, 0), 123);
        // window 6 with 2 sinks: query 20 sees 0, 1 and 17..=20.
        let seen: Vec<usize> = (0..=25).filter(|&p| visible(p, 20, 6, 2)).collect();
        assert_eq!(seen, vec![0, 1, 17, 18, 19, 20]);
        assert_eq!((0..=5).filter(|&p| visible(p, 3, 0, 0)).count(), 4);
        // Sinks shift once the window has rolled: query 20, window 6 → 15 positions.
        assert_eq!(sink_shift(20, 6, 2), 15);
        assert_eq!(sink_shift(5, 6, 2), 0);
        assert_eq!(sink_shift(20, 6, 0), 0);
    }

    /// A sink key rotated by the shift scores like the same key placed `shift` positions
    /// later: RoPE's relative property, checked on the reference itself.
    #[test]
    fn sink_rotation_equals_moving_the_key() {
        let d = 8;
        let theta = 10000f32;
        let rope = |x: &[f32], pos: usize| -> Vec<f32> {
            let half = d / 2;
            let mut y = x.to_vec();
            for j in 0..half {
                let a = pos as f64 * f64::from(theta).powf(-2.0 * j as f64 / d as f64);
                let (s, c) = a.sin_cos();
                let (u, w) = (f64::from(x[j]), f64::from(x[j + half]));
                y[j] = (u * c - w * s) as f32;
                y[j + half] = (w * c + u * s) as f32;
            }
            y
        };
        let raw_k = lcg(d, 31);
        let raw_v = lcg(d, 32);
        let q = rope(&lcg(d, 33), 9);
        // Window 4 with 1 sink at query 9: shift 6; keys 0 (sink) and 7..9 visible.
        let mut k = vec![0f32; 10 * d];
        let mut v = vec![0f32; 10 * d];
        for p in 0..10 {
            k[p * d..][..d].copy_from_slice(&rope(&raw_k, p));
            v[p * d..][..d].copy_from_slice(&raw_v);
        }
        v[..d].copy_from_slice(&lcg(d, 34));
        let got = attention_ref(&q, &k, &v, 1, 1, d, 9, 4, 1, 0.5, theta);
        // The same attention with the sink's key written at position 6 and no shift.
        let mut k2 = k.clone();
        k2[..d].copy_from_slice(&rope(&raw_k, 6));
        let want = attention_ref(&q, &k2, &v, 1, 1, d, 9, 4, 1, 0.5, 0.0);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn int4_groups() {
        assert_eq!(int4_group(128), Some(64));
        assert_eq!(int4_group(96), Some(32));
        assert_eq!(int4_group(16), Some(16));
        assert_eq!(int4_group(12), None);
    }
}
