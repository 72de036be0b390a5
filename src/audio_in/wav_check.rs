//! A look at a RIFF/WAVE file's chunk headers before symphonia reads it, so that a bad header is
//! one clear line instead of a decoder error, a panic or a huge allocation: symphonia 0.5 divides
//! by the block alignment, builds a time base from the sample rate (a rate of 0 panics), and
//! allocates a LIST/INFO entry at the size its header claims (up to 4 GiB) before reading it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::{MAX_CHANNELS, MAX_RATE, MIN_RATE};

/// Most chunks walked before `data` (real files have a handful).
const MAX_CHUNKS: usize = 1000;

/// What the `fmt ` chunk says.
struct Fmt {
    tag: u16,
    channels: u16,
    rate: u32,
    block_align: u16,
    bits: u16,
}

fn tag_name(tag: u16) -> &'static str {
    match tag {
        0x0002 => "Microsoft ADPCM",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0050 => "MPEG audio",
        0x0055 => "MP3",
        0x00FF | 0x1610 => "AAC",
        0x0161 | 0x0162 => "WMA",
        0x2000 => "AC-3",
        0x704F | 0x6750 => "Opus",
        _ => "an unknown codec",
    }
}

fn read_fmt(file: &mut std::fs::File, len: u32) -> std::io::Result<Fmt> {
    let mut b = [0u8; 26];
    let n = (len as usize).min(b.len());
    file.read_exact(&mut b[..n])?;
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let mut tag = u16_at(0);
    // WAVE_FORMAT_EXTENSIBLE: the codec is the first two bytes of the sub-format GUID.
    if tag == 0xFFFE && n >= 26 {
        tag = u16_at(24);
    }
    Ok(Fmt {
        tag,
        channels: u16_at(2),
        rate: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        block_align: u16_at(12),
        bits: u16_at(14),
    })
}

fn check_fmt(path: &Path, f: &Fmt) -> anyhow::Result<()> {
    let p = path.display();
    // PCM, IEEE float, A-law, µ-law: what symphonia's `pcm` codec decodes.
    if ![1, 3, 6, 7].contains(&f.tag) {
        anyhow::bail!(
            "{p} is WAV with {} data (format tag {:#06x}), which is not supported \
             (PCM, float, A-law, µ-law are)",
            tag_name(f.tag),
            f.tag
        );
    }
    if f.channels == 0 || usize::from(f.channels) > MAX_CHANNELS {
        anyhow::bail!(
            "{p}: its WAV header states {} channels (1..={MAX_CHANNELS} supported); refused",
            f.channels
        );
    }
    if !(MIN_RATE..=MAX_RATE).contains(&f.rate) {
        anyhow::bail!(
            "{p}: its WAV header states a sample rate of {} Hz ({MIN_RATE}..={MAX_RATE} Hz \
             supported); refused",
            f.rate
        );
    }
    if f.bits == 0 || f.block_align == 0 {
        anyhow::bail!(
            "{p}: its WAV header states {} bits per sample and {} bytes per frame; refused",
            f.bits,
            f.block_align
        );
    }
    Ok(())
}

/// Walks the chunk headers of the RIFF/WAVE file `file` (`len` bytes; the caller has read
/// "RIFF....WAVE"); checks the format and that every chunk up to `data` lies inside the file.
pub fn check(path: &Path, file: &mut std::fs::File, len: u64) -> anyhow::Result<()> {
    let p = path.display();
    let io = |e: std::io::Error| anyhow::anyhow!("cannot read {p}: {e}");
    let mut pos = 12u64;
    let mut fmt = None;
    for _ in 0..MAX_CHUNKS {
        if pos + 8 > len {
            anyhow::bail!("{p} is truncated: its WAV header ends before the audio data");
        }
        file.seek(SeekFrom::Start(pos)).map_err(io)?;
        let mut h = [0u8; 8];
        file.read_exact(&mut h).map_err(io)?;
        let size = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let left = len - pos - 8;
        match &h[..4] {
            b"data" => {
                let Some(f) = fmt else {
                    anyhow::bail!("{p} is not valid WAV: no format (fmt) chunk before the data");
                };
                check_fmt(path, &f)?;
                if u64::from(size) > left {
                    anyhow::bail!(
                        "{p} is truncated: its WAV data chunk claims {size} bytes but {left} follow"
                    );
                }
                return Ok(());
            }
            id => {
                if u64::from(size) > left {
                    anyhow::bail!(
                        "{p} is truncated or corrupt: its WAV chunk {:?} claims {size} bytes but \
                         {left} follow",
                        String::from_utf8_lossy(id)
                    );
                }
                if id == b"fmt " {
                    if size < 16 {
                        anyhow::bail!(
                            "{p} is not valid WAV: its fmt chunk is {size} bytes, not ≥ 16"
                        );
                    }
                    fmt = Some(read_fmt(file, size).map_err(io)?);
                }
                pos += 8 + u64::from(size) + u64::from(size & 1);
            }
        }
    }
    anyhow::bail!("{p} is not valid WAV: more than {MAX_CHUNKS} chunks before the audio data")
}
