//! Audio input for the model: decoding WAV, FLAC, MP3 and Ogg Vorbis files to mono `f32`
//! (symphonia; channels averaged) and resampling to the rate a model wants (`resample`).
//!
//! Bad input is one line naming the problem, never a panic or a huge allocation: the file size is
//! capped ([`MAX_AUDIO_BYTES`]), a WAV header is checked before symphonia sees it (`wav_check`),
//! the duration is refused both from the header's frame count and while counting decoded samples
//! ([`MAX_AUDIO_SECONDS`], [`MAX_AUDIO_SAMPLES`]), and sample rate and channel count are bounded.
//! Self-contained (no `crate::` paths) so that tests in `tests/` can include it by path.

pub mod resample;
mod wav_check;

use std::io::Read;
use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{self, CodecType, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

pub use resample::{resample, MAX_RATE, MIN_RATE};

pub const MAX_AUDIO_BYTES: u64 = 50 * 1024 * 1024;
pub const MAX_AUDIO_SECONDS: f64 = 600.0;
/// Most mono samples decoded (600 s at 48 kHz, 110 MiB of `f32`): files above 48 kHz are limited
/// to proportionally less than [`MAX_AUDIO_SECONDS`].
pub const MAX_AUDIO_SAMPLES: usize = 600 * 48_000;
pub const MAX_CHANNELS: usize = 32;
const FORMATS: &str = "WAV, FLAC, MP3 or Ogg Vorbis";

/// Decodes an audio file to mono samples (the mean of its channels) and its sample rate.
pub fn decode_mono(path: &Path) -> anyhow::Result<(Vec<f32>, u32)> {
    let p = path.display();
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("cannot open {p}: {e}"))?;
    if meta.is_dir() {
        anyhow::bail!("{p} is a directory, not an audio file");
    }
    let len = meta.len();
    if len == 0 {
        anyhow::bail!("{p} is empty (0 bytes), not audio");
    }
    if len > MAX_AUDIO_BYTES {
        anyhow::bail!(
            "{p} is too large ({:.1} MiB > {} MiB limit)",
            len as f64 / 1048576.0,
            MAX_AUDIO_BYTES >> 20
        );
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if let Some(name) = ext.as_deref().and_then(unsupported_extension) {
        anyhow::bail!("{p}: {name} audio is not supported (use {FORMATS})");
    }
    let mut file =
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot open {p}: {e}"))?;
    let mut head = [0u8; 512];
    let n =
        read_up_to(&mut file, &mut head).map_err(|e| anyhow::anyhow!("cannot read {p}: {e}"))?;
    let head = &head[..n];
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WAVE" {
        wav_check::check(path, &mut file, len)?;
    }
    // Symphonia's demuxers and decoders are not meant to panic, but a malformed file is exactly
    // where one would: turn that into an error too.
    let decoded = crate::caught::catch(|| decode_file(path, ext.as_deref(), head));
    decoded.unwrap_or_else(|m| {
        Err(anyhow::anyhow!(
            "{p}: the audio decoder failed on this file ({m})"
        ))
    })
}

/// Decodes `path` and resamples it to `rate` Hz (see [`resample`] for the conventions).
// For the encode probe, `-p --audio` and the training data reader (issue #15), which do not
// call it yet.
#[allow(dead_code)]
pub fn load_mono_at(path: &Path, rate: u32) -> anyhow::Result<Vec<f32>> {
    let (samples, from) = decode_mono(path)?;
    resample(&samples, from, rate).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Formats refused by their extension alone (symphonia is built without their codecs).
fn unsupported_extension(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "aac" | "m4a" | "mp4" | "m4b" => "AAC",
        "opus" => "Opus",
        "wma" | "asf" => "WMA",
        "webm" | "mkv" | "mka" => "Matroska/WebM",
        "amr" => "AMR",
        "ac3" => "AC-3",
        "aif" | "aiff" | "aifc" => "AIFF",
        _ => return None,
    })
}

fn codec_name(codec: CodecType) -> String {
    let known = [
        (codecs::CODEC_TYPE_OPUS, "Opus"),
        (codecs::CODEC_TYPE_AAC, "AAC"),
        (codecs::CODEC_TYPE_ALAC, "ALAC"),
        (codecs::CODEC_TYPE_SPEEX, "Speex"),
        (codecs::CODEC_TYPE_ADPCM_MS, "Microsoft ADPCM"),
        (codecs::CODEC_TYPE_ADPCM_IMA_WAV, "IMA ADPCM"),
        (codecs::CODEC_TYPE_WAVPACK, "WavPack"),
    ];
    known
        .iter()
        .find(|(c, _)| *c == codec)
        .map_or_else(|| format!("codec {codec}"), |(_, n)| (*n).to_string())
}

