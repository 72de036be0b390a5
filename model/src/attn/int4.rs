//! KIVI-style asymmetric INT4 quantisation of KV cache blocks (Liu et al., "KIVI: A Tuning-Free
//! Asymmetric 2bit Quantization for KV Cache", 2024, here at 4 bits): keys are quantised per
//! channel over a group of `G` tokens (outlier channels get their own range), values per token
//! over groups of `vg` channels. Each group stores an f16 minimum and an f16 step; codes are
//! `round((x - min) / step)` in `0..=15`, two per byte. The f16 rounding of min/step is folded
//! into the codes, so every element is reconstructed within `step / 2` plus the f16 rounding of
//! the minimum (tests check that bound).
//!
//! Layouts. Values: in *token quads* of [`VALUE_QUAD`] tokens, so a 32-bit lane holds one code
//! byte of four tokens and the decode kernels' value sums need no byte interleave: a quad is
//! `[byte: d/2][token: 4]`, byte `b` holding channel `2b` in its low nibble and `2b + 1` in its
//! high one; a group of `g` tokens takes [`value_code_bytes`] (whole quads, tokens past `g`
//! zero). Keys: in
//! *token-lane chunks* of [`KEY_CHUNK`] tokens, so a SIMD register holds one channel octet of 16
//! tokens and the decode kernels' key dots come out one token per lane, with no horizontal sums:
//! a chunk is `[octet: ⌈d/8⌉][token: 16][byte: 4]`, and byte `b` of token `t`'s octet `o` holds
//! channel `8o + b` in its low nibble and `8o + 4 + b` in its high one (so each nibble half of a
//! 32-bit lane is four consecutive channels). A group of `g` tokens takes [`key_code_bytes`];
//! tokens past `g` in the last chunk and channels past `d` in the last octet are zero.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Levels of a 4-bit code.
const LEVELS: f32 = 15.0;

/// f16 (min, step) covering `[lo, hi]` with 16 levels; the step is rounded up so the top code
/// still reaches `hi`.
fn min_step(lo: f32, hi: f32) -> (f16, f16) {
    let min_h = f16::from_f32(lo);
    let base = min_h.to_f32();
    let range = (hi - base).max(0.0);
    if range == 0.0 {
        return (min_h, f16::ZERO);
    }
    let mut step_h = f16::from_f32(range / LEVELS);
    if step_h.to_f32() * LEVELS + base < hi {
        step_h = f16::from_bits(step_h.to_bits() + 1);
    }
    (min_h, step_h)
}

/// `round((x − base) · inv_step)` clamped to `0..=15` (NaN → 0), branch-free so the quantisers'
/// loops vectorise: equal to `(v.round().clamp(0.0, 15.0)) as u8` (tested), without the libm
/// `roundf` call and the saturating `as u8` that kept them scalar. The clamp comes first (it
/// commutes with rounding here; `max` maps NaN to 0); adding 1.5·2^23 rounds half to even, and
/// a tie that went down is moved up, as `f32::round` rounds half away from zero.
#[inline(always)]
fn code(x: f32, base: f32, inv_step: f32) -> u8 {
    const ROUND: f32 = 12_582_912.0;
    // Not `clamp`: that keeps NaN, and the bit trick below needs a number (`max` gives 0).
    #[allow(clippy::manual_clamp)]
    let v = ((x - base) * inv_step).max(0.0).min(LEVELS);
    let t = v + ROUND;
    let up = i32::from(v - (t - ROUND) == 0.5);
    (t.to_bits() as i32 - ROUND.to_bits() as i32 + up) as u8
}

#[inline]
fn inv(step: f32) -> f32 {
    if step > 0.0 {
        1.0 / step
    } else {
        0.0
    }
}

/// Tokens per chunk of the key code layout (module docs).
pub const KEY_CHUNK: usize = 16;

/// Bytes of one token's key codes in a chunk: four per channel octet.
pub fn key_token_bytes(d: usize) -> usize {
    4 * d.div_ceil(8)
}

