//! Decode speed and cache memory of trained models at long contexts, for the layer-kind study
//! (docs/RESEARCH.md, issue #23): each model decodes on the candle path (the one that runs
//! hybrid layers), its attention layers' caches filled to 4K, 32K and 128K positions
//! (`TensorKvCache::pad_attention`: 64 real tokens, then random keys and values — a step's cost
//! does not depend on their values), and the next tokens are timed one by one.
//!
//! ```text
//! cargo run --release -p tritter-model --example hybrid_decode -- [--json] DIR...
//! ```
//!
//! Prints, per model and context: milliseconds per token (the median of 15 steps), tokens/s, and the cache's bytes split
//! into attention keys/values and recurrent states (f32, as the candle path keeps them on the
//! CPU). Attention runs over the whole context: the study's question is what a layer costs when
//! it must see everything, and the candle path applies no window.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde_json::json;
use tritter_model::config::LayerKind;
use tritter_model::decoder_candle::CandleDecoder;
use tritter_model::weights::CheckpointSource;
use tritter_model::{Config, TensorStore, Transformer};

const CONTEXTS: [usize; 3] = [4096, 32_768, 131_072];
const PREFILL: usize = 64;
const WARM: usize = 2;
const TIMED: usize = 15;

fn load(dir: &Path, max_pos: usize) -> tritter_model::Result<Transformer> {
    let mut config = Config::from_json_file(&dir.join("config.json"))?;
    config.max_position_embeddings = max_pos;
    config.sliding_window_size = 0;
    let store = TensorStore::load_dir(dir, &Device::Cpu)?;
    let mut src = CheckpointSource::new(store, &config);
    Transformer::load(&config, &mut src, &Device::Cpu)
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// One model at one context: (ms per token, attention bytes, state bytes).
fn measure(model: &Transformer, context: usize) -> tritter_model::Result<(f64, usize, usize)> {
    let cfg = model.config().clone();
    let vocab = cfg.vocab_size as u32;
    let mut dec = CandleDecoder::new(model);
    let ids: Vec<u32> = (0..PREFILL as u32).map(|i| (i * 7 + 3) % vocab).collect();
    dec.forward(&ids, false)?;
    dec.cache_mut()
        .pad_attention(context - PREFILL - WARM - TIMED)?;
    let mut next = 1u32;
    for _ in 0..WARM {
        dec.forward(&[next], false)?;
        next = (next * 31 + 7) % vocab;
    }
    // The median step: robust to another process taking the core for a moment.
    let mut times = Vec::with_capacity(TIMED);
    for _ in 0..TIMED {
        let t0 = Instant::now();
        dec.forward(&[next], false)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        next = (next * 31 + 7) % vocab;
    }
    times.sort_by(f64::total_cmp);
    let ms = times[TIMED / 2];
    let (mut kv, mut state) = (0, 0);
    let schedule = cfg.layer_schedule(model.iterations());
    for (slot, &layer) in schedule.iter().enumerate() {
        let b = dec.cache().layer_bytes(slot);
        match cfg.layer_kind(layer) {
            LayerKind::Attention => kv += b,
            _ => state += b,
        }
    }
    Ok((ms, kv, state))
}

fn main() -> tritter_model::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let as_json = args.iter().any(|a| a == "--json");
    let dirs: Vec<PathBuf> = args
        .iter()
        .filter(|a| *a != "--json")
        .map(PathBuf::from)
        .collect();
    if dirs.is_empty() {
        eprintln!("usage: hybrid_decode [--json] MODEL_DIR...");
        std::process::exit(2);
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    let mut rows = Vec::new();
    for dir in &dirs {
        let model = load(dir, CONTEXTS[CONTEXTS.len() - 1] + 256)?;
        let name = dir
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        for &context in &CONTEXTS {
            let (ms, kv, state) = measure(&model, context)?;
            if !as_json {
                println!(
                    "{name:>16} {context:>7} tokens: {ms:8.2} ms/token ({:7.1} tok/s), \
                     KV {:.1} MB, states {:.2} MB",
                    1e3 / ms,
                    kv as f64 / 1e6,
                    state as f64 / 1e6
                );
            }
            rows.push(json!({
                "model": name, "context": context, "ms_per_token": ms, "tok_per_s": 1e3 / ms,
                "kv_bytes": kv, "state_bytes": state,
            }));
        }
    }
    if as_json {
        let out = json!({
            "cpu": cpu_name(), "threads": threads, "path": "candle (f32 caches)",
            "timed_tokens": TIMED, "results": rows,
        });
        println!("{out}");
    }
    Ok(())
}
