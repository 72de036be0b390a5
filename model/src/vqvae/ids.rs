//! Image codes ↔ ids of the unified vocabulary: code `c` is id `image_range().start + c`
//! ([`VocabLayout::image_code_id`]); nothing else may be read back as an image code.
//!
//! Must match `crate::vocab` (the only place that knows where the image range starts).

use super::config::VqVaeConfig;
use crate::error::{Error, Result};
use crate::vocab::{TokenKind, VocabLayout};

/// Checks that every codebook entry has an id: `num_embeddings` ≤ the layout's image codes.
pub fn check_codebook_fits(layout: &VocabLayout, cfg: &VqVaeConfig) -> Result<()> {
    let room = layout.image_range().len();
    if cfg.num_embeddings > room {
        return Err(Error::Invalid(format!(
            "VQ-VAE codebook has {} entries but the vocabulary layout has only {room} image ids",
            cfg.num_embeddings
        )));
    }
    Ok(())
}

/// Image codes → vocabulary ids (an error names the first code without an id).
pub fn codes_to_ids(layout: &VocabLayout, codes: &[i64]) -> Result<Vec<u32>> {
    codes
        .iter()
        .map(|&c| {
            let index = u32::try_from(c)
                .map_err(|_| Error::Invalid(format!("image code {c} is not a codebook index")))?;
            layout
                .image_code_id(index)
                .map_err(|e| Error::Invalid(e.to_string()))
        })
        .collect()
}

/// Vocabulary ids → image codes; an id that is not an image code is an error naming it.
pub fn ids_to_codes(layout: &VocabLayout, ids: &[u32]) -> Result<Vec<i64>> {
    ids.iter()
        .map(|&id| match layout.kind(id) {
            Some(TokenKind::ImageCode(c)) => Ok(c as i64),
            Some(other) => Err(Error::Invalid(format!(
                "token id {id} is not an image code (it is {other:?})"
            ))),
            None => Err(Error::TokenOutOfRange {
                id,
                vocab: layout.total() as usize,
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_other_ids_are_refused() {
        let layout = VocabLayout::new(100, 64, 5).unwrap();
        let codes: Vec<i64> = (0..64).rev().collect();
        let ids = codes_to_ids(&layout, &codes).unwrap();
        // Independent statement: the image range starts after 100 text ids and the specials.
        let start = 100 + crate::vocab::Special::ALL.len() as u32;
        assert_eq!(ids[0], start + 63);
        assert!(ids.iter().all(|i| layout.image_range().contains(i)));
        assert_eq!(ids_to_codes(&layout, &ids).unwrap(), codes);

        assert!(codes_to_ids(&layout, &[64]).is_err());
        assert!(codes_to_ids(&layout, &[-1]).is_err());
        let err = ids_to_codes(&layout, &[start + 1, 5])
            .unwrap_err()
            .to_string();
        assert!(err.contains("token id 5 is not an image code"), "{err}");
        let audio = layout.audio_range().start;
        assert!(ids_to_codes(&layout, &[audio]).is_err());
        assert!(ids_to_codes(&layout, &[layout.total()]).is_err());
    }

    #[test]
    fn a_codebook_larger_than_the_image_range_is_an_error() {
        let cfg = VqVaeConfig {
            num_embeddings: 65,
            ..VqVaeConfig::default()
        };
        let layout = VocabLayout::new(100, 64, 0).unwrap();
        let err = check_codebook_fits(&layout, &cfg).unwrap_err().to_string();
        assert!(
            err.contains("65 entries") && err.contains("64 image ids"),
            "{err}"
        );
        let fits = VqVaeConfig {
            num_embeddings: 64,
            ..cfg
        };
        assert!(check_codebook_fits(&layout, &fits).is_ok());
    }
}