/// Bytes of one chunk of [`KEY_CHUNK`] tokens' key codes.
pub fn key_chunk_bytes(d: usize) -> usize {
    KEY_CHUNK * key_token_bytes(d)
}

/// Bytes of the key codes of a group of `g` tokens (whole chunks).
pub fn key_code_bytes(g: usize, d: usize) -> usize {
    g.div_ceil(KEY_CHUNK) * key_chunk_bytes(d)
}

/// Byte index and nibble shift of token `t`, channel `c` in the key code layout.
#[inline(always)]
pub fn key_code_at(t: usize, c: usize, d: usize) -> (usize, u32) {
    let (o, w) = (c / 8, c % 8);
    let at = t / KEY_CHUNK * key_chunk_bytes(d) + o * 4 * KEY_CHUNK + t % KEY_CHUNK * 4 + w % 4;
    (at, 4 * (w / 4) as u32)
}

/// Tokens per quad of the value code layout (module docs).
pub const VALUE_QUAD: usize = 4;

/// Bytes of the value codes of a group of `g` tokens (whole quads).
pub fn value_code_bytes(g: usize, d: usize) -> usize {
    g.div_ceil(VALUE_QUAD) * VALUE_QUAD * (d / 2)
}

/// Index of code byte `b` (channels `2b`, `2b + 1`) of token `t` in the value code layout.
#[inline(always)]
pub fn value_code_at(t: usize, b: usize, d: usize) -> usize {
    t / VALUE_QUAD * (VALUE_QUAD * d / 2) + VALUE_QUAD * b + t % VALUE_QUAD
}

/// Quantises a key group `src` `[g][d]` per channel into `codes` (the chunked layout of the module
/// docs, [`key_code_bytes`] long), `mins`/`steps` `[d]`.
pub fn quantize_keys(src: &[f32], d: usize, codes: &mut [u8], mins: &mut [f16], steps: &mut [f16]) {
    let g = src.len() / d;
    // Per channel, over the tokens in order (row by row, so the loop runs along the channels).
    let (mut lo, mut hi) = (vec![f32::INFINITY; d], vec![f32::NEG_INFINITY; d]);
    for row in src.chunks_exact(d).take(g) {
        for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
            (*l, *h) = (l.min(x), h.max(x));
        }
    }
    for c in 0..d {
        (mins[c], steps[c]) = min_step(lo[c], hi[c]);
    }
    // The f32 minima and inverse steps, once per group rather than per code.
    for (c, (b, is)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
        (*b, *is) = (mins[c].to_f32(), inv(steps[c].to_f32()));
    }
    let (base, inv_step) = (lo, hi);
    let codes = &mut codes[..key_code_bytes(g, d)];
    codes.fill(0);
    // One token's codes in channel order (padded to whole octets with zeros), then packed.
    let mut one = vec![0u8; 8 * d.div_ceil(8)];
    for t in 0..g {
        let row = &src[t * d..][..d];
        for (((o, &x), &b), &is) in one.iter_mut().zip(row).zip(&base).zip(&inv_step) {
            *o = code(x, b, is);
        }
        let first = t / KEY_CHUNK * key_chunk_bytes(d) + t % KEY_CHUNK * 4;
        for (o, oct) in one.chunks_exact(8).enumerate() {
            let out = &mut codes[first + o * 4 * KEY_CHUNK..][..4];
            for (b, byte) in out.iter_mut().enumerate() {
                *byte = oct[b] | (oct[4 + b] << 4);
            }
        }
    }
}

