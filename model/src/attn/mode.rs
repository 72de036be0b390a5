//! Attention modes of the model config (Tritter roadmap §2.2) and their composition into a
//! [`Mask`]: `causal` (decoder LM), `bidirectional` (encoder), `prefix_lm` (the prompt attends
//! bidirectionally, generated tokens causally) and `embedding` (bidirectional, mean-pooled output),
//! optionally restricted to a sliding window, with StreamingLLM sinks and document boundaries.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::mask::Mask;
use super::{check_len, config_err, Result};

/// How positions attend to each other; serde names match `config.json`'s `attention_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMode {
    /// Each position sees itself and earlier positions.
    #[default]
    Causal,
    /// Every position sees every position.
    Bidirectional,
    /// The first `prefix_len` positions see each other; later ones are causal.
    PrefixLm,
    /// Bidirectional, and the model returns one pooled vector (see [`mean_pool`]).
    Embedding,
}

impl AttentionMode {
    /// Every mode, in the order the config documentation lists them.
    pub const ALL: [AttentionMode; 4] = [
        AttentionMode::Causal,
        AttentionMode::Bidirectional,
        AttentionMode::PrefixLm,
        AttentionMode::Embedding,
    ];

    /// The `config.json` name (`causal`, `bidirectional`, `prefix_lm`, `embedding`).
    pub fn name(self) -> &'static str {
        match self {
            AttentionMode::Causal => "causal",
            AttentionMode::Bidirectional => "bidirectional",
            AttentionMode::PrefixLm => "prefix_lm",
            AttentionMode::Embedding => "embedding",
        }
    }

    /// The mode named `s` (a [`AttentionMode::name`]), if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Whether generation with a KV cache makes sense (the mode is causal past the prefix).
    pub fn is_generative(self) -> bool {
        matches!(self, AttentionMode::Causal | AttentionMode::PrefixLm)
    }

    /// Whether the model output is pooled to one vector.
    pub fn pools_output(self) -> bool {
        self == AttentionMode::Embedding
    }
}

/// Everything that decides the mask of one forward pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaskSpec {
    /// Attention mode.
    pub mode: AttentionMode,
    /// Sliding window in tokens (sinks included when `sinks > 0`); 0 disables it.
    pub window: usize,
    /// Sink tokens visible to every query (with a window only; StreamingLLM uses 4).
    pub sinks: usize,
    /// Bidirectional prompt length for [`AttentionMode::PrefixLm`].
    pub prefix_len: usize,
    /// Document id per absolute position for packed sequences; attention never crosses documents.
    pub doc_ids: Option<Arc<[u32]>>,
}

impl MaskSpec {
    /// The composed mask. With a window `w` and `s` sinks the band is `w - s` keys wide plus the
    /// sinks, so a query sees at most `w` keys, as many as the rolling cache holds:
    /// - causal: `Causal`; window: `Causal ∧ SlidingWindow(w)`; sinks too: `Streaming(s, w)`;
    /// - bidirectional / embedding: `All`; window: `SlidingWindow(w)` (a symmetric band); sinks
    ///   too: `SlidingWindow(w - s) ∨ Sinks(s)` (global tokens);
    /// - prefix_lm: `PrefixLm(n)`, with a window `∧ SlidingWindow(w)`, with sinks
    ///   `∧ (SlidingWindow(w - s) ∨ Sinks(s))`;
    /// - then `∧ Document(ids)` when document ids are given.
    pub fn mask(&self) -> Result<Mask> {
        let (w, s) = (self.window, self.sinks);
        if w > 0 && s >= w {
            return Err(config_err(
                "attention sinks",
                format!("{s} sinks need a sliding window above that, got {w}"),
            ));
        }
        let band = match (w, s) {
            (0, _) => None,
            (w, 0) => Some(Mask::sliding_window(w)),
            (w, s) => Some(Mask::sliding_window(w - s).or(Mask::sinks(s))),
        };
        let base = match (self.mode, band) {
            (AttentionMode::Causal, None) => Mask::causal(),
            (AttentionMode::Causal, Some(_)) if s > 0 => Mask::streaming(s, w)?,
            (AttentionMode::Causal, Some(b)) => Mask::causal().and(b),
            (AttentionMode::Bidirectional | AttentionMode::Embedding, None) => Mask::All,
            (AttentionMode::Bidirectional | AttentionMode::Embedding, Some(b)) => b,
            (AttentionMode::PrefixLm, None) => Mask::prefix_lm(self.prefix_len),
            (AttentionMode::PrefixLm, Some(b)) => Mask::prefix_lm(self.prefix_len).and(b),
        };
        Ok(match &self.doc_ids {
            Some(ids) => base.and(Mask::Document(Arc::clone(ids))),
            None => base,
        })
    }
}

