//! `loss.png`: training loss (blue, light: every step; dark: 20-step moving average) and
//! validation loss (red) against step, drawn from `metrics.jsonl`. A small self-contained
//! rasteriser and PNG writer (RGB, zlib stored blocks, CRC-32 per the PNG spec): no text; the
//! axes span the data, with grid lines at quarters.

use super::TrainError;
use std::path::Path;

const W: usize = 800;
const H: usize = 480;
const PAD: usize = 30;

struct Canvas {
    px: Vec<[u8; 3]>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            self.px[y as usize * W + x as usize] = c;
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3], thick: i64) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for d in 0..thick {
                self.set(x.round() as i64, y.round() as i64 + d, c);
            }
        }
    }
}

/// CRC-32 (ISO 3309, as PNG uses).
fn crc32(chunks: &[&[u8]]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for data in chunks {
        for &b in *data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
}

/// Encode RGB pixels as a PNG (zlib stream of stored deflate blocks).
fn png(px: &[[u8; 3]], w: usize, h: usize) -> Vec<u8> {
    let mut raw = Vec::with_capacity(h * (1 + 3 * w));
    for row in px.chunks(w) {
        raw.push(0); // filter: none
        for p in row {
            raw.extend_from_slice(p);
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut bsum) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        bsum = (bsum + a) % 65521;
    }
    z.extend_from_slice(&((bsum << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Draw `metrics.jsonl` of `run_dir` into `run_dir/loss.png`. Returns false when there is
/// nothing to plot.
pub fn plot_run(run_dir: &Path) -> Result<bool, TrainError> {
    let mp = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&mp).map_err(|e| TrainError::io(&mp, e))?;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        if let Some(x) = v["loss"].as_f64().filter(|x| x.is_finite()) {
            train.push((step, x));
        } else if let Some(x) = v["val_loss"].as_f64().filter(|x| x.is_finite()) {
            val.push((step, x));
        }
    }
    if train.is_empty() {
        return Ok(false);
    }
    let all = train.iter().chain(&val);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let map = |(x, y): (f64, f64)| {
        (
            PAD as f64 + (x - x0) / (x1 - x0) * (W - 2 * PAD) as f64,
            (H - PAD) as f64 - (y - y0) / (y1 - y0) * (H - 2 * PAD) as f64,
        )
    };
    let mut c = Canvas {
        px: vec![[255, 255, 255]; W * H],
    };
    for q in 0..=4 {
        let f = q as f64 / 4.0;
        let gx = PAD as f64 + f * (W - 2 * PAD) as f64;
        let gy = PAD as f64 + f * (H - 2 * PAD) as f64;
        let shade = if q == 0 || q == 4 {
            [0, 0, 0]
        } else {
            [220, 220, 220]
        };
        c.line((gx, PAD as f64), (gx, (H - PAD) as f64), shade, 1);
        c.line((PAD as f64, gy), ((W - PAD) as f64, gy), shade, 1);
    }
    for w in train.windows(2) {
        c.line(map(w[0]), map(w[1]), [160, 190, 240], 1);
    }
    let k = 20usize;
    let avg: Vec<(f64, f64)> = (0..train.len())
        .map(|i| {
            let lo = i.saturating_sub(k - 1);
            let s: f64 = train[lo..=i].iter().map(|p| p.1).sum();
            (train[i].0, s / (i - lo + 1) as f64)
        })
        .collect();
    for w in avg.windows(2) {
        c.line(map(w[0]), map(w[1]), [20, 60, 200], 2);
    }
    for w in val.windows(2) {
        c.line(map(w[0]), map(w[1]), [210, 30, 30], 3);
    }
    for &p in &val {
        let (x, y) = map(p);
        for dx in -3..=3 {
            c.line(
                (x + dx as f64, y - 3.0),
                (x + dx as f64, y + 3.0),
                [210, 30, 30],
                1,
            );
        }
    }
    let out = run_dir.join("loss.png");
    std::fs::write(&out, png(&c.px, W, H)).map_err(|e| TrainError::io(&out, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
    }

    #[test]
    fn png_has_valid_structure_and_round_trips_pixels() {
        let px = vec![[1u8, 2, 3]; 70_000 / 3 + 5];
        let (w, h) = (px.len(), 1);
        let bytes = png(&px, w, h);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR length 13 and a CRC that verifies.
        assert_eq!(&bytes[8..16], &[0, 0, 0, 13, b'I', b'H', b'D', b'R']);
        let crc = u32::from_be_bytes(bytes[29..33].try_into().unwrap());
        assert_eq!(crc, crc32(&[&bytes[12..29]]));
        // Stored blocks: the raw scanline bytes appear verbatim after the zlib header.
        let idat = &bytes[33 + 8..];
        assert_eq!(&idat[..2], &[0x78, 0x01]);
        assert_eq!(idat[2], 0, "first of two stored blocks is not final");
        assert_eq!(&idat[7..11], &[0, 1, 2, 3]);
    }
}
