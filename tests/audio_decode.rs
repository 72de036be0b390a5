//! Audio decoding (`src/audio_in`): WAV (8/16/24-bit PCM, float, stereo), FLAC, decoded against the
//! PCM definitions (integer / 2^(bits-1), channels averaged); and bad files, each refused with one
//! line that names the problem. Files are written here by tiny independent WAV and FLAC writers.

#[allow(dead_code)]
#[path = "../src/audio_in/mod.rs"]
mod audio_in;
// `audio_in` turns a decoder's or resampler's panic into an error through `crate::caught`.
#[allow(dead_code)]
#[path = "../src/caught.rs"]
mod caught;

use std::path::{Path, PathBuf};

use audio_in::{decode_mono, load_mono_at};

/// A RIFF/WAVE file: `fmt ` (16 bytes) then `data`. `data_len` overrides the data chunk's size.
fn wav(
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    data: &[u8],
    data_len: Option<u32>,
) -> Vec<u8> {
    let align = channels * bits.div_ceil(8);
    let mut v = b"RIFF".to_vec();
    v.extend(((36 + data.len()) as u32).to_le_bytes());
    v.extend(b"WAVEfmt ");
    v.extend(16u32.to_le_bytes());
    v.extend(tag.to_le_bytes());
    v.extend(channels.to_le_bytes());
    v.extend(rate.to_le_bytes());
    v.extend((rate * u32::from(align)).to_le_bytes());
    v.extend(align.to_le_bytes());
    v.extend(bits.to_le_bytes());
    v.extend(b"data");
    v.extend(data_len.unwrap_or(data.len() as u32).to_le_bytes());
    v.extend(data);
    v
}

fn pcm16(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn crc8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |mut c, &b| {
        c ^= b;
        for _ in 0..8 {
            c = if c & 0x80 != 0 {
                (c << 1) ^ 0x07
            } else {
                c << 1
            };
        }
        c
    })
}

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut c, &b| {
        c ^= u16::from(b) << 8;
        for _ in 0..8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x8005
            } else {
                c << 1
            };
        }
        c
    })
}

/// A 16-bit FLAC file with verbatim or constant subframes (FLAC format spec: STREAMINFO, fixed block size,
/// frame header with CRC-8, frame CRC-16). `total` 0 means "length unknown".
fn flac(rate: u32, channels: &[Vec<i16>], total: u64) -> Vec<u8> {
    const BLOCK: usize = 4096;
    let n = channels[0].len();
    let mut v = b"fLaC".to_vec();
    v.extend([0x80, 0, 0, 34]); // last metadata block, STREAMINFO, 34 bytes
    v.extend((BLOCK as u16).to_be_bytes());
    v.extend((BLOCK as u16).to_be_bytes());
    v.extend([0u8; 6]); // frame sizes unknown
    let packed =
        (u64::from(rate) << 44) | (((channels.len() - 1) as u64) << 41) | (15u64 << 36) | total;
    v.extend(packed.to_be_bytes());
    v.extend([0u8; 16]); // no MD5
    for (i, start) in (0..n).step_by(BLOCK).enumerate() {
        let len = BLOCK.min(n - start);
        let mut f = vec![0xFF, 0xF8, 0x70, (((channels.len() - 1) as u8) << 4) | 0x08];
        let mut utf8 = [0u8; 4];
        f.extend(
            char::from_u32(i as u32)
                .unwrap()
                .encode_utf8(&mut utf8)
                .as_bytes(),
        );
        f.extend(((len - 1) as u16).to_be_bytes());
        f.push(crc8(&f));
        for ch in channels {
            let block = &ch[start..start + len];
            if block.iter().all(|&s| s == block[0]) {
                f.push(0x00); // constant subframe: one sample stands for the block
                f.extend(block[0].to_be_bytes());
            } else {
                f.push(0x02); // verbatim subframe, no wasted bits
                f.extend(block.iter().flat_map(|s| s.to_be_bytes()));
            }
        }
        f.extend(crc16(&f).to_be_bytes());
        v.extend(f);
    }
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn ramp16(n: usize) -> Vec<i16> {
    (0..n).map(|i| ((i * 7919) % 65536) as i32 as i16).collect()
}

#[test]
fn wav_16_24_8_bit_and_float_decode_to_their_pcm_values() {
    let dir = tempfile::tempdir().unwrap();
    let s16 = ramp16(3000);
    let p = write(
        dir.path(),
        "a.wav",
        &wav(1, 1, 16_000, 16, &pcm16(&s16), None),
    );
    let (got, rate) = decode_mono(&p).unwrap();
    assert_eq!(rate, 16_000);
    let want: Vec<f32> = s16.iter().map(|&s| f32::from(s) / 32768.0).collect();
    assert_eq!(got, want);

    let s24: Vec<i32> = (0..2000)
        .map(|i| (i * 4093 % (1 << 24)) - (1 << 23))
        .collect();
    let bytes: Vec<u8> = s24
        .iter()
        .flat_map(|s| s.to_le_bytes()[..3].to_vec())
        .collect();
    let p = write(dir.path(), "b.wav", &wav(1, 1, 44_100, 24, &bytes, None));
    let (got, rate) = decode_mono(&p).unwrap();
    assert_eq!(rate, 44_100);
    let want: Vec<f32> = s24.iter().map(|&s| s as f32 / 8_388_608.0).collect();
    assert_eq!(got, want);

    let u8s: Vec<u8> = (0..=255).collect();
    let p = write(dir.path(), "c.wav", &wav(1, 1, 8_000, 8, &u8s, None));
    let (got, _) = decode_mono(&p).unwrap();
    let want: Vec<f32> = u8s
        .iter()
        .map(|&s| (f32::from(s) - 128.0) / 128.0)
        .collect();
    assert_eq!(got, want);

    let f: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37).sin() * 0.9).collect();
    let bytes: Vec<u8> = f.iter().flat_map(|s| s.to_le_bytes()).collect();
    let p = write(dir.path(), "d.wav", &wav(3, 1, 48_000, 32, &bytes, None));
    assert_eq!(decode_mono(&p).unwrap(), (f, 48_000));
}

