//! Naive attention, the specification the fused kernels must match: materialises the full score
//! matrix in f64, applies an arbitrary `allowed(q_pos, k_pos)` predicate, softmaxes each row and
//! multiplies by V. Rows with no allowed key produce zeros (the kernels' convention). Slow on
//! purpose; for tests and for checking callers.

use super::flash::AttnShape;

/// `softmax(q kᵀ · scale + mask) v` for `q` `[heads, q_len, d]`, `k`/`v` `[kv_heads, kv_len, d]`
/// (GQA: query head `h` reads kv head `h / (heads / kv_heads)`), queries at absolute positions
/// `q_offset..`, keys at `0..kv_len`. Returns `[heads, q_len, d]`.
pub fn attention_naive(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttnShape,
    scale: f32,
    q_offset: usize,
    allowed: impl Fn(usize, usize) -> bool,
) -> Vec<f32> {
    let AttnShape {
        heads,
        kv_heads,
        q_len,
        kv_len,
        head_dim: d,
    } = shape;
    let group = heads / kv_heads;
    let mut out = vec![0f32; heads * q_len * d];
    for h in 0..heads {
        let kvh = h / group;
        for i in 0..q_len {
            let qi = &q[(h * q_len + i) * d..][..d];
            let scores: Vec<Option<f64>> = (0..kv_len)
                .map(|j| {
                    allowed(q_offset + i, j).then(|| {
                        let kj = &k[(kvh * kv_len + j) * d..][..d];
                        qi.iter()
                            .zip(kj)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                })
                .collect();
            let m = scores
                .iter()
                .flatten()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                continue;
            }
            let w: Vec<f64> = scores
                .iter()
                .map(|s| s.map_or(0.0, |s| (s - m).exp()))
                .collect();
            let z: f64 = w.iter().sum();
            let o = &mut out[(h * q_len + i) * d..][..d];
            for (c, oc) in o.iter_mut().enumerate() {
                let acc: f64 = (0..kv_len)
                    .map(|j| w[j] * v[(kvh * kv_len + j) * d + c] as f64)
                    .sum();
                *oc = (acc / z) as f32;
            }
        }
    }
    out
}
