//! Packed ternary weight storage: the `T2` block format used by every kernel, and conversion to
//! and from the Hugging Face BitNet layout and plain ternary values.
//!
//! # The T2 block format
//!
//! A weight matrix has `n` rows (output features) and `k` columns (input features), values in
//! {-1, 0, 1}, stored as the 2-bit code `c = w + 1` ∈ {0, 1, 2} (the same code as Hugging Face's
//! `unpack_weights`). Rows are grouped in **panels** of [`PANEL_ROWS`] = 16 rows and columns in
//! **blocks** of [`BLOCK_K`] = 16 columns; one [`BlockT2`] (64 bytes, one cache line) holds the
//! 256 codes of one panel × one column block:
//!
//! ```text
//! byte j (0..64):  row r = j / 4,  kk = j % 4
//! bits 2i..2i+1 (i = 0..4): code of (row 16·p + r, column 16·b + 4·i + kk)
//! ```
//!
//! So `(bytes >> 2i) & 3` is a 64-byte vector of codes for 16 rows × 4 consecutive columns,
//! exactly the operand shape of `vpdpbusd` (u8 × i8, four adjacent products summed into each
//! i32 lane) with the four activations broadcast to every lane: one AVX-512 load and two
//! logic ops per 64 multiply-adds, the 16 output rows land in the 16 lanes with no horizontal
//! reduction. AVX2 uses the two 32-byte halves (rows 0..8 and 8..16) the same way.
//!
//! Blocks are stored panel-major (`blocks[p · nb + b]`, `nb = k_pad / 16`), so one panel is a
//! contiguous stream. Ragged shapes are padded: `k` up to a multiple of 16 and `n` up to a
//! multiple of 16, the padding holding code 1 (weight 0), so padding contributes nothing.
//!
//! # Hugging Face layout (what [`TernaryMatrix::from_hf_packed`] reads)
//!
//! uint8 `[n/4, k]`; with `R = n/4`, the byte at `[r, c]` holds in bits `2i..2i+1` the code of
//! weight row `i·R + r`, column `c` (transformers `integrations/bitnet.py`, `pack_weights`).

use crate::{HugeBuf, KernelError};
use rayon::prelude::*;

/// Rows per panel (output features sharing one block).
pub const PANEL_ROWS: usize = 16;
/// Columns (input features) per block.
pub const BLOCK_K: usize = 16;
/// Largest `k` accepted (262 144). Keeps every i32 accumulator exact: `|Σ (w+1)·x| ≤ 2·128·k`,
/// and the GEMV tile's plane accumulators, which carry an extra factor of up to 64, stay
/// below 2^30 (see `x86::avx512::tile_vnni_gemv`).
pub const MAX_K: usize = 1 << 18;

/// One cache line of packed ternary codes: 16 rows × 16 columns, 2 bits each.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockT2 {
    /// Byte `j` holds row `j / 4`; its bits `2i..2i+1` hold the code (`w + 1`) of column
    /// `4·i + j % 4` of the block.
    pub qs: [u8; 64],
}

const _: () = assert!(std::mem::size_of::<BlockT2>() == 64);
const _: () = assert!(std::mem::align_of::<BlockT2>() == 64);

/// A block whose 256 codes are all 1 (weight 0): the padding value.
const ZERO_BLOCK: BlockT2 = BlockT2 { qs: [0x55; 64] };

/// A ternary weight matrix (`n` output rows × `k` input columns) in the T2 block format.
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryMatrix {
    /// Rows (output features).
    n: usize,
    /// Columns (input features).
    k: usize,
    /// Blocks per panel: `ceil(k / 16)`.
    nb: usize,
    /// Panels: `ceil(n / 16)`.
    panels: usize,
    /// `panels · nb` blocks, panel-major (on huge pages when large: `crate::huge`).
    blocks: HugeBuf<BlockT2>,
}

