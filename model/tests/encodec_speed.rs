//! EnCodec encode speed at `facebook/encodec_24khz`'s shapes (random weights), printed for
//! comparison with `scripts/bench_encodec_torch.py`; ignored by default (it takes seconds):
//! `cargo test --release -p tritter-model --test encodec_speed -- --ignored --nocapture`.

use candle_core::Device;
use tritter_model::audio::encodec::bench::encode_report;

#[test]
#[ignore]
fn encode_10s_at_24khz() {
    let runs = std::env::var("ENCODEC_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let report = encode_report(runs, &Device::Cpu).unwrap();
    println!("{}", serde_json::to_string(&report).unwrap());
    assert!(report.rtf > 0.0 && report.frames == 750 && report.codebooks == 8);
}
