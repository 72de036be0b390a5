//! The inference path (fused attention over per-layer KV caches) against the candle full forward
//! on the golden HF checkpoints: prefill, token-by-token decode, chunked turns, the f16 head,
//! sliding windows (rolling cache vs windowed prefill), constant memory past the window, and the
//! INT4 cache's divergence from the f32 cache.

use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use tritter_model::attn::KvKind;
use tritter_model::infer::gemv_f16;
use tritter_model::{load_model, CacheOptions, Config, CpuModel, HeadKind, Transformer};

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(case)
}

fn model(case: &str) -> Transformer {
    load_model(&golden(case), &Device::Cpu).unwrap().model
}

fn ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 11) % vocab) as u32).collect()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
}

fn full(m: &Transformer, ids: &[u32]) -> Vec<Vec<f32>> {
    let t = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    rows(&m.forward(&t).unwrap())
}

/// Logits `[T][V]` returned flat by the inference path, as rows.
fn split(flat: Vec<f32>, vocab: usize) -> Vec<Vec<f32>> {
    flat.chunks_exact(vocab).map(<[f32]>::to_vec).collect()
}

/// max |a - b| / max |b| over all rows.
fn rel(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut d = 0f32;
    let mut m = 0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            d = d.max((p - q).abs());
            m = m.max(q.abs());
        }
    }
    d / m.max(1e-12)
}

fn decode_rows(m: &Transformer, ids: &[u32], opts: &CacheOptions) -> Vec<Vec<f32>> {
    decode(
        &mut CpuModel::with_options(m, opts, HeadKind::F32).unwrap(),
        ids,
    )
}

/// Token-by-token logits of a fresh sequence.
fn decode(cpu: &mut CpuModel, ids: &[u32]) -> Vec<Vec<f32>> {
    cpu.reset().unwrap();
    ids.iter()
        .map(|&id| cpu.forward(&[id], false).unwrap())
        .collect()
}

fn f32_opts(window: usize, sinks: usize) -> CacheOptions {
    CacheOptions {
        kind: KvKind::F32,
        window,
        sinks,
    }
}

const CASES: [&str; 4] = [
    "packed_tied_gqa",
    "packed_untied_mha",
    "packed_auto_offline",
    "online_tied",
];

#[test]
fn cached_prefill_matches_full_forward() {
    for case in CASES {
        let m = model(case);
        let ids = ids(48, m.config().vocab_size);
        let want = full(&m, &ids);
        let mut cpu = CpuModel::new(&m).unwrap();
        let got = split(cpu.forward(&ids, true).unwrap(), m.config().vocab_size);
        let e = rel(&got, &want);
        assert!(e <= 1e-4, "{case}: cached prefill error {e}");
        assert_eq!(cpu.cache().seen(), 48);
    }
}

#[test]
fn embeddings_in_match_the_candle_hidden_states_and_logits() {
    let m = model("packed_untied_mha");
    let ids = ids(24, m.config().vocab_size);
    let t = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let x = m.embed(&t).unwrap();
    let want = rows(&m.hidden_from_embeds(&x).unwrap());
    let mut cpu = CpuModel::new(&m).unwrap();
    let got = rows(&cpu.hidden(&x).unwrap());
    let e = rel(&got, &want);
    assert!(e <= 1e-4, "hidden states error {e}");
    cpu.reset().unwrap();
    let flat = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let got = split(
        cpu.forward_embeds(flat, true).unwrap(),
        m.config().vocab_size,
    );
    let e = rel(&got, &full(&m, &ids));
    assert!(e <= 1e-4, "logits from embeddings error {e}");
    assert!(cpu.forward_embeds(vec![0.0; 3], false).is_err());
}

#[test]
fn decode_token_by_token_matches_full_forward() {
    for case in CASES {
        let m = model(case);
        let ids = ids(40, m.config().vocab_size);
        let e = rel(&decode_rows(&m, &ids, &f32_opts(0, 0)), &full(&m, &ids));
        assert!(e <= 1e-4, "{case}: incremental decode error {e}");
    }
}

#[test]
fn chunked_turns_match_full_forward() {
    let m = model("packed_tied_gqa");
    let ids = ids(45, m.config().vocab_size);
    let want = full(&m, &ids);
    let mut cpu = CpuModel::new(&m).unwrap();
    let mut at = 0;
    for n in [7usize, 1, 13, 2, 22] {
        let got = cpu.forward(&ids[at..at + n], false).unwrap();
        at += n;
        let e = rel(&[got], &want[at - 1..at]);
        assert!(e <= 1e-4, "chunk ending at {at}: error {e}");
    }
    assert_eq!(at, ids.len());
}

