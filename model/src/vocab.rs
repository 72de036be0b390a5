//! Layout of the unified vocabulary: text BPE ids first, then the special tokens, then the image
//! VQ codes, then the audio codec codes — one table, and this module is the only place that
//! knows where each part starts.
//!
//! Must match DESIGN.md ("Unified vocabulary"): the special tokens in [`Special::ALL`] order are
//! bos, eos, pad, `<img>`, `</img>`, `<audio>`, `</audio>`, latent `<bot>`/`<eot>`/`<latent>`,
//! and the chat roles. A tokenizer's added-token ids must equal [`VocabLayout::special_id`].

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Errors of the vocabulary layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VocabError {
    /// The parts do not fit in a `u32` id space.
    #[error("vocabulary too large: {text} text + {specials} special + {image} image + {audio} audio ids overflow u32")]
    TooLarge {
        /// Text ids.
        text: u32,
        /// Special tokens.
        specials: u32,
        /// Image codes.
        image: u32,
        /// Audio codes.
        audio: u32,
    },
    /// A code index beyond its range.
    #[error("{what} code {index} out of range (the layout has {len})")]
    CodeOutOfRange {
        /// "image" or "audio".
        what: &'static str,
        /// The index asked for.
        index: u32,
        /// Codes in that range.
        len: u32,
    },
    /// A text id beyond the text part.
    #[error("text id {id} out of range (the layout has {len} text ids)")]
    TextOutOfRange {
        /// The id asked for.
        id: u32,
        /// Text ids.
        len: u32,
    },
}

/// The special tokens, in layout order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Special {
    /// Beginning of sequence.
    Bos,
    /// End of sequence / document.
    Eos,
    /// Padding.
    Pad,
    /// Start of an image's codes.
    ImageStart,
    /// End of an image's codes.
    ImageEnd,
    /// Start of an audio clip's codes.
    AudioStart,
    /// End of an audio clip's codes.
    AudioEnd,
    /// Begin latent (Coconut) thought.
    BeginThought,
    /// End latent thought.
    EndThought,
    /// Latent placeholder position.
    Latent,
    /// Chat role: system.
    System,
    /// Chat role: user.
    User,
    /// Chat role: assistant.
    Assistant,
    /// End of a chat turn.
    End,
}

impl Special {
    /// Every special token, in id order.
    pub const ALL: [Special; 14] = [
        Special::Bos,
        Special::Eos,
        Special::Pad,
        Special::ImageStart,
        Special::ImageEnd,
        Special::AudioStart,
        Special::AudioEnd,
        Special::BeginThought,
        Special::EndThought,
        Special::Latent,
        Special::System,
        Special::User,
        Special::Assistant,
        Special::End,
    ];

    /// The token's text in `tokenizer.json`.
    pub fn token(self) -> &'static str {
        match self {
            Special::Bos => "<|bos|>",
            Special::Eos => "<|eos|>",
            Special::Pad => "<|pad|>",
            Special::ImageStart => "<img>",
            Special::ImageEnd => "</img>",
            Special::AudioStart => "<audio>",
            Special::AudioEnd => "</audio>",
            Special::BeginThought => "<bot>",
            Special::EndThought => "<eot>",
            Special::Latent => "<latent>",
            Special::System => "<|system|>",
            Special::User => "<|user|>",
            Special::Assistant => "<|assistant|>",
            Special::End => "<|end|>",
        }
    }

    /// The special token whose text is `token`.
    pub fn from_token(token: &str) -> Option<Special> {
        Special::ALL.into_iter().find(|s| s.token() == token)
    }

    fn index(self) -> u32 {
        // ALL is in declaration order, so the discriminant is the position.
        self as u32
    }
}

/// What an id in the unified vocabulary stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A BPE text token (the id itself).
    Text(u32),
    /// A special token.
    Special(Special),
    /// Image VQ code `n` (0-based within the image range).
    ImageCode(u32),
    /// Audio codec code `n` (0-based within the audio range).
    AudioCode(u32),
}

/// Sizes of the parts of the vocabulary; ids follow from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VocabLayout {
    text: u32,
    image_codes: u32,
    audio_codes: u32,
}

impl VocabLayout {
    /// A layout with `text` BPE ids, then the specials, then `image_codes`, then `audio_codes`.
    pub fn new(text: u32, image_codes: u32, audio_codes: u32) -> Result<VocabLayout, VocabError> {
        let specials = Special::ALL.len() as u32;
        let total = (text as u64) + specials as u64 + image_codes as u64 + audio_codes as u64;
        if total > u32::MAX as u64 {
            return Err(VocabError::TooLarge {
                text,
                specials,
                image: image_codes,
                audio: audio_codes,
            });
        }
        Ok(VocabLayout {
            text,
            image_codes,
            audio_codes,
        })
    }

