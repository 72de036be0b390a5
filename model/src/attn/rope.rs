//! Rotary position shifts in the Hugging Face "rotate-half" layout (pairs `(j, j + d/2)`,
//! `inv_freq[j] = theta^(-2j/d)`), matching `transformers`' `apply_rotary_pos_emb`. The KV cache
//! uses it to move sink keys to their StreamingLLM cache positions: RoPE rotations compose
//! (`R(a)·R(b) = R(a+b)`), so a key rotated at position `p` becomes one rotated at `p + delta`.
//!
//! [`rotate_half`] is the one host statement of the rotation itself; the model's RoPE on slices
//! (`crate::rope::Rope::rotate_rows`) uses it with HF's f32 angles. The shift tables here are
//! computed in f64 on purpose: a shift can be as large as the whole context.

/// Precomputed inverse frequencies of one head dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeShift {
    inv_freq: Vec<f64>,
}

impl RopeShift {
    /// Frequencies for `head_dim` (even) and base `theta`.
    pub fn new(head_dim: usize, theta: f32) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half)
            .map(|j| (theta as f64).powf(-(2.0 * j as f64) / head_dim as f64))
            .collect();
        RopeShift { inv_freq }
    }

    /// `(cos, sin)` of `delta · inv_freq[j]` for every pair; angles in f64 so large positions stay
    /// accurate.
    pub fn table(&self, delta: usize) -> Vec<(f32, f32)> {
        self.inv_freq
            .iter()
            .map(|f| {
                let a = delta as f64 * f;
                (a.cos() as f32, a.sin() as f32)
            })
            .collect()
    }

    /// Rotates one head vector `x` (`head_dim` long) by the angles of `table`.
    pub fn apply(table: &[(f32, f32)], x: &mut [f32]) {
        rotate_half(x, table);
    }
}

/// Rotates one head vector `x` (`2 · table.len()` long) in the rotate-half layout by the
/// `(cos, sin)` pairs of `table`: `x₁·cos − x₂·sin`, `x₂·cos + x₁·sin`.
pub fn rotate_half(x: &mut [f32], table: &[(f32, f32)]) {
    let half = table.len();
    let (a, b) = x.split_at_mut(half);
    for ((x1, x2), &(c, s)) in a.iter_mut().zip(b.iter_mut()).zip(table) {
        let (u, w) = (*x1, *x2);
        *x1 = u * c - w * s;
        *x2 = w * c + u * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct formula of HF `x * cos + rotate_half(x) * sin` at position `pos`.
    fn rope_at(x: &[f32], pos: usize, theta: f64) -> Vec<f32> {
        let d = x.len();
        let h = d / 2;
        (0..d)
            .map(|i| {
                let j = i % h;
                let a = pos as f64 * theta.powf(-(2.0 * j as f64) / d as f64);
                let rot = if i < h { -x[i + h] } else { x[i - h] } as f64;
                (x[i] as f64 * a.cos() + rot * a.sin()) as f32
            })
            .collect()
    }

    #[test]
    fn shift_composes_with_hf_rotation() {
        let x: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        let r = RopeShift::new(16, 10000.0);
        let mut y = rope_at(&x, 5, 10000.0);
        RopeShift::apply(&r.table(123), &mut y);
        let want = rope_at(&x, 128, 10000.0);
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