#[test]
fn f16_head_is_close_to_f32_head() {
    for case in ["packed_tied_gqa", "packed_untied_mha"] {
        let m = model(case);
        let ids = ids(20, m.config().vocab_size);
        let mut cpu = CpuModel::with_options(&m, &f32_opts(0, 0), HeadKind::F32).unwrap();
        let a = decode(&mut cpu, &ids);
        cpu.set_head(HeadKind::parse("f16").unwrap()).unwrap();
        assert_eq!(cpu.head_kind().name(), "f16");
        let b = decode(&mut cpu, &ids);
        let e = rel(&b, &a);
        assert!(e <= 2e-3, "{case}: f16 head error {e}");
        cpu.set_head(HeadKind::parse("int8").unwrap()).unwrap();
        let c = decode(&mut cpu, &ids);
        let e8 = rel(&c, &a);
        assert!(e8 > 0.0 && e8 <= 2e-2, "{case}: int8 head error {e8}");
        assert!(HeadKind::parse("f8").is_err());
    }
}

#[test]
fn gemv_f16_matches_naive() {
    let (r, c) = (37, 300);
    let w: Vec<half::f16> = (0..r * c)
        .map(|i| half::f16::from_f32(((i * 7919) % 201) as f32 / 100.0 - 1.0))
        .collect();
    let x: Vec<f32> = (0..c).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect();
    let mut out = vec![0f32; r];
    gemv_f16(&w, &x, &mut out).unwrap();
    for (i, o) in out.iter().enumerate() {
        let want: f64 = (0..c).map(|j| w[i * c + j].to_f64() * x[j] as f64).sum();
        assert!((*o as f64 - want).abs() <= 1e-3, "row {i}: {o} vs {want}");
    }
    assert!(gemv_f16(&w, &x[1..], &mut out).is_err());
}

#[test]
fn rolling_window_decode_matches_windowed_prefill() {
    let m = model("packed_tied_gqa");
    let ids = ids(40, m.config().vocab_size);
    for window in [8usize, 16] {
        let opts = f32_opts(window, 0);
        let mut cpu = CpuModel::with_options(&m, &opts, HeadKind::F32).unwrap();
        let pre = split(cpu.forward(&ids, true).unwrap(), m.config().vocab_size);
        assert_eq!(cpu.cache().len(), window);
        let dec = decode_rows(&m, &ids, &opts);
        let e = rel(&dec, &pre);
        assert!(e <= 1e-4, "window {window}: rolling decode vs prefill {e}");
        // The window is in effect: positions past it differ from full attention.
        let unwindowed = full(&m, &ids);
        assert!(rel(&dec[..window], &unwindowed[..window]) <= 1e-4);
        assert!(rel(&dec[window + 4..], &unwindowed[window + 4..]) > 1e-3);
    }
}

#[test]
fn memory_is_constant_past_the_window() {
    let m = model("packed_tied_gqa");
    // Blocks of 64 tokens (f16) or 8 (INT4): once two blocks past the window, nothing grows.
    let ids = ids(256, m.config().vocab_size);
    for kind in [KvKind::F16, KvKind::parse("int4-g8-r16").unwrap()] {
        for sinks in [0usize, 4] {
            let opts = CacheOptions {
                kind,
                window: 32,
                sinks,
            };
            let mut cpu = CpuModel::with_options(&m, &opts, HeadKind::F32).unwrap();
            let mut bytes = vec![];
            for (i, &id) in ids.iter().enumerate() {
                let l = cpu.forward(&[id], false).unwrap();
                assert!(l.iter().all(|x| x.is_finite()));
                if i + 1 == 192 || i + 1 == 256 {
                    bytes.push(cpu.cache().bytes());
                }
            }
            assert_eq!(cpu.cache().len(), 32);
            assert_eq!(cpu.cache().seen(), 256);
            assert_eq!(bytes[0], bytes[1], "{kind:?} sinks {sinks}: cache grew");
        }
    }
}

fn log_softmax(l: &[f32]) -> Vec<f64> {
    let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = l.iter().map(|&x| (x as f64 - m).exp()).sum();
    l.iter().map(|&x| x as f64 - m - s.ln()).collect()
}

/// Mean KL(p ‖ q) of next-token distributions.
fn mean_kl(p: &[Vec<f32>], q: &[Vec<f32>]) -> f64 {
    let mut total = 0.0;
    for (a, b) in p.iter().zip(q) {
        let (la, lb) = (log_softmax(a), log_softmax(b));
        total += la
            .iter()
            .zip(&lb)
            .map(|(x, y)| x.exp() * (x - y))
            .sum::<f64>();
    }
    total / p.len() as f64
}

