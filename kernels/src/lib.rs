//! `tritter-kernels`: ternary (BitNet b1.58) weight packing, int8 activation quantisation and
//! CPU GEMV/GEMM kernels. Works on plain slices; never allocates tensors (the model crate wraps
//! these in candle ops).
//!
//! This is the minimal scalar seam the model crate calls; the SIMD kernels replace its insides.

/// Errors from packing and shape checks.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{0}")]
    Shape(String),
    #[error("invalid ternary value {0} (expected -1, 0 or 1)")]
    Value(i32),
}

/// A ternary matrix of `n` rows (output features) by `k` columns (input features).
#[derive(Debug, Clone)]
pub struct TernaryMatrix {
    n: usize,
    k: usize,
    /// Row-major codes, four per byte along k: bits 2j..2j+1 hold column 4c+j, code = value + 1.
    codes: Vec<u8>,
    row_bytes: usize,
}

impl TernaryMatrix {
    /// From row-major values in -1..=1.
    pub fn from_ternary(values: &[i8], n: usize, k: usize) -> Result<Self, KernelError> {
        if values.len() != n * k {
            return Err(KernelError::Shape(format!(
                "{} values for a {n}x{k} matrix",
                values.len()
            )));
        }
        let row_bytes = k.div_ceil(4);
        let mut codes = vec![0u8; n * row_bytes];
        for r in 0..n {
            for c in 0..k {
                let v = values[r * k + c];
                if !(-1..=1).contains(&v) {
                    return Err(KernelError::Value(v as i32));
                }
                codes[r * row_bytes + c / 4] |= ((v + 1) as u8) << (2 * (c % 4));
            }
        }
        Ok(Self {
            n,
            k,
            codes,
            row_bytes,
        })
    }

    /// From the HF BitNet packed layout: uint8 `[ceil(n/4), k]`, byte `[r, c]` holds in bits
    /// 2i..2i+1 the code (value + 1) of row `i * ceil(n/4) + r`.
    pub fn from_hf_packed(packed: &[u8], n: usize, k: usize) -> Result<Self, KernelError> {
        let rows = n.div_ceil(4);
        if packed.len() != rows * k {
            return Err(KernelError::Shape(format!(
                "{} packed bytes for a {n}x{k} matrix (expected {})",
                packed.len(),
                rows * k
            )));
        }
        let mut values = vec![0i8; n * k];
        for (r, row) in packed.chunks_exact(k).enumerate() {
            for (c, &b) in row.iter().enumerate() {
                for i in 0..4 {
                    let out = i * rows + r;
                    if out < n {
                        let code = (b >> (2 * i)) & 3;
                        if code == 3 {
                            return Err(KernelError::Value(2));
                        }
                        values[out * k + c] = code as i8 - 1;
                    }
                }
            }
        }
        Self::from_ternary(&values, n, k)
    }

    /// Row-major values in -1..=1.
    pub fn to_ternary(&self) -> Vec<i8> {
        let mut v = Vec::with_capacity(self.n * self.k);
        for r in 0..self.n {
            for c in 0..self.k {
                v.push(((self.codes[r * self.row_bytes + c / 4] >> (2 * (c % 4))) & 3) as i8 - 1);
            }
        }
        v
    }

    /// The HF BitNet packed layout (`[ceil(n/4), k]`).
    pub fn to_hf_packed(&self) -> Vec<u8> {
        let rows = self.n.div_ceil(4);
        let vals = self.to_ternary();
        let mut out = vec![0u8; rows * self.k];
        for r in 0..self.n {
            let (i, pr) = (r / rows, r % rows);
            for c in 0..self.k {
                out[pr * self.k + c] |= ((vals[r * self.k + c] + 1) as u8) << (2 * i);
            }
        }
        out
    }

    pub fn n(&self) -> usize {
        self.n
    }
    pub fn k(&self) -> usize {
        self.k
    }
    pub fn packed_bytes(&self) -> usize {
        self.codes.len()
    }
}

/// Per-row absmax int8 quantisation as HF BitNet: `s = 127 / max(max|x|, 1e-5)`,
/// `q = round_half_even(x * s).clamp(-128, 127)`. Returns `s`.
pub fn quantize_row_i8(x: &[f32], out: &mut [i8]) -> f32 {
    let m = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
    let s = 127f32 / m;
    for (o, v) in out.iter_mut().zip(x) {
        *o = (v * s).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    s
}

/// `out[i, j] = (Σ_c w[j, c] · q(x[i])[c]) / (s_x[i] · weight_scale)` for `m` rows of `x`.
pub fn ternary_matmul(
    w: &TernaryMatrix,
    weight_scale: f32,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let (n, k) = (w.n, w.k);
    if x.len() != m * k || out.len() != m * n {
        return Err(KernelError::Shape(format!(
            "ternary_matmul: x has {} values, out {} for m={m}, {n}x{k}",
            x.len(),
            out.len()
        )));
    }
    let vals = w.to_ternary();
    let mut q = vec![0i8; k];
    for i in 0..m {
        let s = quantize_row_i8(&x[i * k..(i + 1) * k], &mut q);
        for j in 0..n {
            let acc: i32 = vals[j * k..(j + 1) * k]
                .iter()
                .zip(&q)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
            out[i * n + j] = acc as f32 / (s * weight_scale);
        }
    }
    Ok(())
}