/// Byte and bit position of weight `(row, col)`: (block index, byte in block, shift).
#[inline]
fn locate(nb: usize, row: usize, col: usize) -> (usize, usize, u32) {
    let p = row / PANEL_ROWS;
    let b = col / BLOCK_K;
    let r = row % PANEL_ROWS;
    let c = col % BLOCK_K;
    let byte = r * 4 + c % 4;
    let shift = 2 * (c / 4) as u32;
    (p * nb + b, byte, shift)
}

impl TernaryMatrix {
    /// An all-zero matrix of the given shape.
    fn zeros(n: usize, k: usize) -> Result<Self, KernelError> {
        if n == 0 || k == 0 {
            return Err(KernelError::BadShape {
                n,
                k,
                reason: "both dimensions must be at least 1",
            });
        }
        if k > MAX_K {
            return Err(KernelError::BadShape {
                n,
                k,
                reason: "k exceeds 2^18, the bound that keeps i32 accumulators exact",
            });
        }
        let nb = k.div_ceil(BLOCK_K);
        let panels = n.div_ceil(PANEL_ROWS);
        let count = panels.checked_mul(nb).ok_or(KernelError::BadShape {
            n,
            k,
            reason: "too many blocks",
        })?;
        Ok(Self {
            n,
            k,
            nb,
            panels,
            blocks: HugeBuf::filled(ZERO_BLOCK, count)?,
        })
    }

    /// Stores code `code` (0..=2) at `(row, col)`; the slot must still hold code 1.
    #[inline]
    fn set_code(&mut self, row: usize, col: usize, code: u8) {
        let (blk, byte, shift) = locate(self.nb, row, col);
        let slot = &mut self.blocks[blk].qs[byte];
        *slot = (*slot & !(3 << shift)) | (code << shift);
    }

    /// The code (`w + 1`) at `(row, col)`; padding positions read as 1.
    #[inline]
    pub fn code(&self, row: usize, col: usize) -> u8 {
        let (blk, byte, shift) = locate(self.nb, row, col);
        (self.blocks[blk].qs[byte] >> shift) & 3
    }

    /// Builds the matrix from row-major ternary values (`n · k` of them, each in -1..=1).
    pub fn from_ternary(values: &[i8], n: usize, k: usize) -> Result<Self, KernelError> {
        let mut m = Self::zeros(n, k)?;
        if values.len() != n * k {
            return Err(KernelError::BadLength {
                what: "values",
                expected: n * k,
                got: values.len(),
            });
        }
        for (index, &v) in values.iter().enumerate() {
            if !(-1..=1).contains(&v) {
                return Err(KernelError::NotTernary { index, value: v });
            }
            m.set_code(index / k, index % k, (v + 1) as u8);
        }
        Ok(m)
    }

    /// Builds the matrix from the Hugging Face BitNet packed layout: uint8 `[n/4, k]`, four
    /// output rows per byte (see the module header). `n` must be a multiple of 4.
    pub fn from_hf_packed(packed: &[u8], n: usize, k: usize) -> Result<Self, KernelError> {
        if !n.is_multiple_of(4) {
            return Err(KernelError::BadShape {
                n,
                k,
                reason: "the Hugging Face packed layout needs n to be a multiple of 4",
            });
        }
        let mut m = Self::zeros(n, k)?;
        let r_rows = n / 4;
        if packed.len() != r_rows * k {
            return Err(KernelError::BadLength {
                what: "packed",
                expected: r_rows * k,
                got: packed.len(),
            });
        }
        for (idx, &byte) in packed.iter().enumerate() {
            let (r, c) = (idx / k, idx % k);
            for i in 0..4 {
                let code = (byte >> (2 * i)) & 3;
                let row = i * r_rows + r;
                if code == 3 {
                    return Err(KernelError::BadCode {
                        byte: idx,
                        row,
                        col: c,
                    });
                }
                m.set_code(row, c, code);
            }
        }
        Ok(m)
    }