#[test]
fn int4_cache_stays_close_to_f16_cache() {
    let m = model("packed_tied_gqa");
    let ids = ids(200, m.config().vocab_size);
    let f16 = decode_rows(
        &m,
        &ids,
        &CacheOptions {
            kind: KvKind::F16,
            window: 0,
            sinks: 0,
        },
    );
    let int4 = decode_rows(
        &m,
        &ids,
        &CacheOptions {
            kind: KvKind::parse("int4").unwrap(),
            window: 0,
            sinks: 0,
        },
    );
    let kl = mean_kl(&f16, &int4);
    eprintln!("golden packed_tied_gqa, 200 tokens: mean KL(f16 ‖ int4) = {kl:.3e}");
    assert!(kl > 0.0 && kl < 1e-2, "KL {kl}");
}

#[test]
fn cache_options_follow_config() {
    let text = std::fs::read_to_string(golden("packed_tied_gqa").join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["sliding_window_size"] = 64.into();
    v["use_attention_sinks"] = true.into();
    let cfg = Config::from_json_str(&v.to_string()).unwrap();
    let o = CacheOptions::from_config(&cfg);
    assert_eq!((o.kind, o.window, o.sinks), (KvKind::F32, 64, 4));
    v["use_attention_sinks"] = false.into();
    let cfg = Config::from_json_str(&v.to_string()).unwrap();
    assert_eq!(CacheOptions::from_config(&cfg).sinks, 0);
}

/// Attention sinks asked for without a window that can hold them are an error, not a cache
/// that quietly keeps no sinks: in `config.json` (naming the key) and in a hand-made config.
#[test]
fn sinks_without_a_window_are_refused_not_dropped() {
    let text = std::fs::read_to_string(golden("packed_tied_gqa").join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["use_attention_sinks"] = true.into();
    for window in [0, 4] {
        v["sliding_window_size"] = window.into();
        let e = Config::from_json_str(&v.to_string())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "config: key `use_attention_sinks`: needs sliding_window_size above 4 (the sink \
                 tokens are kept inside the rolling window); it is {window}"
            )
        );
    }
    v["sliding_window_size"] = 5.into();
    assert!(Config::from_json_str(&v.to_string()).is_ok());
    for window in [0, 3] {
        let e = CpuModel::new(&small_random(window, true)).err().unwrap();
        assert!(e.to_string().contains("sinks"), "window {window}: {e}");
    }
    let m = CpuModel::new(&small_random(5, true)).unwrap();
    assert_eq!(m.cache().options().sinks, 4);
}

fn small_random(window: usize, sinks: bool) -> Transformer {
    let mut c = Config::tritter_tiny();
    c.vocab_size = 61;
    c.hidden_size = 32;
    c.intermediate_size = 40;
    c.num_layers = 2;
    c.num_heads = 2;
    c.num_kv_heads = 1;
    c.head_dim = 16;
    c.max_position_embeddings = 64;
    c.sliding_window_size = window;
    c.use_attention_sinks = sinks;
    let mut src = tritter_model::random::RandomSource::new(5, &Device::Cpu);
    Transformer::load(&c, &mut src, &Device::Cpu).unwrap()
}

#[test]
fn generation_with_a_window_runs_past_the_context_at_constant_memory() {
    use std::sync::atomic::AtomicBool;
    use tritter_model::{generate, GenerateOptions, SamplingParams, StopReason};
    let opts = GenerateOptions {
        max_new_tokens: 200,
        sampling: SamplingParams::greedy(),
        stop_tokens: vec![],
    };
    let stop = AtomicBool::new(false);
    let full = generate(&small_random(0, false), &[1, 2, 3], &opts, &stop, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(full.stop, StopReason::ContextFull);
    for sinks in [false, true] {
        let m = small_random(16, sinks);
        let s = generate(&m, &[1, 2, 3], &opts, &stop, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!((s.stop, s.generated.len()), (StopReason::MaxTokens, 200));
        // The cache generate uses (from config) holds the window, whatever the length.
        let mut cpu = CpuModel::new(&m).unwrap();
        assert_eq!(cpu.cache().options().sinks, if sinks { 4 } else { 0 });
        let mut sizes = vec![];
        for (i, &t) in s.generated.iter().enumerate() {
            cpu.forward(&[t], false).unwrap();
            if i == 99 || i == 199 {
                sizes.push(cpu.cache().bytes());
            }
        }
        assert_eq!(cpu.cache().len(), 16);
        assert_eq!(sizes[0], sizes[1]);
    }
}
