//! The model on CUDA against the CPU and Hugging Face (feature `cuda`; needs an NVIDIA GPU):
//! logits of the golden fixtures, incremental decode (graph replay), a rolling window with sinks
//! on the built-in model, the fast settings (INT4 cache, f16 head), and latent mode's hidden-state
//! steps. Without a GPU each test
//! prints why it did nothing, unless `TRITTER_REQUIRE_GPU=1` (set by scripts/gpu-check.sh).
#![cfg(feature = "cuda")]

use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use tritter_kernels::cuda::{Gpu, GpuKvKind};
use tritter_model::attn::AttentionMode;
use tritter_model::gpu::{GpuModel, GpuOptions};
use tritter_model::{load_model, CacheOptions, CpuModel, HeadKind, Transformer};

fn gpu() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var("TRITTER_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("TRITTER_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("no CUDA device ({e}); skipping");
            None
        }
    }
}

/// The repository root: `TRITTER_ROOT` (a prebuilt test binary run from another checkout, as
/// scripts/gpu-check.sh does), else the source tree this was built from.
fn root() -> PathBuf {
    match std::env::var_os("TRITTER_ROOT") {
        Some(r) => PathBuf::from(r),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// max |a - b| / max |b|.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let m = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    d / m.max(1e-12)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

const CASES: [&str; 5] = [
    "packed_tied_gqa",
    "packed_untied_mha",
    "packed_auto_offline",
    "online_tied",
    "online_untied",
];

#[test]
fn golden_logits_on_cuda_match_hf_and_cpu() {
    let Some(_) = gpu() else { return };
    for case in CASES {
        let dir = root().join("tests/golden").join(case);
        let exp =
            candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
        let ids: Vec<u32> = exp["ids"].to_dtype(DType::U32).unwrap().to_vec1().unwrap();
        let want: Vec<f32> = exp["logits"].flatten_all().unwrap().to_vec1().unwrap();
        let ck = load_model(&dir, &Device::Cpu).unwrap();
        let v = ck.config.vocab_size;
        let mut m = GpuModel::new(&ck.model, GpuOptions::reference(&ck.config), 0).unwrap();
        // One pass over all positions.
        let all = m.forward(&ids, true).unwrap();
        let e_hf = rel(&all, &want);
        // Incremental: half as a prefill, then single-token steps (graph replay).
        m.reset().unwrap();
        let split = ids.len() / 2;
        let mut rows = m.forward(&ids[..split], true).unwrap();
        for &id in &ids[split..] {
            rows.extend(m.forward(&[id], false).unwrap());
        }
        let e_inc = rel(&rows, &want);
        // CPU inference path on the same ids.
        let mut cpu_model = CpuModel::new(&ck.model).unwrap();
        let mut cpu = vec![];
        for &id in &ids {
            cpu.extend(cpu_model.forward(&[id], false).unwrap());
        }
        let e_cpu = rel(&all, &cpu);
        eprintln!(
            "{case}: CUDA vs HF {e_hf:.2e}, incremental vs HF {e_inc:.2e}, CUDA vs CPU {e_cpu:.2e}, graph {}",
            m.uses_graph()
        );
        assert!(e_hf <= 1e-3, "{case}: CUDA vs HF {e_hf}");
        assert!(e_inc <= 1e-3, "{case}: incremental vs HF {e_inc}");
        assert!(e_cpu <= 1e-3, "{case}: CUDA vs CPU {e_cpu}");
        let t = ids.len();
        for r in 0..t {
            assert_eq!(
                argmax(&all[r * v..][..v]),
                argmax(&want[r * v..][..v]),
                "{case}: argmax at {r}"
            );
        }
    }
}

fn default_model() -> Transformer {
    load_model(&root().join("assets/default-model"), &Device::Cpu)
        .unwrap()
        .model
}

fn text_ids(n: usize) -> Vec<u32> {
    // A deterministic token walk over the vocabulary (no tokenizer needed).
    (0..n).map(|i| ((i * 7919 + 13) % 7999) as u32).collect()
}

/// A window of 128 rolled over 600 tokens. Without sinks the GPU (f32 cache) equals the CPU's
/// rolling f32 cache step by step. With 4 sinks the two paths place sink keys differently (the
/// GPU shifts them to their StreamingLLM position per query, as the kernel test checks against
/// the naive statement; the CPU cache shifts by whole evicted blocks and not during prefill), so
/// there the INT4 + f16-head settings are compared with the GPU's own f32 reference.
#[test]
fn rolling_window_matches_cpu_and_int4_stays_close() {
    let Some(_) = gpu() else { return };
    let model = default_model();
    let cfg = model.config().clone();
    let ids = text_ids(600);
    let mut cpu = CpuModel::with_options(
        &model,
        &CacheOptions {
            kind: tritter_model::attn::KvKind::F32,
            window: 128,
            sinks: 0,
        },
        HeadKind::F32,
    )
    .unwrap();
    let mut opts = GpuOptions::reference(&cfg);
    opts.window = 128;
    opts.sinks = 0;
    opts.max_chunk = 256;
    let mut g = GpuModel::new(&model, opts.clone(), 0).unwrap();
    let cpu0 = cpu.forward(&ids[..200], false).unwrap();
    let g0 = g.forward(&ids[..200], false).unwrap();
    let mut worst = rel(&g0, &cpu0);
    for &id in &ids[200..] {
        let c = cpu.forward(&[id], false).unwrap();
        let a = g.forward(&[id], false).unwrap();
        worst = worst.max(rel(&a, &c));
    }
    eprintln!("window 128, no sinks, 600 tokens: CUDA f32 cache vs CPU max rel {worst:.2e}");
    // Over 400 dependent steps, float summation order flips an occasional int8 activation code
    // between the two paths (measured on an H200: 3.0e-3); short sequences agree to ~3e-7.
    assert!(worst <= 1e-2, "f32 cache: {worst}");

    opts.sinks = 4;
    opts.max_chunk = 64;
    let mut r = GpuModel::new(&model, opts.clone(), 0).unwrap();
    let mut fast = GpuModel::new(
        &model,
        GpuOptions {
            kv: GpuKvKind::Int4,
            head_f16: true,
            ..opts
        },
        0,
    )
    .unwrap();
    r.forward(&ids[..200], false).unwrap();
    fast.forward(&ids[..200], false).unwrap();
    let (mut worst_fast, mut agree, mut n) = (0f32, 0usize, 0usize);
    for &id in &ids[200..] {
        let a = r.forward(&[id], false).unwrap();
        let b = fast.forward(&[id], false).unwrap();
        worst_fast = worst_fast.max(rel(&b, &a));
        agree += usize::from(argmax(&b) == argmax(&a));
        n += 1;
    }
    eprintln!(
        "window 128 + 4 sinks: INT4 cache + f16 head vs f32 cache + f32 head max rel {worst_fast:.2e}, argmax agreement {agree}/{n}"
    );
    assert!(worst_fast <= 0.1, "INT4 cache + f16 head: {worst_fast}");
    assert!(agree * 10 >= n * 9, "argmax agreement {agree}/{n}");
}

/// Largest relative logit error of grouped attention against the plain path: it reorders float
/// sums; with an INT4 cache and an f16 head it moved these logits by up to 1.21e-2 on an H200
/// (2026-12-01). It is off by default, so it is held to its own bound, not the default's.
const GROUPED_BOUND: f32 = 2.5e-2;

/// The default speed options (the variants verified on a GPU, fused residual add) and every
/// bit-identical option together give the plain path's INT4/f16-head logits bit for bit over a
/// prefill and graph-replayed decode, on the built-in model and on a golden fixture with GQA;
/// grouped attention (float sums reordered) stays within [`GROUPED_BOUND`] and 95% argmax.
#[test]
fn speed_options_give_identical_logits() {
    let Some(probe) = gpu() else { return };
    let ck = load_model(&root().join("tests/golden/packed_tied_gqa"), &Device::Cpu).unwrap();
    for (model, n) in [(default_model(), 300usize), (ck.model, 40)] {
        let cfg = model.config().clone();
        let ids: Vec<u32> = text_ids(n)
            .iter()
            .map(|&i| i % cfg.vocab_size as u32)
            .collect();
        let run = |opts: GpuOptions| -> Vec<f32> {
            let mut m = GpuModel::new(&model, opts, 0).unwrap();
            let mut out = m.forward(&ids[..n / 2], true).unwrap();
            for &id in &ids[n / 2..] {
                out.extend(m.forward(&[id], false).unwrap());
            }
            out
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let base = run(GpuOptions::fast(&cfg).plain());
        assert!(
            bits(&run(GpuOptions::fast(&cfg))) == bits(&base),
            "default speed options: logits differ from the plain path ({n} tokens)"
        );
        let mut tuned = GpuOptions::fast(&cfg).tuned();
        tuned.tuning = probe.runnable(tuned.tuning).unwrap();
        if !tuned.tuning.pdl {
            eprintln!("no programmatic dependent launch here");
        }
        let mut exact = tuned.clone();
        exact.tuning.attn_group = false;
        assert!(
            bits(&run(exact)) == bits(&base),
            "tuned logits differ ({n} tokens)"
        );
        let grouped = run(tuned);
        let v = cfg.vocab_size;
        let (mut worst, mut agree) = (0f32, 0usize);
        for (a, b) in grouped.chunks(v).zip(base.chunks(v)) {
            worst = worst.max(rel(a, b));
            agree += usize::from(argmax(a) == argmax(b));
        }
        let rows = base.len() / v;
        eprintln!(
            "{n} tokens, grouped attention vs plain: max rel {worst:.2e} (bound {GROUPED_BOUND:.1e}), argmax {agree}/{rows}"
        );
        assert!(worst <= GROUPED_BOUND, "grouped attention: {worst}");
        assert!(agree * 20 >= rows * 19, "argmax agreement {agree}/{rows}");
    }
}

/// Issue #19, items 4 and 5 on a device: the chat decoder's cache is sized to the free device
/// memory (INT4, the whole context of the built-in model) and says so; a model whose
/// attention mode the GPU kernels do not mask is refused by name, not decoded causally.
#[test]
fn chat_decoder_is_sized_to_the_device_and_non_causal_modes_are_refused() {
    let Some(g) = gpu() else { return };
    let (free, _) = g.mem_info().unwrap();
    drop(g);
    let model = default_model();
    let cfg = model.config().clone();
    let compute = tritter_model::device::Compute::Cuda(0);
    let d = tritter_model::decoder::open(&model, compute, tritter_model::Profile::Fast).unwrap();
    let fit = d
        .gpu_fit()
        .expect("the chat decoder is sized to the device")
        .clone();
    eprintln!("built-in model on {}: {}", d.device_name(), fit.summary());
    assert_eq!(
        (fit.kv.as_str(), fit.window),
        ("Int4", cfg.sliding_window_size)
    );
    assert_eq!(fit.context, cfg.max_position_embeddings);
    assert!(
        fit.free <= free as u64 + (64 << 20),
        "{} vs {free}",
        fit.free
    );
    assert!(fit.plan.total + tritter_model::plan_gpu::GPU_HEADROOM_BYTES <= fit.free);
    drop(d);
    for mode in [
        AttentionMode::Bidirectional,
        AttentionMode::PrefixLm,
        AttentionMode::Embedding,
    ] {
        let mut c = cfg.clone();
        c.attention_mode = mode;
        let mut src = tritter_model::random::RandomSource::new(3, &Device::Cpu);
        let m = Transformer::load(&c, &mut src, &Device::Cpu).unwrap();
        let e = GpuModel::new(&m, GpuOptions::fast(&c), 0).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("attention_mode {}", mode.name())),
            "{e}"
        );
    }
}

/// Latent mode on CUDA (issue #16): the final hidden state of a prompt, three thoughts each fed
/// back as the next input embedding, then tokens again, against the CPU path doing the same
/// (each path feeds back its own states); the GPU's hidden state is read after the final norm,
/// as the CPU's.
#[test]
fn latent_steps_on_cuda_match_cpu() {
    let Some(_) = gpu() else { return };
    let ck = load_model(&root().join("tests/golden/packed_tied_gqa"), &Device::Cpu).unwrap();
    let cfg = ck.config.clone();
    let ids: Vec<u32> = text_ids(24)
        .into_iter()
        .map(|i| i % cfg.vocab_size as u32)
        .collect();
    let mut cpu = CpuModel::new(&ck.model).unwrap();
    let mut g = GpuModel::new(&ck.model, GpuOptions::reference(&cfg), 0).unwrap();
    let (mut hc, mut hg) = (
        cpu.forward_hidden(&ids).unwrap(),
        g.forward_hidden(&ids).unwrap(),
    );
    assert_eq!(hg.len(), cfg.hidden_size);
    let mut worst = rel(&hg, &hc);
    for _ in 0..3 {
        hc = cpu.forward_embeds_hidden(hc).unwrap();
        hg = g.forward_embeds_hidden(hg).unwrap();
        worst = worst.max(rel(&hg, &hc));
    }
    let after_c = cpu.forward(&ids[..3], false).unwrap();
    let after_g = g.forward(&ids[..3], false).unwrap();
    let e_logits = rel(&after_g, &after_c);
    eprintln!("latent chain: hidden max rel {worst:.2e}, logits after it {e_logits:.2e}");
    assert!(worst <= 1e-3, "hidden states: {worst}");
    assert!(e_logits <= 1e-3, "logits after the chain: {e_logits}");
    assert_eq!(argmax(&after_g), argmax(&after_c));
    assert_eq!(g.seen(), ids.len() + 3 + 3);
}

#[test]
fn bad_input_is_an_error() {
    let Some(_) = gpu() else { return };
    let model = default_model();
    let mut g = GpuModel::new(&model, GpuOptions::reference(model.config()), 0).unwrap();
    assert!(g.forward(&[], false).is_err());
    assert!(g.forward(&[9_999_999], false).is_err());
    let mut opts = GpuOptions::reference(model.config());
    opts.window = 0;
    opts.max_context = 16;
    let mut small = GpuModel::new(&model, opts, 0).unwrap();
    let e = small.forward(&text_ids(17), false).unwrap_err();
    assert!(e.to_string().contains("context full"), "{e}");
}