    /// Quantises latent f32 weights (row-major `n · k`) the BitNet b1.58 way:
    /// `weight_scale = 1 / max(mean|W|, 1e-5)`, `W_q = round_ties_even(W · weight_scale)`
    /// clamped to -1..=1. Returns the matrix and `weight_scale` (the value the kernels divide by).
    /// `mean|W|` is summed in f64 and rounded once to f32 (PyTorch sums f32 pairwise, which can
    /// differ in the last bit for large tensors).
    pub fn from_f32_absmean(w: &[f32], n: usize, k: usize) -> Result<(Self, f32), KernelError> {
        if w.len() != n * k {
            return Err(KernelError::BadLength {
                what: "w",
                expected: n * k,
                got: w.len(),
            });
        }
        let mut sum = 0f64;
        for (index, &v) in w.iter().enumerate() {
            if !v.is_finite() {
                return Err(KernelError::NotFinite { index, value: v });
            }
            sum += f64::from(v.abs());
        }
        let mean = (sum / w.len() as f64) as f32;
        let scale = 1.0 / mean.max(1e-5);
        Ok((Self::from_f32_scaled(w, n, k, scale)?, scale))
    }

    /// Quantises latent f32 weights (row-major `n · k`) with a given `weight_scale`:
    /// `W_q = round_ties_even(W · weight_scale)` clamped to -1..=1 (the second half of
    /// [`Self::from_f32_absmean`]), one panel of rows per rayon task. A non-finite weight is an
    /// error.
    pub fn from_f32_scaled(
        w: &[f32],
        n: usize,
        k: usize,
        weight_scale: f32,
    ) -> Result<Self, KernelError> {
        if w.len() != n * k {
            return Err(KernelError::BadLength {
                what: "w",
                expected: n * k,
                got: w.len(),
            });
        }
        let mut m = Self::zeros(n, k)?;
        let nb = m.nb;
        if nb == 0 {
            return Ok(m);
        }
        m.blocks
            .par_chunks_mut(nb)
            .enumerate()
            .try_for_each(|(p, panel)| {
                let rows = (p * PANEL_ROWS)..((p + 1) * PANEL_ROWS).min(n);
                for (r, row) in rows.clone().zip(0..) {
                    let src = &w[r * k..(r + 1) * k];
                    for (b, cols) in src.chunks(BLOCK_K).enumerate() {
                        let bytes = &mut panel[b].qs[row * 4..row * 4 + 4];
                        let mut packed = [0x55u8; 4];
                        for (c, &v) in cols.iter().enumerate() {
                            if !v.is_finite() {
                                let index = r * k + b * BLOCK_K + c;
                                return Err(KernelError::NotFinite { index, value: v });
                            }
                            let q = (v * weight_scale).round_ties_even().clamp(-1.0, 1.0) as i8;
                            let shift = 2 * (c / 4);
                            let slot = &mut packed[c % 4];
                            *slot = (*slot & !(3 << shift)) | (((q + 1) as u8) << shift);
                        }
                        bytes.copy_from_slice(&packed);
                    }
                }
                Ok(())
            })?;
        Ok(m)
    }

