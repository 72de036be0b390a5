//! The text tokenizer: a byte-level BPE trained with the `tokenizers` crate on the filtered
//! corpus (or loaded from a `tokenizer.json`), with the unified vocabulary's special tokens added
//! after the BPE ids.
//!
//! Must match [`crate::vocab::VocabLayout`]: BPE ids `0..text`, then [`Special::ALL`] in order
//! as added special tokens. A loaded tokenizer whose added tokens would sit elsewhere is an error.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    Tokenizer, TokenizerImpl,
};

use super::config::TokenizerConfig;
use super::DataError;
use crate::vocab::{Special, VocabLayout};

fn tok_err(e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer {
        message: e.to_string(),
    }
}

/// Train a byte-level BPE of `cfg.vocab_size` text tokens on `docs`. No special tokens are
/// added here (see [`attach_layout`]).
pub fn train_bpe<I>(docs: I, cfg: &TokenizerConfig) -> Result<Tokenizer, DataError>
where
    I: Iterator<Item = String> + Send,
{
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(cfg.vocab_size)
        .min_frequency(cfg.min_frequency)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build();
    let mut tok: TokenizerImpl<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    > = TokenizerImpl::new(BPE::default());
    // Code keeps its leading spaces: no prefix space is invented.
    let byte_level = ByteLevel::new(false, true, true);
    tok.with_pre_tokenizer(Some(byte_level))
        .with_decoder(Some(byte_level))
        .with_post_processor(Some(byte_level));
    tok.train(&mut trainer, docs).map_err(tok_err)?;
    Ok(Tokenizer::from(tok))
}

/// Load a `tokenizer.json`. The tokenizers crate panics on some malformed files (found by
/// fuzzing): that is an error too.
pub fn load(path: &Path) -> Result<Tokenizer, DataError> {
    let loaded = std::panic::catch_unwind(|| Tokenizer::from_file(path)).map_err(|_| {
        DataError::Tokenizer {
            message: format!(
                "loading {}: malformed (the tokenizer library failed on it)",
                path.display()
            ),
        }
    })?;
    loaded.map_err(|e| DataError::Tokenizer {
        message: format!("loading {}: {e}", path.display()),
    })
}

/// Add the unified vocabulary's special tokens after the BPE ids (where they are missing) and
/// return the layout; fails if the tokenizer places any of them, or another added token, where
/// the layout does not.
pub fn attach_layout(
    tokenizer: &mut Tokenizer,
    image_codes: u32,
    audio_codes: u32,
) -> Result<VocabLayout, DataError> {
    let text = tokenizer.get_vocab_size(false) as u32;
    let layout = VocabLayout::new(text, image_codes, audio_codes)?;
    for (id, tok) in tokenizer.get_added_tokens_decoder() {
        if id >= text && Special::from_token(&tok.content).is_none() {
            return Err(tok_err(format!(
                "added token {:?} has id {id}, inside the special-token range starting at {text}",
                tok.content
            )));
        }
    }
    for s in Special::ALL {
        match tokenizer.token_to_id(s.token()) {
            Some(_) => {}
            None => {
                tokenizer
                    .add_special_tokens([AddedToken::from(s.token(), true)])
                    .map_err(tok_err)?;
            }
        }
        let got = tokenizer.token_to_id(s.token());
        if got != Some(layout.special_id(s)) {
            return Err(tok_err(format!(
                "{} has id {:?}, the vocabulary layout expects {}",
                s.token(),
                got,
                layout.special_id(s)
            )));
        }
    }
    Ok(layout)
}

/// A copy of `tokenizer` for encoding training text: special-token strings that occur in the
/// data are encoded as ordinary text, never as control tokens.
pub fn data_encoder(tokenizer: &Tokenizer) -> Tokenizer {
    let mut enc = tokenizer.clone();
    enc.set_encode_special_tokens(true);
    enc
}

/// Token ids of `text` (no special tokens added).
pub fn encode(encoder: &Tokenizer, text: &str) -> Result<Vec<u32>, DataError> {
    encoder
        .encode_fast(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(tok_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        (0..50)
            .map(|i| format!("def function_{i}(value):\n    return value * {i} + offset\n"))
            .collect()
    }

    #[test]
    fn trained_bpe_round_trips_and_specials_follow_text_ids() {
        let cfg = TokenizerConfig {
            vocab_size: 300,
            ..TokenizerConfig::default()
        };
        let mut tok = train_bpe(corpus().into_iter(), &cfg).unwrap();
        let layout = attach_layout(&mut tok, 16, 8).unwrap();
        assert!(layout.text_len() <= 300 && layout.text_len() > 256);
        for s in Special::ALL {
            assert_eq!(tok.token_to_id(s.token()), Some(layout.special_id(s)));
        }
        let enc = data_encoder(&tok);
        let text = "def f(x):\n    return x * 3 <|eos|> é\n";
        let ids = encode(&enc, text).unwrap();
        assert!(ids.iter().all(|&id| id < layout.text_len()), "{ids:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        // Attaching again (as for a loaded tokenizer) is a no-op.
        assert_eq!(attach_layout(&mut tok, 16, 8).unwrap(), layout);
    }

    #[test]
    fn misplaced_special_token_is_rejected() {
        let cfg = TokenizerConfig {
            vocab_size: 280,
            ..TokenizerConfig::default()
        };
        let mut tok = train_bpe(corpus().into_iter(), &cfg).unwrap();
        tok.add_special_tokens([AddedToken::from("<|eos|>", true)])
            .unwrap();
        let err = attach_layout(&mut tok, 0, 0).unwrap_err().to_string();
        // <|eos|> took the first special id, so <|bos|> cannot sit where the layout puts it.
        assert!(
            err.contains("<|bos|> has id Some(281)") && err.contains("expects 280"),
            "{err}"
        );
    }
}