/// The error for a file symphonia cannot open: text gets its own line.
fn unreadable(path: &Path, head: &[u8], e: &SymError) -> anyhow::Error {
    let p = path.display();
    let text = std::str::from_utf8(head).is_ok_and(|s| {
        !s.is_empty()
            && s.chars()
                .all(|c| !c.is_control() || c.is_ascii_whitespace())
    });
    if text {
        anyhow::anyhow!("{p} is text, not audio (not readable as {FORMATS})")
    } else {
        anyhow::anyhow!("{p} is not readable audio ({FORMATS}): {e}")
    }
}

fn open_format(
    path: &Path,
    ext: Option<&str>,
    head: &[u8],
) -> anyhow::Result<Box<dyn FormatReader>> {
    let p = path.display();
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot open {p}: {e}"))?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = ext {
        hint.with_extension(ext);
    }
    let opts = FormatOptions::default();
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &opts, &MetadataOptions::default())
        .map_err(|e| unreadable(path, head, &e))?;
    Ok(probed.format)
}

/// Frames (samples per channel) allowed at `rate`.
fn max_frames(rate: u32) -> usize {
    ((MAX_AUDIO_SECONDS * f64::from(rate)) as usize).min(MAX_AUDIO_SAMPLES)
}

fn too_long(path: &Path, frames: u64, rate: u32, counted: bool) -> anyhow::Error {
    let secs = frames as f64 / f64::from(rate);
    let limit = max_frames(rate) as f64 / f64::from(rate);
    let how = if counted {
        "decodes to more than"
    } else {
        "is"
    };
    anyhow::anyhow!(
        "{} {how} {secs:.0} s long at {rate} Hz, over the {limit:.0} s limit; refused",
        path.display()
    )
}

fn decode_file(path: &Path, ext: Option<&str>, head: &[u8]) -> anyhow::Result<(Vec<f32>, u32)> {
    let p = path.display();
    let mut format = open_format(path, ext, head)?;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != codecs::CODEC_TYPE_NULL)
        .ok_or_else(|| anyhow::anyhow!("{p} has no audio track"))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let rate = params
        .sample_rate
        .ok_or_else(|| anyhow::anyhow!("{p} does not state its sample rate"))?;
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        anyhow::bail!(
            "{p} has a sample rate of {rate} Hz ({MIN_RATE}..={MAX_RATE} Hz supported); refused"
        );
    }
    if let Some(ch) = params.channels.map(|c| c.count()) {
        if ch == 0 || ch > MAX_CHANNELS {
            anyhow::bail!("{p} has {ch} channels (1..={MAX_CHANNELS} supported); refused");
        }
    }
    let limit = max_frames(rate);
    if let Some(n) = params.n_frames.filter(|&n| n > limit as u64) {
        return Err(too_long(path, n, rate, false));
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(_) => anyhow::anyhow!(
                "{p} holds {} audio, which is not supported (use {FORMATS})",
                codec_name(params.codec)
            ),
            e => anyhow::anyhow!("{p}: cannot set up its audio decoder: {e}"),
        })?;
    let mut mono: Vec<f32> = Vec::new();
    let mut last_error = None;
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => anyhow::bail!("{p} is corrupt: {e}"),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymError::DecodeError(e)) => {
                last_error = Some(e);
                continue;
            }
            Err(e) => anyhow::bail!("{p} is corrupt: {e}"),
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count();
        if channels == 0 || channels > MAX_CHANNELS {
            anyhow::bail!("{p} has {channels} channels (1..={MAX_CHANNELS} supported); refused");
        }
        let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        buf.copy_interleaved_ref(decoded);
        let scale = 1.0 / channels as f32;
        mono.extend(
            buf.samples()
                .chunks(channels)
                .map(|frame| frame.iter().sum::<f32>() * scale),
        );
        if mono.len() > limit {
            return Err(too_long(path, mono.len() as u64, rate, true));
        }
    }
    if mono.is_empty() {
        let why = last_error.map_or(String::new(), |e| format!(" (decoder: {e})"));
        anyhow::bail!("{p} holds no audio samples{why}");
    }
    if let Some(n) = params.n_frames {
        // MP3 and Vorbis headers may count encoder padding: allow a little slack.
        if (mono.len() as u64) + 4096.max(n / 50) < n {
            anyhow::bail!(
                "{p} is truncated: its header promises {n} samples, {} decoded",
                mono.len()
            );
        }
    }
    Ok((mono, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_extensions_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for (name, what) in [("a.aac", "AAC"), ("b.OPUS", "Opus")] {
            let p = dir.path().join(name);
            std::fs::write(&p, b"\0\0\0\x20ftypM4A ").unwrap();
            let e = decode_mono(&p).unwrap_err().to_string();
            assert!(e.contains(&format!("{what} audio is not supported")), "{e}");
        }
    }
}
