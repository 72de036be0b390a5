//! Images and audio into a prompt: which attachments a conversation carries, and how their
//! embedding rows or code ids are spliced into the token ids between each `<img>` and `</img>`
//! (or `<audio>` and `</audio>`) pair the chat format wrote (one pair per attachment, in message
//! order). A prompt whose front was cut to fit the context keeps the pairs it still has, matched
//! to the last attachments of their kind.

use std::sync::Arc;

use tritter_model::Segment;

use crate::engine::{ChatMessage, MediaData};

/// The marker the chat format writes for each image of a message (`<img></img>`, before its
/// text); the engine puts the image's rows between the two tokens.
pub const IMAGE_MARKER: &str = "<img></img>\n";

/// The marker the chat format writes for each audio clip of a message (after the images'
/// markers, before its text); the engine puts the clip's code ids between the two tokens.
pub const AUDIO_MARKER: &str = "<audio></audio>\n";

/// The decoded clips of `messages` that carry their samples, in order.
pub fn clips_in(messages: &[ChatMessage]) -> Vec<Arc<MediaData>> {
    messages
        .iter()
        .flat_map(|m| m.attachments.iter())
        .filter_map(|a| a.data.clone())
        .filter(|d| matches!(**d, MediaData::Mono { .. }))
        .collect()
}

/// Whether an attachment's clip will reach the model (it has its samples).
pub fn has_samples(data: Option<&Arc<MediaData>>) -> bool {
    matches!(data.map(|d| &**d), Some(MediaData::Mono { .. }))
}

/// The decoded images of `messages` that carry their pixels, in order.
pub fn images_in(messages: &[ChatMessage]) -> Vec<Arc<MediaData>> {
    messages
        .iter()
        .flat_map(|m| m.attachments.iter())
        .filter_map(|a| a.data.clone())
        .filter(|d| matches!(**d, MediaData::Rgb8 { .. }))
        .collect()
}

/// Whether an attachment's image will reach the model (it has its pixels).
pub fn has_pixels(data: Option<&Arc<MediaData>>) -> bool {
    matches!(data.map(|d| &**d), Some(MediaData::Rgb8 { .. }))
}

/// The `image` crate's view of decoded RGB pixels.
pub fn to_image(data: &MediaData) -> Option<image::DynamicImage> {
    match data {
        MediaData::Rgb8 {
            width,
            height,
            pixels,
        } => image::RgbImage::from_raw(*width, *height, pixels.clone())
            .map(image::DynamicImage::ImageRgb8),
        MediaData::Mono { .. } => None,
    }
}

/// Positions (index of `<img>`) of the adjacent `<img>`,`</img>` pairs in `ids`.
pub fn marker_pairs(ids: &[u32], start: u32, end: u32) -> Vec<usize> {
    ids.windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] == start && w[1] == end)
        .map(|(i, _)| i)
        .collect()
}

/// Splits `ids` at the pairs found by [`marker_pairs`] and puts `rows[k]` between the k-th pair
/// (`rows` holds one entry per pair).
pub fn splice(ids: &[u32], pairs: &[usize], rows: Vec<Vec<f32>>) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut from = 0;
    for (&at, r) in pairs.iter().zip(rows) {
        out.push(Segment::Tokens(ids[from..=at].to_vec()));
        out.push(Segment::Embeds(r));
        from = at + 1;
    }
    out.push(Segment::Tokens(ids[from..].to_vec()));
    out.retain(|s| !matches!(s, Segment::Tokens(t) if t.is_empty()));
    out
}

/// [`splice`] for images given as token ids (VQ codes in the vocabulary's image range): one
/// token sequence with `codes[k]` between the k-th pair.
pub fn splice_tokens(ids: &[u32], pairs: &[usize], codes: Vec<Vec<u32>>) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len() + codes.iter().map(Vec::len).sum::<usize>());
    let mut from = 0;
    for (&at, c) in pairs.iter().zip(codes) {
        out.extend_from_slice(&ids[from..=at]);
        out.extend(c);
        from = at + 1;
    }
    out.extend_from_slice(&ids[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_puts_rows_between_each_pair_and_keeps_every_id() {
        // 7 = <img>, 8 = </img>
        let ids = [1, 7, 8, 2, 3, 7, 8, 4];
        let pairs = marker_pairs(&ids, 7, 8);
        assert_eq!(pairs, vec![1, 5]);
        let segs = splice(&ids, &pairs, vec![vec![0.5; 4], vec![1.5; 2]]);
        assert_eq!(
            segs,
            vec![
                Segment::Tokens(vec![1, 7]),
                Segment::Embeds(vec![0.5; 4]),
                Segment::Tokens(vec![8, 2, 3, 7]),
                Segment::Embeds(vec![1.5; 2]),
                Segment::Tokens(vec![8, 4]),
            ]
        );
        // A lone marker (its partner cut off) is no pair; nothing is spliced.
        assert!(marker_pairs(&[8, 2, 7], 7, 8).is_empty());
        assert_eq!(
            splice(&[8, 2], &[], vec![]),
            vec![Segment::Tokens(vec![8, 2])]
        );
    }

    #[test]
    fn rgb_pixels_become_an_image_of_the_same_size() {
        let d = MediaData::Rgb8 {
            width: 2,
            height: 1,
            pixels: vec![255, 0, 0, 0, 0, 255],
        };
        let img = to_image(&d).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (2, 1));
        assert_eq!(img.get_pixel(1, 0).0, [0, 0, 255]);
        let short = MediaData::Rgb8 {
            width: 2,
            height: 2,
            pixels: vec![0; 3],
        };
        assert!(to_image(&short).is_none());
    }
}