#[test]
fn stereo_is_averaged_to_mono() {
    let dir = tempfile::tempdir().unwrap();
    let (l, r) = (ramp16(1500), ramp16(1501)[1..].to_vec());
    let inter: Vec<i16> = l.iter().zip(&r).flat_map(|(&a, &b)| [a, b]).collect();
    let p = write(
        dir.path(),
        "st.wav",
        &wav(1, 2, 22_050, 16, &pcm16(&inter), None),
    );
    let (got, rate) = decode_mono(&p).unwrap();
    assert_eq!(rate, 22_050);
    assert_eq!(got.len(), 1500);
    for (i, g) in got.iter().enumerate() {
        let want = (f32::from(l[i]) / 32768.0 + f32::from(r[i]) / 32768.0) / 2.0;
        assert!((g - want).abs() <= 1e-7, "{i}: {g} vs {want}");
    }
}

#[test]
fn flac_decodes_mono_and_stereo() {
    let dir = tempfile::tempdir().unwrap();
    let a = ramp16(10_000); // three frames, the last one short
    let p = write(
        dir.path(),
        "m.flac",
        &flac(16_000, std::slice::from_ref(&a), 10_000),
    );
    let (got, rate) = decode_mono(&p).unwrap();
    assert_eq!(rate, 16_000);
    assert_eq!(
        got,
        a.iter()
            .map(|&s| f32::from(s) / 32768.0)
            .collect::<Vec<_>>()
    );
    let b: Vec<i16> = a.iter().map(|s| s.wrapping_mul(3)).collect();
    let p = write(
        dir.path(),
        "s.flac",
        &flac(16_000, &[a.clone(), b.clone()], 0),
    );
    let (got, _) = decode_mono(&p).unwrap();
    assert_eq!(got.len(), a.len());
    for i in 0..a.len() {
        let want = (f32::from(a[i]) / 32768.0 + f32::from(b[i]) / 32768.0) / 2.0;
        assert!((got[i] - want).abs() <= 1e-7);
    }
}

#[test]
fn load_mono_at_decodes_and_resamples() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "r.wav",
        &wav(1, 1, 8_000, 16, &pcm16(&ramp16(8_001)), None),
    );
    assert_eq!(load_mono_at(&p, 24_000).unwrap().len(), 24_003);
    assert_eq!(load_mono_at(&p, 8_000).unwrap().len(), 8_001);
    let e = load_mono_at(&p, 0).unwrap_err().to_string();
    assert!(
        e.contains("r.wav") && e.contains("output sample rate 0 Hz"),
        "{e}"
    );
}