/// Inverse of [`quantize_keys`] for tokens `from..g` of the group, into `dst` `[(g-from)][d]`;
/// `tmp` is scratch for the f32 minima and steps.
pub fn dequantize_keys(
    codes: &[u8],
    d: usize,
    mins: &[f16],
    steps: &[f16],
    from: usize,
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    tmp.resize(2 * d, 0.0);
    let (m, s) = tmp.split_at_mut(d);
    mins.convert_to_f32_slice(m);
    steps.convert_to_f32_slice(s);
    for (t, row) in dst.chunks_exact_mut(d).enumerate() {
        for (c, x) in row.iter_mut().enumerate() {
            let (at, shift) = key_code_at(from + t, c, d);
            *x = ((codes[at] >> shift) & 15) as f32 * s[c] + m[c];
        }
    }
}

/// Quantises value tokens `src` `[g][d]` per token in groups of `vg` channels into `codes` (the
/// quad layout of the module docs, [`value_code_bytes`] long), `mins`/`steps` `[g][d/vg]`.
pub fn quantize_values(
    src: &[f32],
    d: usize,
    vg: usize,
    codes: &mut [u8],
    mins: &mut [f16],
    steps: &mut [f16],
) {
    let per_tok = d / vg;
    let g = src.len() / d;
    codes[..value_code_bytes(g, d)].fill(0);
    let mut one = vec![0u8; d / 2];
    for (t, row) in src.chunks_exact(d).enumerate() {
        for (gi, chunk) in row.chunks_exact(vg).enumerate() {
            let (lo, hi) = chunk
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            let (m, s) = min_step(lo, hi);
            mins[t * per_tok + gi] = m;
            steps[t * per_tok + gi] = s;
        }
        // vg is even, so both channels of a byte share a group. The token's bytes in order
        // (a loop that vectorises), then each to its place in the quad.
        for (gi, (o, x)) in one
            .chunks_exact_mut(vg / 2)
            .zip(row.chunks_exact(vg))
            .enumerate()
        {
            let gi = t * per_tok + gi;
            let (base, is) = (mins[gi].to_f32(), inv(steps[gi].to_f32()));
            for (o, x) in o.iter_mut().zip(x.chunks_exact(2)) {
                *o = code(x[0], base, is) | (code(x[1], base, is) << 4);
            }
        }
        let first = value_code_at(t, 0, d);
        for (b, &y) in one.iter().enumerate() {
            codes[first + VALUE_QUAD * b] = y;
        }
    }
}

