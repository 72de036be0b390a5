//! Image and audio attachments: loading with limits (file size, pixel dimensions and decoder
//! allocation for images, so a decompression bomb is refused before it is decoded; file size and
//! duration for audio, in `audio_in`), decoding to the engine's `MediaData`, chips' labels, and a
//! waveform envelope for the audio sparkline. Formats: PNG/JPEG (`image`), WAV/FLAC/MP3/Ogg Vorbis
//! (`audio_in`).

use std::path::Path;
use std::sync::Arc;

use crate::engine::{Attachment, AttachmentKind, MediaData};
use crate::files::human_bytes;

pub const MAX_IMAGE_BYTES: u64 = 20 * 1024 * 1024;
/// Longest side of an image, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// Most pixels in an image (width × height).
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;

fn check_size(path: &Path, limit: u64) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    if meta.is_dir() {
        anyhow::bail!("{} is a directory, not a file", path.display());
    }
    if meta.len() > limit {
        anyhow::bail!(
            "{} is too large ({} > {} limit)",
            path.display(),
            human_bytes(meta.len()),
            human_bytes(limit)
        );
    }
    Ok(())
}

/// Loads a PNG or JPEG. Returns the attachment and the decoded image (for the preview).
pub fn load_image(path: &Path) -> anyhow::Result<(Attachment, image::DynamicImage)> {
    check_size(path, MAX_IMAGE_BYTES)?;
    let open = || -> anyhow::Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
        let r = image::ImageReader::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?
            .with_guessed_format()
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        match r.format() {
            Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => Ok(r),
            _ => anyhow::bail!("{} is not a PNG or JPEG image", path.display()),
        }
    };
    let (w, h) = open()?
        .into_dimensions()
        .map_err(|e| anyhow::anyhow!("{} is not a readable image: {e}", path.display()))?;
    if w == 0 || h == 0 {
        anyhow::bail!("{} has no pixels ({w}×{h})", path.display());
    }
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        anyhow::bail!(
            "{} is {w}×{h} pixels, over the limit ({MAX_IMAGE_SIDE} px a side, {} Mpx); refused",
            path.display(),
            MAX_IMAGE_PIXELS / 1_000_000
        );
    }
    let mut reader = open()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 4 * 2);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| anyhow::anyhow!("cannot decode {}: {e}", path.display()))?;
    let rgb = img.to_rgb8();
    let data = MediaData::Rgb8 {
        width: w,
        height: h,
        pixels: rgb.into_raw(),
    };
    Ok((
        Attachment {
            path: path.to_path_buf(),
            kind: AttachmentKind::Image {
                width: w,
                height: h,
            },
            data: Some(Arc::new(data)),
        },
        img,
    ))
}

/// Loads WAV, FLAC, MP3 or Ogg Vorbis audio, downmixed to mono (`audio_in::decode_mono`, with
/// its limits).
pub fn load_audio(path: &Path) -> anyhow::Result<Attachment> {
    let (samples, sample_rate) = crate::audio_in::decode_mono(path)?;
    let seconds = samples.len() as f64 / f64::from(sample_rate);
    Ok(Attachment {
        path: path.to_path_buf(),
        kind: AttachmentKind::Audio {
            seconds,
            sample_rate,
        },
        data: Some(Arc::new(MediaData::Mono {
            sample_rate,
            samples,
        })),
    })
}

/// Peak amplitude per bucket, scaled to 0..=100, for a sparkline of `buckets` bars.
pub fn waveform(samples: &[f32], buckets: usize) -> Vec<u64> {
    if samples.is_empty() || buckets == 0 {
        return Vec::new();
    }
    let per = samples.len().div_ceil(buckets);
    samples
        .chunks(per)
        .map(|c| {
            let peak = c.iter().fold(0f32, |m, s| m.max(s.abs())).min(1.0);
            (peak * 100.0).round() as u64
        })
        .collect()
}

