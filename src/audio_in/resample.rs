//! Sample-rate conversion of mono clips: rubato's windowed-sinc resampler (512 taps,
//! Blackman-Harris², rubato's automatic cutoff) run over the whole clip, with its delay removed.
//! For to/gcd(from, to) ≤ 4096 (every common pair of rates) the sinc table holds exactly the
//! sub-sample offsets the output needs, so there is no interpolation between table entries and no
//! delay left at all; otherwise a 2048-offset table with linear interpolation, leading by 1/2048 of
//! an input sample.
//!
//! Conventions (what `tests/audio_resample.rs` checks against a reference):
//! * Output sample `j` is the band-limited input evaluated at time `j / to` seconds, the input
//!   being sample `i` at `i / from` and zero outside the clip: no delay, no phase shift.
//! * Output length is `round(len · to / from)`, halves rounded up, computed in integers.
//! * `from == to` returns the input unchanged.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Indexing, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

/// Rates accepted by [`resample`], in Hz (the same bounds as for decoded files).
pub const MIN_RATE: u32 = 1_000;
pub const MAX_RATE: u32 = 384_000;

/// Taps of the sinc filter. Rubato's sinc resampler delays its output by half of it, measured in
/// input samples. Its table holds the sinc at `table` sub-sample offsets; rubato reads it one
/// entry early, so the output leads by 1/table of an input sample.
const SINC_LEN: usize = 512;
/// Sub-sample offsets in the table when it cannot be exact.
const OVERSAMPLE: usize = 2048;
/// Largest `to / gcd(from, to)` resampled on an exact table (`SINC_LEN` × that many `f32`: 8 MiB).
const MAX_EXACT_TABLE: u64 = 4096;

/// x with a·x ≡ 1 (mod m), for coprime a and m (0 when m = 1).
fn inverse_mod(a: u64, m: u64) -> u64 {
    let (mut r0, mut r1) = (i128::from(a % m), i128::from(m));
    let (mut s0, mut s1) = (1i128, 0i128);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (s0, s1) = (s1, s0 - q * s1);
    }
    s0.rem_euclid(i128::from(m)) as u64
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Output length for `len` input samples: `round(len · to / from)`, halves up.
pub fn resampled_len(len: usize, from: u32, to: u32) -> usize {
    let (len, from, to) = (len as u128, u128::from(from), u128::from(to));
    ((2 * len * to + from) / (2 * from)) as usize
}

/// Resamples a mono clip from `from` Hz to `to` Hz (see the module header for the conventions).
pub fn resample(samples: &[f32], from: u32, to: u32) -> anyhow::Result<Vec<f32>> {
    for (what, rate) in [("input", from), ("output", to)] {
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            anyhow::bail!(
                "cannot resample: {what} sample rate {rate} Hz is outside {MIN_RATE}..={MAX_RATE} Hz"
            );
        }
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let g = gcd(u64::from(from), u64::from(to));
    let (up, down) = (u64::from(to) / g, u64::from(from) / g);
    let ratio = up as f64 / down as f64;
    // With a table of exactly `up` sub-sample offsets every output time lands on an entry, and
    // the one-entry lead (see SINC_LEN) is a whole number of input and output steps, removed
    // below; past MAX_EXACT_TABLE entries, a 2048-entry table with that lead left in.
    let exact = up <= MAX_EXACT_TABLE;
    let table = if exact { up as usize } else { OVERSAMPLE };
    let params = SincInterpolationParameters::new(SINC_LEN, WindowFunction::BlackmanHarris2)
        .oversampling_factor(table)
        .interpolation(if exact {
            SincInterpolationType::Nearest
        } else {
            SincInterpolationType::Linear
        });
    let mut rs = Async::<f32>::new_sinc(ratio, 1.0, &params, 1024, 1, FixedAsync::Input)
        .map_err(|e| anyhow::anyhow!("cannot resample {from} Hz → {to} Hz: {e}"))?;
    // Output frame k (counting from 0, nothing trimmed) shows the padded input at time
    // (k + 1) · down/up − SINC_LEN/2 + 1/table input samples (measured; `tests/audio_resample.rs`
    // checks tone phase). Leading zeros `pad` put the clip's start exactly on output frame
    // `first`: (SINC_LEN/2 + pad) · up − (first + 1) · down = e, with e = 1 for an exact table
    // (so (SINC_LEN/2 + pad) ≡ up⁻¹ mod down) and 0 otherwise.
    let half = SINC_LEN as u64 / 2;
    let e = u64::from(exact);
    let target = if exact { inverse_mod(up, down) } else { 0 };
    let pad = (target + down - half % down) % down;
    let first = (((half + pad) * up - e) / down - 1) as usize;
    let out_len = resampled_len(samples.len(), from, to);
    let mut padded = vec![0f32; pad as usize];
    padded.extend_from_slice(samples);
    let input = InterleavedSlice::new(&padded, 1, padded.len())
        .map_err(|e| anyhow::anyhow!("cannot resample: {e}"))?;
    // Chunk by chunk (rubato 4.0's `process_all` misplaces output when a chunk yields more than
    // twice its delay); past the end of the input, zeros.
    let need = first + out_len;
    let mut out: Vec<f32> = Vec::with_capacity(need + rs.output_frames_max());
    let mut offset = 0;
    while out.len() < need {
        let next = rs.input_frames_next();
        let avail = padded.len().saturating_sub(offset);
        let indexing = Indexing {
            input_offset: offset.min(padded.len()),
            output_offset: 0,
            partial_len: (avail < next).then_some(avail),
            active_channels_mask: None,
        };
        // rubato asserts on some index edge cases rather than returning an error.
        let chunk = crate::caught::catch(|| rs.process(&input, Some(&indexing)))
            .map_err(|m| {
                anyhow::anyhow!("resampling {from} Hz → {to} Hz failed (resampler panicked: {m})")
            })?
            .map_err(|e| anyhow::anyhow!("resampling {from} Hz → {to} Hz failed: {e}"))?;
        out.extend_from_slice(&chunk.take_data());
        offset += next.min(avail);
    }
    out.truncate(need);
    Ok(out.split_off(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_half_up() {
        assert_eq!(resampled_len(441, 44_100, 24_000), 240);
        assert_eq!(resampled_len(1, 48_000, 8_000), 0); // 1/6 rounds down
        assert_eq!(resampled_len(3, 48_000, 8_000), 1); // 0.5 rounds up
        assert_eq!(resampled_len(10, 16_000, 24_000), 15);
    }

    #[test]
    fn same_rate_is_identity_and_bad_rates_are_refused() {
        let x = [0.1f32, -0.5, 0.25];
        assert_eq!(resample(&x, 16_000, 16_000).unwrap(), x);
        let e = resample(&x, 0, 16_000).unwrap_err().to_string();
        assert!(e.contains("input sample rate 0 Hz"), "{e}");
        let e = resample(&x, 16_000, 400_000).unwrap_err().to_string();
        assert!(e.contains("output sample rate 400000 Hz"), "{e}");
    }
}
