//! The prompt of a request with its attachments in place: the chat format writes one
//! `<img></img>` per image and one `<audio></audio>` per clip (see `engine::media`); each clip's
//! codec codes (vocabulary ids of the audio range, frame-major) go between its audio pair, and
//! each image's rows (SigLIP tower) or VQ code ids between its image pair. The front of a
//! prompt too long for the context is cut; the pairs that remain are matched to the last
//! attachments of their kind.

use super::ModelEngine;
use crate::engine::media;
use crate::engine::{GenRequest, MediaData};
use anyhow::{anyhow, Context, Result};
use std::sync::Arc;
use tritter_model::Segment;

impl ModelEngine {
    /// Positions one image takes in the prompt.
    fn image_len(&self) -> Result<usize> {
        if let Some(v) = &self.vision {
            return Ok(v.tokens_per_image()?);
        }
        match &self.vq {
            Some(q) => {
                let r = q.vq.config().resolution;
                let (h, w) = q.vq.grid(r, r)?;
                Ok(h * w)
            }
            None => Ok(0),
        }
    }

    fn marker(&self, t: &str, what: &str) -> Result<u32> {
        self.tokenizer
            .token_to_id(t)
            .ok_or_else(|| anyhow!("the tokenizer has no {t} token; {what} cannot be placed"))
    }

    /// The vocabulary ids of each clip (resampled to the codec's rate), or nothing when the
    /// model has no codec.
    fn clip_ids(&self, clips: &[Arc<MediaData>]) -> Result<Vec<Vec<u32>>> {
        let Some(audio) = &self.audio else {
            return Ok(vec![]);
        };
        clips
            .iter()
            .map(|c| {
                let MediaData::Mono {
                    sample_rate,
                    samples,
                } = &**c
                else {
                    return Err(anyhow!("an audio attachment holds no samples"));
                };
                let x = crate::audio_in::resample(samples, *sample_rate, audio.codec.sample_rate())
                    .context("resampling the clip to the codec's rate")?;
                audio.clip_ids(&x).context("encoding the clip")
            })
            .collect()
    }

    /// The prompt for a request: token ids, each clip's codes between its `<audio>` and
    /// `</audio>`, each image's rows or codes between its `<img>` and `</img>` (the tail, if it
    /// does not fit).
    pub(super) fn prompt_segments(&self, req: &GenRequest) -> Result<Vec<Segment>> {
        // A raw completion is the last message's text as it stands, with the tokenizer's own
        // special tokens (a BOS where it adds one), as `tokenizer(text)` in transformers.
        let (text, special) = match req.messages.last() {
            Some(m) if req.raw => (m.content.clone(), true),
            _ => (self.format.render(&req.messages)?, false),
        };
        let enc = self
            .tokenizer
            .encode(text, special)
            .map_err(|e| anyhow!("tokenizer: {e}"))?;
        let mut ids = enc.get_ids().to_vec();
        // A raw completion has no media markers: its attachments are not sent.
        let media_of = if req.raw { &[][..] } else { &req.messages[..] };
        let images = media::images_in(media_of);
        let per_image = if images.is_empty() {
            0
        } else {
            self.image_len()?
        };
        let clips = self.clip_ids(&media::clips_in(media_of))?;
        let media_len = images.len() * per_image + clips.iter().map(Vec::len).sum::<usize>();
        let limit = self.info.context_limit;
        if media_len + req.max_new_tokens.min(limit / 2) >= limit {
            anyhow::bail!(
                "the attachments take {media_len} positions, more than the model's context of {limit} leaves for them; attach a shorter clip or fewer files"
            );
        }
        let room = self
            .info
            .context_limit
            .saturating_sub(req.max_new_tokens.min(self.info.context_limit / 2))
            .saturating_sub(media_len)
            .max(1);
        if ids.len() > room {
            ids.drain(..ids.len() - room);
        }
        if !clips.is_empty() {
            let pairs = media::marker_pairs(
                &ids,
                self.marker("<audio>", "clips")?,
                self.marker("</audio>", "clips")?,
            );
            let kept = clips[clips.len() - pairs.len().min(clips.len())..].to_vec();
            let pairs = &pairs[pairs.len() - kept.len()..];
            ids = media::splice_tokens(&ids, pairs, kept);
        }
        if (self.vision.is_none() && self.vq.is_none()) || images.is_empty() {
            return Ok(vec![Segment::Tokens(ids)]);
        }
        self.splice_images(ids, &images)
    }

    /// Puts each image's rows (tower) or code ids (VQ) between the `<img>` pairs of `ids`.
    fn splice_images(&self, ids: Vec<u32>, images: &[Arc<MediaData>]) -> Result<Vec<Segment>> {
        let pairs = media::marker_pairs(
            &ids,
            self.marker("<img>", "images")?,
            self.marker("</img>", "images")?,
        );
        let kept = &images[images.len() - pairs.len().min(images.len())..];
        let pairs = &pairs[pairs.len() - kept.len()..];
        let mut imgs = Vec::with_capacity(kept.len());
        for data in kept {
            imgs.push(
                media::to_image(data).ok_or_else(|| {
                    anyhow!("an attached image has fewer pixels than its size says")
                })?,
            );
        }
        if let Some(vision) = &self.vision {
            let rows = imgs
                .iter()
                .map(|img| vision.embed_image(img).context("encoding the image"))
                .collect::<Result<Vec<_>>>()?;
            return Ok(media::splice(&ids, pairs, rows));
        }
        let Some(vq) = &self.vq else {
            return Ok(vec![Segment::Tokens(ids)]);
        };
        let codes = imgs
            .iter()
            .map(|img| vq.image_ids(img).context("VQ-encoding the image"))
            .collect::<Result<Vec<_>>>()?;
        Ok(vec![Segment::Tokens(media::splice_tokens(
            &ids, pairs, codes,
        ))])
    }
}
