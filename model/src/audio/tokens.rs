//! Audio codec codes ↔ ids of the unified vocabulary (issue #15), and how many codebooks the
//! language model sees.
//!
//! A codec encodes a clip into `n_q` residual codebooks × `T` frames (`[n_q, T]`; for Mimi,
//! codebook 0 is the semantic one and the rest are acoustic). The language model sees the first
//! `codebooks` of them (`audio/tokens.json`): `1` is semantic only, more adds the first
//! acoustic levels. Each codebook has its own block of ids in the audio range, so the same code
//! in two codebooks is two different tokens: code `c` of codebook `k` is audio code
//! `k · codebook_size + c` ([`crate::vocab::VocabLayout::audio_code_id`]).
//!
//! Order in the stream: frame-major, codebooks in order within a frame —
//! `f0:cb0, f0:cb1, …, f0:cb(K−1), f1:cb0, …` — so a clip of `T` frames is `T · K` tokens between
//! `<audio>` and `</audio>`. Must match `crate::vocab` (the only place that knows where the audio
//! range starts); nothing else may be read back as an audio code.

use crate::error::{Error, Result};
use crate::vocab::{TokenKind, VocabLayout};
use serde::{Deserialize, Serialize};

/// `audio/tokens.json`: how a checkpoint's language model reads its codec's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioTokens {
    /// Codebooks per frame the language model sees (the first ones; ≥ 1).
    pub codebooks: usize,
    /// Entries per codebook (the codec's `codebook_size`).
    pub codebook_size: usize,
}

impl AudioTokens {
    /// Audio ids this mapping needs: `codebooks · codebook_size`.
    pub fn ids_needed(&self) -> u64 {
        self.codebooks as u64 * self.codebook_size as u64
    }

    /// Checks the mapping against a codec with `codec_codebooks` codebooks and a vocabulary
    /// layout: at least one codebook, no more than the codec has, and an id for every code.
    pub fn check(&self, codec_codebooks: usize, layout: &VocabLayout) -> Result<()> {
        if self.codebooks == 0 || self.codebooks > codec_codebooks {
            return Err(Error::config(
                "codebooks",
                format!(
                    "{} codebooks asked, the codec has {codec_codebooks} (1 = semantic only)",
                    self.codebooks
                ),
            ));
        }
        if self.codebook_size == 0 {
            return Err(Error::config("codebook_size", "must be at least 1"));
        }
        let room = layout.audio_range().len() as u64;
        if self.ids_needed() > room {
            return Err(Error::Invalid(format!(
                "{} codebooks × {} codes need {} audio ids but the vocabulary layout has {room}",
                self.codebooks,
                self.codebook_size,
                self.ids_needed()
            )));
        }
        Ok(())
    }

    /// Codes `[n_q][T]` (codebook-major, as a codec returns them; `n_q ≥ codebooks`) → the
    /// vocabulary ids of the first `codebooks`, frame-major.
    pub fn codes_to_ids(&self, layout: &VocabLayout, codes: &[Vec<i64>]) -> Result<Vec<u32>> {
        if codes.len() < self.codebooks {
            return Err(Error::Invalid(format!(
                "{} codebooks of codes given, {} needed",
                codes.len(),
                self.codebooks
            )));
        }
        let frames = codes.first().map_or(0, Vec::len);
        if codes[..self.codebooks].iter().any(|c| c.len() != frames) {
            return Err(Error::Invalid(
                "codebooks of one clip have different lengths".into(),
            ));
        }
        let mut ids = Vec::with_capacity(frames * self.codebooks);
        for t in 0..frames {
            for (k, book) in codes[..self.codebooks].iter().enumerate() {
                let c = book[t];
                if c < 0 || c as u64 >= self.codebook_size as u64 {
                    return Err(Error::Invalid(format!(
                        "audio code {c} of codebook {k} is outside 0..{}",
                        self.codebook_size
                    )));
                }
                let index = (k * self.codebook_size) as u64 + c as u64;
                let index = u32::try_from(index)
                    .map_err(|_| Error::Invalid(format!("audio code index {index}")))?;
                ids.push(
                    layout
                        .audio_code_id(index)
                        .map_err(|e| Error::Invalid(e.to_string()))?,
                );
            }
        }
        Ok(ids)
    }