/// Decoding `name` fails with one line holding every `needles` entry and the file name.
fn refused(dir: &Path, name: &str, bytes: &[u8], needles: &[&str]) {
    let p = write(dir, name, bytes);
    let e = format!("{:#}", decode_mono(&p).unwrap_err());
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(e.contains(name), "names the file: {e}");
    for n in needles {
        assert!(e.contains(n), "{name}: {e:?} should say {n:?}");
    }
}

#[test]
fn bad_headers_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A 44-byte header claiming 4 GB of data.
    let huge = wav(1, 2, 44_100, 16, &[], Some(u32::MAX - 64));
    assert_eq!(huge.len(), 44);
    refused(
        d,
        "huge.wav",
        &huge,
        &["truncated", "claims 4294967231 bytes but 0 follow"],
    );
    // Half of a real file.
    let whole = wav(1, 1, 16_000, 16, &pcm16(&ramp16(4000)), None);
    refused(d, "cut.wav", &whole[..whole.len() / 2], &["truncated"]);
    refused(d, "head.wav", &whole[..30], &["truncated"]);
    refused(
        d,
        "rate0.wav",
        &wav(1, 1, 0, 16, &pcm16(&[1, 2]), None),
        &["sample rate of 0 Hz"],
    );
    let fast = wav(1, 1, 500_000, 16, &pcm16(&[1, 2]), None);
    refused(
        d,
        "fast.wav",
        &fast,
        &["sample rate of 500000 Hz", "refused"],
    );
    refused(
        d,
        "ch0.wav",
        &wav(1, 0, 8_000, 16, &[], None),
        &["0 channels"],
    );
    let many = wav(1, 1000, 8_000, 16, &vec![0; 4000], None);
    refused(d, "many.wav", &many, &["1000 channels", "refused"]);
    let mp3 = wav(0x55, 1, 8_000, 16, &[0; 64], None);
    refused(
        d,
        "mp3.wav",
        &mp3,
        &["MP3", "format tag 0x0055", "not supported"],
    );
    let adpcm = wav(0x11, 1, 8_000, 4, &[0; 64], None);
    refused(d, "ima.wav", &adpcm, &["IMA ADPCM", "not supported"]);
    // A LIST chunk claiming 4 GB before the data: symphonia would allocate that much.
    let mut list = b"RIFF\xff\xff\xff\xffWAVEfmt ".to_vec();
    list.extend(&wav(1, 1, 8_000, 16, &[], None)[16..36]);
    list.extend(b"LIST\xf0\xff\xff\xffINFOINAM\xe0\xff\xff\xffx");
    refused(d, "list.wav", &list, &["LIST", "claims 4294967280 bytes"]);
}

#[test]
fn not_audio_and_unsupported_formats_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    refused(d, "empty.wav", b"", &["empty"]);
    refused(
        d,
        "notes.wav",
        b"Remember to buy milk.\nAnd eggs.\n",
        &["text, not audio"],
    );
    refused(
        d,
        "noise.wav",
        &[0x00, 0xff, 0x13, 0x88, 0x01],
        &["not readable audio"],
    );
    refused(
        d,
        "song.aac",
        b"\xff\xf1\x50\x80\x02\x1f\xfc",
        &["AAC audio is not supported"],
    );
    refused(
        d,
        "voice.opus",
        b"OggS\0\x02",
        &["Opus audio is not supported"],
    );
    refused(
        d,
        "nothing.wav",
        &wav(1, 1, 8_000, 16, &[], None),
        &["no audio samples"],
    );
    let e = decode_mono(d).unwrap_err().to_string();
    assert!(e.contains("directory"), "{e}");
}

#[test]
fn hours_long_audio_is_refused_by_header_and_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two hours of 8-bit audio at 1 kHz (7.2 MB): the header's frame count says so.
    let long = wav(1, 1, 1_000, 8, &vec![128u8; 7_200_000], None);
    refused(
        d,
        "long.wav",
        &long,
        &["is 7200 s long", "over the 600 s limit", "refused"],
    );
    // A FLAC stream of unknown length (total 0): only counting decoded samples can tell.
    let flac_long = flac(1_000, &[vec![0i16; 610_000]], 0);
    refused(
        d,
        "long.flac",
        &flac_long,
        &["decodes to more than", "600 s limit", "refused"],
    );
    // 151 s of silence at 192 kHz in a few kB: over the sample cap (600 s at 48 kHz) though
    // under 600 s.
    let hi = flac(192_000, &[vec![0i16; 192_000 * 151]], 0);
    refused(d, "hi.flac", &hi, &["192000 Hz", "over the 150 s limit"]);
}
