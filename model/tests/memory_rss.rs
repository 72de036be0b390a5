//! Resident memory of a loaded model stays within 1.2× its packed ternary weight bytes plus its
//! dense tensors (embedding, norms): the packed form is what lives in memory, no f32 copies of
//! the ternary layers. Measured as the `VmRSS` delta of this process (its own test binary, one
//! test, so no other test allocates meanwhile).

use candle_core::Device;
use tritter_model::random::RandomSource;
use tritter_model::{Config, Transformer};

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn loaded_model_rss_is_within_1_2x_packed_plus_dense() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("no /proc: skipping the RSS measurement");
        return;
    }
    let mut cfg = Config::tritter_tiny();
    cfg.hidden_size = 1024;
    cfg.intermediate_size = 2752;
    cfg.num_layers = 8;
    cfg.num_heads = 8;
    cfg.num_kv_heads = 4;
    cfg.head_dim = 128;
    let before = rss_bytes();
    let mut src = RandomSource::new(3, &Device::Cpu);
    let m = Transformer::load(&cfg, &mut src, &Device::Cpu).unwrap();
    let delta = rss_bytes().saturating_sub(before);
    let (packed, dense) = m.weight_bytes();
    // 2 bits per ternary weight (plus block scales/padding of the kernel layout).
    let ternary = cfg.ternary_params();
    assert!(
        packed >= ternary / 4 && packed <= ternary / 4 * 11 / 10,
        "{packed} vs {ternary}"
    );
    let want = (packed + dense) as f64;
    eprintln!(
        "RSS delta {:.1} MB for packed {:.1} MB + dense {:.1} MB: {:.3}×",
        delta as f64 / 1e6,
        packed as f64 / 1e6,
        dense as f64 / 1e6,
        delta as f64 / want
    );
    assert!(
        delta as f64 <= 1.2 * want,
        "RSS grew {delta} bytes for {want}"
    );
    assert!(
        delta as f64 >= 0.8 * want,
        "weights not resident? {delta} for {want}"
    );
    drop(m);
}