    /// Vocabulary ids (frame-major, whole frames) → codes `[codebooks][T]`. An id that is not
    /// an audio code, or one in the wrong codebook's block for its place, is an error naming it.
    pub fn ids_to_codes(&self, layout: &VocabLayout, ids: &[u32]) -> Result<Vec<Vec<i64>>> {
        if ids.len().checked_rem(self.codebooks) != Some(0) {
            return Err(Error::Invalid(format!(
                "{} audio ids are not whole frames of {} codebooks",
                ids.len(),
                self.codebooks
            )));
        }
        let mut codes = vec![Vec::with_capacity(ids.len() / self.codebooks); self.codebooks];
        for (i, &id) in ids.iter().enumerate() {
            let k = i % self.codebooks;
            let index = match layout.kind(id) {
                Some(TokenKind::AudioCode(c)) => c as usize,
                Some(other) => {
                    return Err(Error::Invalid(format!(
                        "token id {id} is not an audio code (it is {other:?})"
                    )))
                }
                None => {
                    return Err(Error::TokenOutOfRange {
                        id,
                        vocab: layout.total() as usize,
                    })
                }
            };
            if index / self.codebook_size != k {
                return Err(Error::Invalid(format!(
                    "token id {id} belongs to codebook {}, but position {i} holds codebook {k}",
                    index / self.codebook_size
                )));
            }
            codes[k].push((index % self.codebook_size) as i64);
        }
        Ok(codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> VocabLayout {
        VocabLayout::new(100, 16, 3 * 8).unwrap()
    }

    #[test]
    fn frames_interleave_codebooks_and_round_trip() {
        let l = layout();
        let t = AudioTokens {
            codebooks: 2,
            codebook_size: 8,
        };
        // 3 codebooks from the codec, 2 seen; 3 frames.
        let codes = vec![vec![0, 7, 3], vec![1, 2, 5], vec![6, 6, 6]];
        let ids = t.codes_to_ids(&l, &codes).unwrap();
        let a = l.audio_range().start;
        // Scalar statement of the order: frame t, codebook k → a + k·8 + code.
        assert_eq!(ids, vec![a, a + 8 + 1, a + 7, a + 8 + 2, a + 3, a + 8 + 5]);
        assert_eq!(t.ids_to_codes(&l, &ids).unwrap(), codes[..2].to_vec());
    }

    #[test]
    fn bad_codes_and_ids_are_named() {
        let l = layout();
        let t = AudioTokens {
            codebooks: 2,
            codebook_size: 8,
        };
        let e = t.codes_to_ids(&l, &[vec![8], vec![0]]).unwrap_err();
        assert!(e.to_string().contains("audio code 8 of codebook 0"), "{e}");
        assert!(t.codes_to_ids(&l, &[vec![1]]).is_err());
        let a = l.audio_range().start;
        // A codebook-1 id in a codebook-0 place.
        let e = t.ids_to_codes(&l, &[a + 9, a + 9]).unwrap_err();
        assert!(e.to_string().contains("belongs to codebook 1"), "{e}");
        // A text id.
        let e = t.ids_to_codes(&l, &[5, a]).unwrap_err();
        assert!(e.to_string().contains("not an audio code"), "{e}");
        // Not whole frames.
        assert!(t.ids_to_codes(&l, &[a]).is_err());
    }

    #[test]
    fn the_layout_must_hold_every_seen_codebook() {
        let l = layout();
        let ok = AudioTokens {
            codebooks: 3,
            codebook_size: 8,
        };
        ok.check(4, &l).unwrap();
        let too_many = AudioTokens {
            codebooks: 4,
            codebook_size: 8,
        };
        assert!(too_many.check(4, &l).is_err());
        assert!(ok.check(2, &l).is_err());
        let zero = AudioTokens {
            codebooks: 0,
            codebook_size: 8,
        };
        assert!(zero.check(4, &l).is_err());
    }
}