/// The text of an attachment's chip.
pub fn chip_label(a: &Attachment) -> String {
    let name = a
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| a.path.display().to_string());
    match &a.kind {
        AttachmentKind::Image { width, height } => format!("img {name} {width}×{height}"),
        AttachmentKind::Audio {
            seconds,
            sample_rate,
        } => {
            format!(
                "audio {name} {seconds:.1}s {:.1}kHz",
                f64::from(*sample_rate) / 1000.0
            )
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A mono 16-bit PCM WAV file.
    pub(crate) fn wav_bytes(rate: u32, samples: &[i16]) -> Vec<u8> {
        let data_len = (samples.len() * 2) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data_len).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes()); // PCM
        v.extend_from_slice(&1u16.to_le_bytes()); // mono
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * 2).to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_len.to_le_bytes());
        for s in samples {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A PNG signature and IHDR claiming `w`×`h`, with no pixel data: what a bomb looks like to a
    /// decoder that trusts the header.
    fn png_header_only(w: u32, h: u32) -> Vec<u8> {
        let mut v = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        let mut chunk = b"IHDR".to_vec();
        chunk.extend_from_slice(&w.to_be_bytes());
        chunk.extend_from_slice(&h.to_be_bytes());
        chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(&chunk);
        v.extend_from_slice(&crc32(&chunk).to_be_bytes());
        // An IDAT holding an empty zlib stream, then IEND: enough for a decoder to read the header.
        for (kind, data) in [
            (
                &b"IDAT"[..],
                &[0x78u8, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01][..],
            ),
            (&b"IEND"[..], &[][..]),
        ] {
            let mut c = kind.to_vec();
            c.extend_from_slice(data);
            v.extend_from_slice(&(data.len() as u32).to_be_bytes());
            v.extend_from_slice(&c);
            v.extend_from_slice(&crc32(&c).to_be_bytes());
        }
        v
    }

    #[test]
    fn crc32_matches_the_known_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_png_loads_with_its_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        let img =
            image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
        img.save(&p).unwrap();
        let (a, _) = load_image(&p).unwrap();
        assert_eq!(
            a.kind,
            AttachmentKind::Image {
                width: 3,
                height: 2
            }
        );
        match a.data.as_deref() {
            Some(MediaData::Rgb8 { pixels, .. }) => assert_eq!(&pixels[..6], &[0, 0, 7, 10, 0, 7]),
            other => panic!("{other:?}"),
        }
        assert_eq!(chip_label(&a), "img x.png 3×2");
    }

    #[test]
    fn truncated_and_empty_images_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("whole.png");
        let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * y) as u8, x as u8, 9]));
        img.save(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for (name, cut) in [
            ("half.png", bytes.len() / 2),
            ("head.png", 40),
            ("empty.png", 0),
        ] {
            let q = dir.path().join(name);
            std::fs::write(&q, &bytes[..cut]).unwrap();
            let e = load_image(&q).unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn an_image_bomb_is_refused_from_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bomb.png");
        std::fs::write(&p, png_header_only(60_000, 60_000)).unwrap();
        let e = load_image(&p).unwrap_err().to_string();
        assert!(e.contains("60000×60000") && e.contains("refused"), "{e}");
        let p2 = dir.path().join("fake.png");
        std::fs::write(&p2, b"GIF89a not really").unwrap();
        let e = load_image(&p2).unwrap_err().to_string();
        assert!(e.contains("not a PNG or JPEG"), "{e}");
    }

    #[test]
    fn a_wav_loads_with_duration_and_waveform() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.wav");
        // 0.5 s of silence then 0.5 s at half scale.
        let mut s = vec![0i16; 4000];
        s.extend((0..4000).map(|i| if i % 2 == 0 { 16384 } else { -16384 }));
        std::fs::write(&p, wav_bytes(8000, &s)).unwrap();
        let a = load_audio(&p).unwrap();
        assert_eq!(
            a.kind,
            AttachmentKind::Audio {
                seconds: 1.0,
                sample_rate: 8000
            }
        );
        let Some(MediaData::Mono { samples, .. }) = a.data.as_deref() else {
            panic!()
        };
        assert_eq!(waveform(samples, 4), vec![0, 0, 50, 50]);
        assert_eq!(chip_label(&a), "audio t.wav 1.0s 8.0kHz");
    }

    #[test]
    fn too_long_and_garbage_audio_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long.wav");
        std::fs::write(&p, wav_bytes(1000, &vec![0i16; 601_000])).unwrap();
        let e = load_audio(&p).unwrap_err().to_string();
        assert!(e.contains("601 s long") && e.contains("refused"), "{e}");
        let g = dir.path().join("g.mp3");
        std::fs::write(&g, b"this is not audio at all").unwrap();
        let e = load_audio(&g).unwrap_err().to_string();
        assert!(e.contains("not readable"), "{e}");
    }
}