    /// Text (BPE) ids: `0..text_len()`.
    pub fn text_len(&self) -> u32 {
        self.text
    }

    /// Ids of the special tokens.
    pub fn special_range(&self) -> Range<u32> {
        self.text..self.text + Special::ALL.len() as u32
    }

    /// Ids of the image codes.
    pub fn image_range(&self) -> Range<u32> {
        let start = self.special_range().end;
        start..start + self.image_codes
    }

    /// Ids of the audio codes.
    pub fn audio_range(&self) -> Range<u32> {
        let start = self.image_range().end;
        start..start + self.audio_codes
    }

    /// Size of the whole table (the model's embedding rows).
    pub fn total(&self) -> u32 {
        self.audio_range().end
    }

    /// Id of a special token.
    pub fn special_id(&self, special: Special) -> u32 {
        self.text + special.index()
    }

    /// Id of image code `index`.
    pub fn image_code_id(&self, index: u32) -> Result<u32, VocabError> {
        if index >= self.image_codes {
            return Err(VocabError::CodeOutOfRange {
                what: "image",
                index,
                len: self.image_codes,
            });
        }
        Ok(self.image_range().start + index)
    }

    /// Id of audio code `index`.
    pub fn audio_code_id(&self, index: u32) -> Result<u32, VocabError> {
        if index >= self.audio_codes {
            return Err(VocabError::CodeOutOfRange {
                what: "audio",
                index,
                len: self.audio_codes,
            });
        }
        Ok(self.audio_range().start + index)
    }

    /// The id of a token kind (inverse of [`VocabLayout::kind`]).
    pub fn id(&self, kind: TokenKind) -> Result<u32, VocabError> {
        match kind {
            TokenKind::Text(id) if id < self.text => Ok(id),
            TokenKind::Text(id) => Err(VocabError::TextOutOfRange { id, len: self.text }),
            TokenKind::Special(s) => Ok(self.special_id(s)),
            TokenKind::ImageCode(i) => self.image_code_id(i),
            TokenKind::AudioCode(i) => self.audio_code_id(i),
        }
    }

    /// What `id` stands for; `None` past the end of the table.
    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        if id < self.text {
            return Some(TokenKind::Text(id));
        }
        let specials = self.special_range();
        if specials.contains(&id) {
            return Some(TokenKind::Special(
                Special::ALL[(id - specials.start) as usize],
            ));
        }
        let image = self.image_range();
        if image.contains(&id) {
            return Some(TokenKind::ImageCode(id - image.start));
        }
        let audio = self.audio_range();
        if audio.contains(&id) {
            return Some(TokenKind::AudioCode(id - audio.start));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_contiguous_and_in_order() {
        let l = VocabLayout::new(1000, 16, 8).unwrap();
        assert_eq!(l.special_range(), 1000..1014);
        assert_eq!(l.image_range(), 1014..1030);
        assert_eq!(l.audio_range(), 1030..1038);
        assert_eq!(l.total(), 1038);
        assert_eq!(l.special_id(Special::Bos), 1000);
        assert_eq!(l.special_id(Special::Eos), 1001);
        assert_eq!(l.special_id(Special::End), 1013);
    }

    #[test]
    fn every_id_round_trips_through_kind() {
        let l = VocabLayout::new(50, 4, 3).unwrap();
        for id in 0..l.total() {
            let kind = l.kind(id).unwrap();
            assert_eq!(l.id(kind).unwrap(), id, "{kind:?}");
        }
        assert_eq!(l.kind(l.total()), None);
        assert_eq!(l.kind(52), Some(TokenKind::Special(Special::Pad)));
        assert_eq!(l.kind(64), Some(TokenKind::ImageCode(0)));
        assert_eq!(l.kind(68), Some(TokenKind::AudioCode(0)));
    }

    #[test]
    fn special_tokens_are_distinct_and_named_as_design() {
        let names: Vec<&str> = Special::ALL.iter().map(|s| s.token()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for s in Special::ALL {
            assert_eq!(Special::from_token(s.token()), Some(s));
        }
        assert_eq!(Special::ALL[s_index(Special::Latent)], Special::Latent);
    }

    fn s_index(s: Special) -> usize {
        Special::ALL.iter().position(|x| *x == s).unwrap()
    }

    #[test]
    fn out_of_range_codes_are_errors() {
        let l = VocabLayout::new(10, 2, 0).unwrap();
        assert!(l.image_code_id(1).is_ok());
        assert_eq!(
            l.image_code_id(2),
            Err(VocabError::CodeOutOfRange {
                what: "image",
                index: 2,
                len: 2
            })
        );
        assert!(l.audio_code_id(0).is_err());
        assert!(l.id(TokenKind::Text(10)).is_err());
        assert!(VocabLayout::new(u32::MAX - 5, 0, 0).is_err());
    }
}
