//! The attention mask of packed training sequences, stated with the inference path's
//! [`MaskSpec`]: within each document of a row, a query sees a key exactly when the mask the
//! inference path builds for that document alone allows it (positions counted from the
//! document's start; `prefix_lm`'s prefix is the document's [`FLAG_PREFIX`] tokens); never across
//! documents. So a packed row trains each example as the inference path runs it — causal or
//! prefix-LM, sliding window and sinks included (tested against `CpuModel`).

use super::mode::{AttentionMode, MaskSpec};
use super::Result;
use crate::data::chat::FLAG_PREFIX;

/// The mode, window and sinks every document of a batch is masked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedSpec {
    pub mode: AttentionMode,
    pub window: usize,
    pub sinks: usize,
}

/// `[T, T]` row-major, 1 where query `q` may not see key `k`, for one packed row of document ids
/// `docs` and flags `flags` (both `T` long; each document a contiguous run).
pub fn blocked_row(docs: &[u32], flags: &[u32], spec: PackedSpec) -> Result<Vec<u8>> {
    let t = docs.len();
    let mut out = vec![1u8; t * t];
    let mut start = 0;
    while start < t {
        let end = start
            + docs[start..]
                .iter()
                .take_while(|&&d| d == docs[start])
                .count();
        let prefix_len = flags
            .get(start..end)
            .map_or(0, |f| f.iter().filter(|&&x| x & FLAG_PREFIX != 0).count());
        let mask = MaskSpec {
            mode: spec.mode,
            window: spec.window,
            sinks: spec.sinks,
            prefix_len,
            doc_ids: None,
        }
        .mask()?;
        // Without a window the mask is causal past the prefix: stated directly (the hot case of
        // long rows), the same as `mask.allowed` (tested below).
        let plain = spec.window == 0
            && matches!(spec.mode, AttentionMode::Causal | AttentionMode::PrefixLm);
        let prefix = if spec.mode == AttentionMode::PrefixLm {
            prefix_len
        } else {
            0
        };
        for q in start..end {
            for k in start..end {
                let (rq, rk) = (q - start, k - start);
                let allowed = if plain {
                    rk <= rq || rk < prefix
                } else {
                    mask.allowed(rq, rk)
                };
                out[q * t + k] = u8::from(!allowed);
            }
        }
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_form_equals_the_mask_spec() {
        let docs: Vec<u32> = (0..30).map(|i| u32::from(i >= 12)).collect();
        let flags: Vec<u32> = (0..30)
            .map(|i| {
                if i < 5 || (12..20).contains(&i) {
                    FLAG_PREFIX
                } else {
                    1
                }
            })
            .collect();
        for mode in [AttentionMode::Causal, AttentionMode::PrefixLm] {
            let spec = PackedSpec {
                mode,
                window: 0,
                sinks: 0,
            };
            let got = blocked_row(&docs, &flags, spec).unwrap();
            for (start, end, prefix) in [(0usize, 12usize, 5usize), (12, 30, 8)] {
                let m = MaskSpec {
                    mode,
                    window: 0,
                    sinks: 0,
                    prefix_len: prefix,
                    doc_ids: None,
                }
                .mask()
                .unwrap();
                for q in start..end {
                    for k in 0..30 {
                        let inside = (start..end).contains(&k) && m.allowed(q - start, k - start);
                        assert_eq!(got[q * 30 + k] == 0, inside, "{mode:?} q{q} k{k}");
                    }
                }
            }
        }
    }

    #[test]
    fn documents_are_masked_alone_and_never_see_each_other() {
        // Two documents: a prefix of 2 in the first, none in the second (causal).
        let docs = [0u32, 0, 0, 0, 7, 7, 7];
        let flags = [FLAG_PREFIX, FLAG_PREFIX, 1, 1, 1, 1, 1];
        let spec = PackedSpec {
            mode: AttentionMode::PrefixLm,
            window: 0,
            sinks: 0,
        };
        let m = blocked_row(&docs, &flags, spec).unwrap();
        let sees = |q: usize, k: usize| m[q * 7 + k] == 0;
        assert!(sees(0, 1) && sees(1, 0) && !sees(1, 2) && sees(3, 2) && !sees(2, 3));
        assert!(!sees(4, 3) && !sees(3, 4) && sees(6, 4) && !sees(4, 5));
        let windowed = blocked_row(
            &docs,
            &flags,
            PackedSpec {
                mode: AttentionMode::Causal,
                window: 2,
                sinks: 0,
            },
        )
        .unwrap();
        let sees = |q: usize, k: usize| windowed[q * 7 + k] == 0;
        assert!(sees(3, 2) && !sees(3, 1) && !sees(0, 1) && sees(6, 5) && !sees(6, 4));
    }
}
