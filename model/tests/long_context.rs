//! Long-context quality of the inference caches, measured on a model directory
//! (`TRITTER_MODEL_DIR`, default: the golden `packed_tied_gqa` checkpoint) over a long text
//! (the crate's own sources, tokenized with the model's `tokenizer.json` when it has one):
//! - mean KL(f16 cache ‖ INT4 cache) of next-token distributions, full attention;
//! - teacher-forced perplexity over 3× a rolling window with and without attention sinks, next to
//!   full attention.
//!
//! Run: `cargo test -p tritter-model --test long_context -- --ignored --nocapture`
//! (`TRITTER_WINDOW` sets the window, default 256).

use candle_core::Device;
use std::path::{Path, PathBuf};
use tritter_model::attn::KvKind;
use tritter_model::{load_model, CacheOptions, CpuModel, HeadKind, Transformer};

fn model_dir() -> PathBuf {
    match std::env::var_os("TRITTER_MODEL_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/packed_tied_gqa"),
    }
}

fn long_text() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn token_ids(dir: &Path, vocab: usize, n: usize) -> Vec<u32> {
    let tok = dir.join("tokenizer.json");
    let ids: Vec<u32> = if tok.exists() {
        let t = tokenizers::Tokenizer::from_file(&tok).unwrap();
        t.encode(long_text(), false).unwrap().get_ids().to_vec()
    } else {
        long_text()
            .bytes()
            .map(|b| b as u32 % vocab as u32)
            .collect()
    };
    assert!(ids.len() >= n, "text has {} tokens, need {n}", ids.len());
    ids[..n].to_vec()
}

fn log_softmax(l: &[f32]) -> Vec<f64> {
    let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = l.iter().map(|&x| (x as f64 - m).exp()).sum();
    l.iter().map(|&x| x as f64 - m - s.ln()).collect()
}

/// Next-token log-probabilities at every position, decoding token by token.
fn run(m: &Transformer, ids: &[u32], opts: &CacheOptions) -> Vec<Vec<f64>> {
    let mut cpu = CpuModel::with_options(m, opts, HeadKind::F32).unwrap();
    ids.iter()
        .map(|&id| log_softmax(&cpu.forward(&[id], false).unwrap()))
        .collect()
}

fn ppl(lp: &[Vec<f64>], ids: &[u32]) -> f64 {
    let n = ids.len() - 1;
    let nll: f64 = (0..n).map(|i| -lp[i][ids[i + 1] as usize]).sum();
    (nll / n as f64).exp()
}

#[test]
#[ignore = "measurement; run with --ignored --nocapture"]
fn long_context_quality() {
    let dir = model_dir();
    let m = load_model(&dir, &Device::Cpu).unwrap().model;
    let vocab = m.config().vocab_size;
    let window: usize = std::env::var("TRITTER_WINDOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let n = 3 * window;
    let ids = token_ids(&dir, vocab, n);
    let opts = |kind: KvKind, window: usize, sinks: usize| CacheOptions {
        kind,
        window,
        sinks,
    };
    let f16 = run(&m, &ids, &opts(KvKind::F16, 0, 0));
    let int4 = run(&m, &ids, &opts(KvKind::INT4, 0, 0));
    let kl: f64 = f16
        .iter()
        .zip(&int4)
        .map(|(p, q)| p.iter().zip(q).map(|(a, b)| a.exp() * (a - b)).sum::<f64>())
        .sum::<f64>()
        / n as f64;
    let full = ppl(&f16, &ids);
    let no_sinks = ppl(&run(&m, &ids, &opts(KvKind::F16, window, 0)), &ids);
    let sinks = ppl(&run(&m, &ids, &opts(KvKind::F16, window, 4)), &ids);
    let sinks_int4 = ppl(&run(&m, &ids, &opts(KvKind::INT4, window, 4)), &ids);
    println!(
        "model {}: {n} tokens, mean KL(f16 || int4) = {kl:.3e} nats; perplexity full {full:.3}, \
         window {window} no sinks {no_sinks:.3}, window {window} + 4 sinks {sinks:.3}, \
         same with int4 {sinks_int4:.3}, int4 full {:.3}",
        dir.file_name().map_or("?".into(), |s| s.to_string_lossy()),
        ppl(&int4, &ids),
    );
    assert!(kl.is_finite() && kl >= 0.0);
    for p in [full, no_sinks, sinks, sinks_int4] {
        assert!(p.is_finite() && p >= 1.0);
    }
}
