//! `tritter bench audio [--json]`: EnCodec encode speed at `facebook/encodec_24khz`'s shapes
//! (random weights): a 10 s clip at 24 kHz to 8 codebooks (6 kbps), fast inference path, median
//! and best of timed runs after warm-up, with the real-time factor. Compare with
//! `scripts/bench_encodec_torch.py` (transformers' `EncodecModel`, same config and clip) in the
//! same sitting.

use anyhow::Result;
use candle_core::Device;
use tritter_model::audio::encodec::bench::{encode_report, EncodeReport};

/// Times the encoder on `device`.
pub fn audio_report(runs: usize, device: &Device) -> Result<EncodeReport> {
    Ok(encode_report(runs, device)?)
}
