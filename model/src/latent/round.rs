//! Rounding continuous thoughts to tokens, so a person can see what a thought holds: the tokens
//! whose input embeddings are nearest to the thought by cosine similarity (Coconut's own
//! inspection of its thoughts decodes them the same way, against the embedding table the thoughts
//! are fed in place of). Must match a naive scan over every row (test below): same ids in the same
//! order (higher cosine first, the lower id first on a tie), same scores.

use crate::error::{Error, Result};
use crate::transformer::Transformer;
use candle_core::DType;

/// An embedding table `[V, C]` with each row's inverse norm, ready to round thoughts against.
#[derive(Debug, Clone)]
pub struct ThoughtRounder {
    rows: Vec<f32>,
    inv_norm: Vec<f32>,
    hidden: usize,
}

impl ThoughtRounder {
    /// The rounder over embedding rows `rows` (`[V, C]`, `C = hidden`, row after row).
    pub fn new(rows: Vec<f32>, hidden: usize) -> Result<Self> {
        if hidden == 0 || rows.is_empty() || !rows.len().is_multiple_of(hidden) {
            return Err(Error::Invalid(format!(
                "an embedding table of {} values is not rows of {hidden} channels",
                rows.len()
            )));
        }
        let inv_norm = rows
            .chunks_exact(hidden)
            .map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
                if n > 0.0 {
                    1.0 / n
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Self {
            rows,
            inv_norm,
            hidden,
        })
    }

    /// The rounder over `model`'s input embedding table (in f32).
    pub fn from_model(model: &Transformer) -> Result<Self> {
        let e = model.embeddings();
        let rows = e.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::new(rows, model.config().hidden_size)
    }

    /// Number of rows (tokens).
    pub fn len(&self) -> usize {
        self.inv_norm.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inv_norm.is_empty()
    }

    /// The `k` tokens nearest to `thought` `[C]` by cosine, as `(id, cosine)`, highest first (the
    /// lower id first on a tie). A row of zeros scores 0.
    pub fn nearest(&self, thought: &[f32], k: usize) -> Result<Vec<(u32, f32)>> {
        if thought.len() != self.hidden {
            return Err(Error::Invalid(format!(
                "a thought of {} values, the embeddings have {} channels",
                thought.len(),
                self.hidden
            )));
        }
        let norm = thought.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(Error::Invalid(format!(
                "a thought of norm {norm} has no direction to round"
            )));
        }
        let inv = 1.0 / norm;
        // The best k so far, highest first; a new row enters only if it beats the last.
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
        for (id, (row, &rn)) in self
            .rows
            .chunks_exact(self.hidden)
            .zip(&self.inv_norm)
            .enumerate()
        {
            let dot: f32 = row.iter().zip(thought).map(|(a, b)| a * b).sum();
            let cos = dot * rn * inv;
            if best.len() == k && best.last().is_none_or(|&(_, s)| cos <= s) {
                continue;
            }
            let at = best.partition_point(|&(_, s)| s >= cos);
            best.insert(at, (id as u32, cos));
            best.truncate(k);
        }
        Ok(best)
    }
}

/// The `k` tokens whose rows of `embeddings` (`[V, C]`) are nearest to `thought` by cosine; see
/// [`ThoughtRounder::nearest`]. Builds the table's norms each call: keep a [`ThoughtRounder`] to
/// round many thoughts.
pub fn nearest_tokens(
    embeddings: &[f32],
    hidden: usize,
    thought: &[f32],
    k: usize,
) -> Result<Vec<(u32, f32)>> {
    ThoughtRounder::new(embeddings.to_vec(), hidden)?.nearest(thought, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random table: values in [-1, 1).
    fn table(v: usize, c: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..v * c)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every row's cosine in f64, sorted by (-cosine, id): the definition, no shortcuts.
    fn naive(rows: &[f32], c: usize, t: &[f32]) -> Vec<(u32, f64)> {
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
        };
        let mut all: Vec<(u32, f64)> = rows
            .chunks_exact(c)
            .enumerate()
            .map(|(i, r)| {
                let n = dot(r, r).sqrt() * dot(t, t).sqrt();
                (i as u32, if n > 0.0 { dot(r, t) / n } else { 0.0 })
            })
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all
    }

    #[test]
    fn top_k_equals_a_naive_scan() {
        let (v, c) = (300, 24);
        let mut rows = table(v, c, 7);
        // A zero row, and a row that is an exact multiple of the first thought (cosine 1).
        rows[5 * c..6 * c].fill(0.0);
        let thoughts = table(20, c, 99);
        rows[17 * c..18 * c]
            .copy_from_slice(&thoughts[..c].iter().map(|x| 3.0 * x).collect::<Vec<_>>());
        let r = ThoughtRounder::new(rows.clone(), c).unwrap();
        assert_eq!(r.len(), v);
        for (i, t) in thoughts.chunks_exact(c).enumerate() {
            for k in [1, 3, 10] {
                let got = r.nearest(t, k).unwrap();
                let want = naive(&rows, c, t);
                assert_eq!(got.len(), k);
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.0, w.0, "thought {i}, k {k}: {got:?} vs {:?}", &want[..k]);
                    assert!((g.1 as f64 - w.1).abs() < 1e-5, "{g:?} vs {w:?}");
                }
            }
            if i == 0 {
                let top = r.nearest(t, 3).unwrap();
                assert_eq!(top[0].0, 17);
                assert!((top[0].1 - 1.0).abs() < 1e-5, "{top:?}");
            }
        }
        let once = nearest_tokens(&rows, c, &thoughts[..c], 3).unwrap();
        assert_eq!(once, r.nearest(&thoughts[..c], 3).unwrap());
    }

    #[test]
    fn ties_and_bad_input() {
        // Rows 1 and 3 are the same direction: the tie goes to the lower id.
        let rows = vec![0.0, 1.0, 1.0, 0.0, -1.0, 0.0, 2.0, 0.0];
        let r = ThoughtRounder::new(rows, 2).unwrap();
        let top = r.nearest(&[1.0, 0.0], 3).unwrap();
        assert_eq!(top.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3, 0]);
        assert_eq!(top[0].1, top[1].1);
        assert_eq!(r.nearest(&[1.0, 0.0], 10).unwrap().len(), 4);
        assert!(r.nearest(&[0.0, 0.0], 3).is_err());
        assert!(r.nearest(&[1.0], 3).is_err());
        assert!(ThoughtRounder::new(vec![1.0; 5], 2).is_err());
    }
}