/// Mean of the rows of `x` `[t, hidden]` whose `keep` flag is set (all rows when `keep` is None):
/// the pooled output of [`AttentionMode::Embedding`].
pub fn mean_pool(x: &[f32], t: usize, hidden: usize, keep: Option<&[bool]>) -> Result<Vec<f32>> {
    check_len("mean_pool input", t * hidden, x.len())?;
    if let Some(k) = keep {
        check_len("mean_pool keep flags", t, k.len())?;
    }
    let mut out = vec![0f32; hidden];
    let mut n = 0usize;
    for (i, row) in x.chunks_exact(hidden).enumerate() {
        if keep.is_none_or(|k| k[i]) {
            out.iter_mut().zip(row).for_each(|(o, r)| *o += r);
            n += 1;
        }
    }
    if n == 0 {
        return Err(config_err("mean_pool", "no row selected"));
    }
    out.iter_mut().for_each(|o| *o /= n as f32);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: AttentionMode, window: usize, sinks: usize, prefix_len: usize) -> MaskSpec {
        MaskSpec {
            mode,
            window,
            sinks,
            prefix_len,
            doc_ids: None,
        }
    }

    fn check(s: &MaskSpec, f: impl Fn(usize, usize) -> bool) {
        let m = s.mask().unwrap();
        for q in 0..40 {
            for k in 0..40 {
                assert_eq!(m.allowed(q, k), f(q, k), "{s:?} q{q} k{k}");
            }
        }
    }

    #[test]
    fn modes_compose_the_documented_masks() {
        use AttentionMode::*;
        check(&spec(Causal, 0, 4, 0), |q, k| k <= q);
        check(&spec(Causal, 8, 0, 0), |q, k| k <= q && q - k < 8);
        check(&spec(Causal, 8, 2, 0), |q, k| {
            k <= q && (k < 2 || q - k < 6)
        });
        check(&spec(Bidirectional, 0, 0, 0), |_, _| true);
        check(&spec(Embedding, 5, 0, 0), |q, k| q.abs_diff(k) < 5);
        check(&spec(PrefixLm, 0, 0, 10), |q, k| k < 10 || k <= q);
        check(&spec(PrefixLm, 12, 0, 10), |q, k| {
            (k < 10 || k <= q) && q.abs_diff(k) < 12
        });
        check(&spec(PrefixLm, 12, 2, 10), |q, k| {
            (k < 10 || k <= q) && (q.abs_diff(k) < 10 || k < 2)
        });
        check(&spec(Bidirectional, 9, 3, 0), |q, k| {
            q.abs_diff(k) < 6 || k < 3
        });
        let ids: Vec<u32> = (0..40).map(|p| u32::from(p >= 15)).collect();
        let mut s = spec(Causal, 0, 0, 0);
        s.doc_ids = Some(ids.clone().into());
        check(&s, |q, k| k <= q && ids[q] == ids[k]);
        assert!(spec(Causal, 4, 4, 0).mask().is_err());
    }

    #[test]
    fn serde_names_match_config() {
        for (m, name) in [
            (AttentionMode::Causal, "\"causal\""),
            (AttentionMode::Bidirectional, "\"bidirectional\""),
            (AttentionMode::PrefixLm, "\"prefix_lm\""),
            (AttentionMode::Embedding, "\"embedding\""),
        ] {
            assert_eq!(serde_json::to_string(&m).unwrap(), name);
            assert_eq!(serde_json::from_str::<AttentionMode>(name).unwrap(), m);
            assert_eq!(format!("\"{}\"", m.name()), name);
            assert_eq!(AttentionMode::parse(m.name()), Some(m));
        }
        assert_eq!(AttentionMode::parse("sideways"), None);
        assert!(serde_json::from_str::<AttentionMode>("\"sideways\"").is_err());
    }

    #[test]
    fn mean_pool_averages_selected_rows() {
        let x = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        assert_eq!(
            mean_pool(&x, 3, 2, None).unwrap(),
            vec![104.0 / 3.0, 106.0 / 3.0]
        );
        let keep = [true, true, false];
        assert_eq!(mean_pool(&x, 3, 2, Some(&keep)).unwrap(), vec![2.0, 3.0]);
        assert!(mean_pool(&x, 3, 2, Some(&[false; 3])).is_err());
    }
}