/// Inverse of [`quantize_values`] for `n = dst.len() / d` tokens whose codes are tokens `v0..v0 +
/// n` of `codes` (a run of whole quads) and whose minima and steps are `mins`/`steps` `[n][d/vg]`,
/// into `dst` `[n][d]`.
pub fn dequantize_values(
    codes: &[u8],
    d: usize,
    vg: usize,
    mins: &[f16],
    steps: &[f16],
    v0: usize,
    dst: &mut [f32],
) {
    let per_tok = d / vg;
    for (t, row) in dst.chunks_exact_mut(d).enumerate() {
        // The token's bytes, one every VALUE_QUAD from its first.
        let mut bytes = codes[value_code_at(v0 + t, 0, d)..]
            .iter()
            .step_by(VALUE_QUAD);
        for (gi, out) in row.chunks_exact_mut(vg).enumerate() {
            let m = mins[t * per_tok + gi].to_f32();
            let s = steps[t * per_tok + gi].to_f32();
            for (pair, &b) in out.chunks_exact_mut(2).zip(bytes.by_ref()) {
                pair[0] = (b & 15) as f32 * s + m;
                pair[1] = (b >> 4) as f32 * s + m;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                // Channel 3 is an outlier channel (keys have those; KIVI's reason for per-channel).
                if i % 16 == 3 {
                    40.0 + 10.0 * u
                } else {
                    u
                }
            })
            .collect()
    }

    /// |x - x̂| ≤ step/2 + f16 rounding of the minimum (half an f16 ulp, ≤ 2^-11 relative).
    fn bound(step: f16, min: f16) -> f32 {
        step.to_f32() * 0.5 * (1.0 + 1e-5) + min.to_f32().abs() * 2f32.powi(-11) + 1e-6
    }

    /// The branch-free code equals `round`, clamp and cast on ties, near-ties, both ends,
    /// outside the range, negative zero, infinities and NaN.
    #[test]
    fn code_equals_round_clamp_and_cast() {
        let spec = |v: f32| v.round().clamp(0.0, LEVELS) as u8;
        let mut vals: Vec<f32> = (-40..=400).map(|i| i as f32 / 16.0).collect();
        for k in -2..=18 {
            let t = k as f32 + 0.5;
            vals.extend([
                t,
                f32::from_bits(t.to_bits() - 1),
                f32::from_bits(t.to_bits() + 1),
            ]);
        }
        vals.extend([
            0.499_999_97,
            -0.0,
            15.499_999,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        vals.extend(data(10_000, 3).iter().map(|x| x * 40.0));
        for v in vals {
            assert_eq!(code(v, 0.0, 1.0), spec(v), "v = {v}");
        }
        for (x, base, step) in [
            (0.3f32, -1.7f32, 0.13f32),
            (2.0, 0.1, 0.37),
            (-5.0, -5.2, 0.05),
        ] {
            assert_eq!(code(x, base, 1.0 / step), spec((x - base) * (1.0 / step)));
        }
    }

    #[test]
    fn key_roundtrip_error_is_bounded_per_channel() {
        let (g, d) = (32, 16);
        let x = data(g * d, 7);
        let mut codes = vec![0u8; key_code_bytes(g, d)];
        let (mut mins, mut steps) = (vec![f16::ZERO; d], vec![f16::ZERO; d]);
        quantize_keys(&x, d, &mut codes, &mut mins, &mut steps);
        let mut y = vec![0f32; g * d];
        dequantize_keys(&codes, d, &mins, &steps, 0, &mut y, &mut Vec::new());
        for t in 0..g {
            for c in 0..d {
                let e = (x[t * d + c] - y[t * d + c]).abs();
                assert!(e <= bound(steps[c], mins[c]), "t{t} c{c}: {e}");
            }
        }
        // The outlier channel does not widen the others' steps.
        assert!(steps[0].to_f32() < 0.15 && steps[3].to_f32() > 1.0);
        // Partial dequantisation (tokens from 5) equals the tail of the full one.
        let mut z = vec![0f32; (g - 5) * d];
        dequantize_keys(&codes, d, &mins, &steps, 5, &mut z, &mut Vec::new());
        assert_eq!(&y[5 * d..], &z[..]);
    }

    /// The key layout gives every token and channel a nibble of its own, in whole chunks, with
    /// the padding (tokens past the group, channels past `d`) zero; odd group sizes and a head
    /// dimension that is not a multiple of 8 round-trip within the bound.
    #[test]
    fn key_layout_is_one_nibble_per_element_with_zero_padding() {
        for (g, d) in [(37usize, 20usize), (16, 8), (1, 64), (65, 128)] {
            let bytes = key_code_bytes(g, d);
            assert_eq!(bytes, g.div_ceil(16) * 16 * 4 * d.div_ceil(8));
            let mut seen = vec![0u8; bytes];
            for t in 0..g {
                for c in 0..d {
                    let (at, shift) = key_code_at(t, c, d);
                    assert_eq!(seen[at] & (15 << shift), 0, "t{t} c{c} shares a nibble");
                    seen[at] |= 15 << shift;
                }
            }
            let x = data(g * d, 11);
            let mut codes = vec![0xAAu8; bytes];
            let (mut mins, mut steps) = (vec![f16::ZERO; d], vec![f16::ZERO; d]);
            quantize_keys(&x, d, &mut codes, &mut mins, &mut steps);
            for (i, (&b, &used)) in codes.iter().zip(&seen).enumerate() {
                assert_eq!(b & !used, 0, "padding byte {i} of {g}x{d}");
            }
            let mut y = vec![0f32; g * d];
            dequantize_keys(&codes, d, &mins, &steps, 0, &mut y, &mut Vec::new());
            for (i, (a, b)) in x.iter().zip(&y).enumerate() {
                let c = i % d;
                assert!((a - b).abs() <= bound(steps[c], mins[c]), "{g}x{d} at {i}");
            }
        }
    }

    #[test]
    fn value_layout_is_one_byte_per_channel_pair_with_zero_padding() {
        for (g, d, vg) in [
            (7usize, 20usize, 10usize),
            (64, 128, 64),
            (1, 64, 32),
            (6, 8, 2),
        ] {
            let bytes = value_code_bytes(g, d);
            assert_eq!(bytes, g.div_ceil(4) * 4 * d / 2);
            let mut seen = vec![false; bytes];
            for t in 0..g {
                for b in 0..d / 2 {
                    let at = value_code_at(t, b, d);
                    assert!(!seen[at], "t{t} b{b} shares a byte");
                    seen[at] = true;
                }
            }
            let x = data(g * d, 12);
            let mut codes = vec![0xAAu8; bytes];
            let n = g * d / vg;
            let (mut mins, mut steps) = (vec![f16::ZERO; n], vec![f16::ZERO; n]);
            quantize_values(&x, d, vg, &mut codes, &mut mins, &mut steps);
            for (i, (&b, &used)) in codes.iter().zip(&seen).enumerate() {
                assert!(used || b == 0, "padding byte {i} of {g}x{d}");
            }
            // Tokens v0.. of the quads, as a tile that starts inside a quad reads them.
            for v0 in 0..g.min(4) {
                let mut y = vec![0f32; (g - v0) * d];
                let (m, s) = (&mins[v0 * d / vg..], &steps[v0 * d / vg..]);
                dequantize_values(&codes, d, vg, m, s, v0, &mut y);
                for (i, (a, b)) in x[v0 * d..].iter().zip(&y).enumerate() {
                    let gi = v0 * d / vg + i / vg;
                    let e = (a - b).abs();
                    assert!(e <= bound(steps[gi], mins[gi]), "{g}x{d} from {v0} at {i}");
                }
            }
        }
    }

    #[test]
    fn value_roundtrip_error_is_bounded_per_token_group() {
        let (g, d, vg) = (8, 32, 16);
        let x: Vec<f32> = data(g * d, 9).iter().map(|v| v * 0.1).collect();
        let mut codes = vec![0u8; value_code_bytes(g, d)];
        let n = g * d / vg;
        let (mut mins, mut steps) = (vec![f16::ZERO; n], vec![f16::ZERO; n]);
        quantize_values(&x, d, vg, &mut codes, &mut mins, &mut steps);
        let mut y = vec![0f32; g * d];
        dequantize_values(&codes, d, vg, &mins, &steps, 0, &mut y);
        for t in 0..g {
            for c in 0..d {
                let gi = t * (d / vg) + c / vg;
                let e = (x[t * d + c] - y[t * d + c]).abs();
                assert!(e <= bound(steps[gi], mins[gi]), "t{t} c{c}: {e}");
                // And relative to the group's range: at most 1/30 of it (+ f16 slack).
                let r = x[t * d + c / vg * vg..][..vg]
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                assert!(e <= (r.1 - r.0) / 30.0 * 1.01 + 1e-4, "t{t} c{c}: {e}");
            }
        }
    }

    #[test]
    fn constant_groups_are_exact_up_to_f16() {
        let x = vec![0.25f32; 4 * 8];
        let mut codes = vec![0u8; key_code_bytes(4, 8)];
        let (mut m, mut s) = (vec![f16::ZERO; 8], vec![f16::ZERO; 8]);
        quantize_keys(&x, 8, &mut codes, &mut m, &mut s);
        let mut y = vec![0f32; 32];
        dequantize_keys(&codes, 8, &m, &s, 0, &mut y, &mut Vec::new());
        assert!(y.iter().all(|&v| v == 0.25));
    }
}