    /// The weights as row-major ternary values (`n · k`).
    pub fn to_ternary(&self) -> Vec<i8> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for row in 0..self.n {
            for col in 0..self.k {
                out.push(self.code(row, col) as i8 - 1);
            }
        }
        out
    }

    /// The weights in the Hugging Face packed layout, uint8 `[ceil(n/4), k]`. When `n` is not a
    /// multiple of 4 the layout covers `4 · ceil(n/4)` rows, the extra rows being zero weights.
    pub fn to_hf_packed(&self) -> Vec<u8> {
        let r_rows = self.n.div_ceil(4);
        let mut out = vec![0u8; r_rows * self.k];
        for (idx, byte) in out.iter_mut().enumerate() {
            let (r, c) = (idx / self.k, idx % self.k);
            for i in 0..4 {
                let row = i * r_rows + r;
                let code = if row < self.n { self.code(row, c) } else { 1 };
                *byte |= code << (2 * i);
            }
        }
        out
    }

    /// Rows (output features).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns (input features).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `k` rounded up to a multiple of [`BLOCK_K`].
    pub fn k_padded(&self) -> usize {
        self.nb * BLOCK_K
    }

    /// Blocks per panel.
    pub fn blocks_per_panel(&self) -> usize {
        self.nb
    }

    /// Number of 16-row panels.
    pub fn panels(&self) -> usize {
        self.panels
    }

    /// Bytes of packed weights the kernels read (padding included).
    pub fn packed_bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<BlockT2>()
    }

    /// The `nb` blocks of panel `p` (`p < panels()`).
    #[inline]
    pub fn panel(&self, p: usize) -> &[BlockT2] {
        &self.blocks[p * self.nb..(p + 1) * self.nb]
    }

    /// All blocks, panel-major.
    pub fn blocks(&self) -> &[BlockT2] {
        &self.blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Naive statement of the HF packing (independent of the code above): weight row
    /// `i·R + r`, column `c` goes to bits `2i` of byte `[r, c]`.
    fn hf_pack_naive(values: &[i8], n: usize, k: usize) -> Vec<u8> {
        let r_rows = n / 4;
        let mut out = vec![0u8; r_rows * k];
        for row in 0..n {
            for c in 0..k {
                let (i, r) = (row / r_rows, row % r_rows);
                out[r * k + c] |= ((values[row * k + c] + 1) as u8) << (2 * i);
            }
        }
        out
    }

    fn ternary(len: usize) -> impl Strategy<Value = Vec<i8>> {
        proptest::collection::vec(-1i8..=1, len)
    }

    proptest! {
        #[test]
        fn ternary_round_trip(
            (n, k, v) in (1usize..40, 1usize..70).prop_flat_map(|(n, k)| (Just(n), Just(k), ternary(n * k)))
        ) {
            let m = TernaryMatrix::from_ternary(&v, n, k).unwrap();
            prop_assert_eq!(m.to_ternary(), v);
        }

        #[test]
        fn hf_round_trip(
            (n, k, v) in (1usize..10, 1usize..70).prop_flat_map(|(n4, k)| (Just(4 * n4), Just(k), ternary(4 * n4 * k)))
        ) {
            let packed = hf_pack_naive(&v, n, k);
            let m = TernaryMatrix::from_hf_packed(&packed, n, k).unwrap();
            prop_assert_eq!(m.to_ternary(), v.clone());
            prop_assert_eq!(m.to_hf_packed(), packed);
            prop_assert_eq!(TernaryMatrix::from_ternary(&v, n, k).unwrap(), m);
        }
    }

    #[test]
    fn block_layout_matches_header() {
        // Row 17 (panel 1, r = 1), column 21 (block 1, c = 5: plane i = 1, kk = 1) set to +1.
        let (n, k) = (20, 40);
        let mut v = vec![0i8; n * k];
        v[17 * k + 21] = 1;
        let m = TernaryMatrix::from_ternary(&v, n, k).unwrap();
        assert_eq!(m.panels(), 2);
        assert_eq!(m.blocks_per_panel(), 3);
        let blk = &m.blocks()[3 + 1];
        for (j, &byte) in blk.qs.iter().enumerate() {
            let expect = if j == 4 + 1 { 0x55 ^ (0b11 << 2) } else { 0x55 };
            assert_eq!(byte, expect, "byte {j}");
        }
    }

    #[test]
    fn ragged_n_exports_zero_padding_rows() {
        let (n, k) = (5, 3);
        let v: Vec<i8> = (0..n * k).map(|i| (i % 3) as i8 - 1).collect();
        let m = TernaryMatrix::from_ternary(&v, n, k).unwrap();
        let packed = m.to_hf_packed();
        let mut padded = v.clone();
        padded.extend(std::iter::repeat_n(0i8, 3 * k));
        assert_eq!(packed, hf_pack_naive(&padded, 8, k));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            TernaryMatrix::from_ternary(&[0, 2, 0, 0], 2, 2),
            Err(KernelError::NotTernary { index: 1, value: 2 })
        ));
        assert!(matches!(
            TernaryMatrix::from_ternary(&[0; 3], 2, 2),
            Err(KernelError::BadLength { .. })
        ));
        assert!(matches!(
            TernaryMatrix::from_hf_packed(&[0b11], 4, 1),
            Err(KernelError::BadCode {
                byte: 0,
                row: 0,
                col: 0
            })
        ));
        assert!(matches!(
            TernaryMatrix::from_hf_packed(&[0x55; 2], 6, 1),
            Err(KernelError::BadShape { .. })
        ));
        assert!(matches!(
            TernaryMatrix::from_ternary(&[], 0, 3),
            Err(KernelError::BadShape { .. })
        ));
        assert!(matches!(
            TernaryMatrix::from_f32_absmean(&[1.0, f32::NAN], 1, 2),
            Err(KernelError::NotFinite { index: 1, .. })
        ));
    }

    #[test]
    fn absmean_matches_reference_statement() {
        // mean|W| = (0.5 + 1.5 + 0.25 + 0 + 2 + 0.75) / 6 = 0.8333..; scale = 1.2
        let w = [0.5f32, -1.5, 0.25, 0.0, 2.0, -0.75];
        let (m, scale) = TernaryMatrix::from_f32_absmean(&w, 2, 3).unwrap();
        let mean = w.iter().map(|v| v.abs()).sum::<f32>() / 6.0;
        assert_eq!(scale, 1.0 / mean);
        // 0.5·1.2 = 0.6 → 1; -1.8 → -1; 0.3 → 0; 0; 2.4 → 1; -0.9 → -1
        assert_eq!(m.to_ternary(), vec![1, -1, 0, 0, 1, -1]);
        // mean|W| = 1 exactly, scale 1: ±0.5 are ties and go to 0 (even), 1.5 → 2 → clamp 1.
        let (t, tscale) = TernaryMatrix::from_f32_absmean(&[0.5, -0.5, 1.5, 1.5], 1, 4).unwrap();
        assert_eq!(tscale, 1.0);
        assert_eq!(t.to_ternary(), vec![0, 0, 1, 1]);
        let (z, zscale) = TernaryMatrix::from_f32_absmean(&[0.0; 4], 2, 2).unwrap();
        assert_eq!(zscale, 1.0 / 1e-5f32);
        assert_eq!(z.to_ternary(), vec![0; 4]);
    }

    /// The panel-parallel packer equals packing element by element (`from_ternary`, one
    /// `set_code` per weight) on ragged shapes: partial panels, partial blocks, ties.
    #[test]
    fn scaled_packer_matches_elementwise_packing() {
        for &(n, k) in &[(1, 1), (5, 7), (16, 16), (17, 33), (45, 50), (64, 100)] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 37 + 11) % 29) as f32 / 7.0 - 2.0)
                .collect();
            let scale = 1.25f32;
            let want: Vec<i8> = w
                .iter()
                .map(|v| (v * scale).round_ties_even().clamp(-1.0, 1.0) as i8)
                .collect();
            let got = TernaryMatrix::from_f32_scaled(&w, n, k, scale).unwrap();
            assert_eq!(
                got,
                TernaryMatrix::from_ternary(&want, n, k).unwrap(),
                "{n}x{k}"
            );
        }
        assert!(matches!(
            TernaryMatrix::from_f32_scaled(&[0.0, 1.0, f32::INFINITY], 1, 3, 1.0),
            Err(KernelError::NotFinite { index: 2, .. })
        ));
    }
}
