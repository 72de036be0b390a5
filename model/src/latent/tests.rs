//! The latent loop against token mode (k = 0) and against the full candle forward run by hand on
//! `[prompt embeddings ; fed thoughts ; <eot>]`.

use super::*;
use crate::config::Config;
use crate::generation::generate_segments;
use crate::infer::CpuModel;
use crate::random::RandomSource;
use crate::sampling::SamplingParams;
use crate::transformer::Transformer;
use candle_core::{Device, Tensor};

const BOT: u32 = 7;
const EOT: u32 = 8;

fn tiny() -> Transformer {
    let mut cfg = Config::tritter_tiny();
    cfg.vocab_size = 64;
    cfg.hidden_size = 32;
    cfg.intermediate_size = 64;
    cfg.num_layers = 2;
    cfg.num_heads = 2;
    cfg.num_kv_heads = 1;
    cfg.head_dim = 16;
    cfg.sliding_window_size = 0;
    let mut src = RandomSource::new(3, &Device::Cpu);
    Transformer::load(&cfg, &mut src, &Device::Cpu).unwrap()
}

fn prompt() -> Vec<u32> {
    (0..9).map(|i| (i * 13 + 20) % 64).collect()
}

fn opts(temperature: f32) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 12,
        sampling: SamplingParams {
            temperature,
            seed: 11,
            ..SamplingParams::greedy()
        },
        stop_tokens: vec![],
    }
}

fn latent(k: usize) -> LatentOptions {
    LatentOptions {
        thoughts: k,
        bot: BOT,
        eot: EOT,
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

#[test]
fn zero_thoughts_equal_token_mode() {
    let m = tiny();
    let never = AtomicBool::new(false);
    for temperature in [0.0, 1.0] {
        let mut a = CpuModel::new(&m).unwrap();
        let got = generate_latent(
            &mut a,
            &[Segment::Tokens(prompt())],
            &latent(0),
            &opts(temperature),
            &never,
            |_| panic!("no thought with k = 0"),
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        // Token mode on the same chunks: the prompt, `<bot>`, `<eot>`.
        let mut b = CpuModel::new(&m).unwrap();
        let segs = [
            Segment::Tokens(prompt()),
            Segment::Tokens(vec![BOT]),
            Segment::Tokens(vec![EOT]),
        ];
        let want = generate_segments(&mut b, &segs, &opts(temperature), &never, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(got.thoughts.is_empty());
        assert_eq!(got.stats.generated.len(), 12);
        assert_eq!(
            got.stats.generated, want.generated,
            "temperature {temperature}"
        );
        assert_eq!(got.stats.prompt_tokens, want.prompt_tokens);
        assert_eq!(a.cache().len(), b.cache().len());
        // And the next logits are the same bits.
        let next = *got.stats.generated.last().unwrap();
        assert_eq!(
            a.forward(&[next], false).unwrap(),
            b.forward(&[next], false).unwrap()
        );
    }
}

/// Runs the full candle forward over embedding rows `x` `[T, C]`; returns the final hidden rows
/// and the logits of the last row.
fn full(m: &Transformer, x: &[f32]) -> (Vec<Vec<f32>>, Vec<f32>) {
    let c = m.config().hidden_size;
    let t = Tensor::from_slice(x, (1, x.len() / c, c), &Device::Cpu).unwrap();
    let h = m.hidden_from_embeds(&t).unwrap();
    let logits = m.logits_from_hidden(&h).unwrap().squeeze(0).unwrap();
    let last = logits.dim(0).unwrap() - 1;
    (
        h.squeeze(0).unwrap().to_vec2::<f32>().unwrap(),
        logits.get(last).unwrap().to_vec1::<f32>().unwrap(),
    )
}

fn embed(m: &Transformer, ids: &[u32]) -> Vec<f32> {
    let t = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap();
    m.embed(&t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn latent_steps_equal_the_full_forward_by_hand() {
    let m = tiny();
    let never = AtomicBool::new(false);
    let mut ids = prompt();
    ids.push(BOT);
    for k in [1usize, 3] {
        let mut cpu = CpuModel::new(&m).unwrap();
        let mut seen = vec![];
        let out = generate_latent(
            &mut cpu,
            &[Segment::Tokens(prompt())],
            &latent(k),
            &opts(0.0),
            &never,
            |t| seen.push(t.to_vec()),
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(out.thoughts.len(), k);
        assert_eq!(seen, out.thoughts);
        assert_eq!(out.stats.prompt_tokens, ids.len() + k + 1);
        // By hand: each thought is the last final hidden row of the full forward over what came
        // before it; it is then appended as one more input row.
        let mut x = embed(&m, &ids);
        for (i, thought) in out.thoughts.iter().enumerate() {
            let (h, _) = full(&m, &x);
            let r = rel(thought, h.last().unwrap());
            assert!(r < 1e-4, "k {k}, thought {i}: rel {r}");
            x.extend_from_slice(thought);
        }
        // Then `<eot>`: the first sampled (greedy) token is the argmax of the full forward's
        // logits, and the cached path's logits equal them.
        x.extend(embed(&m, &[EOT]));
        let (_, logits) = full(&m, &x);
        let mut manual = CpuModel::new(&m).unwrap();
        manual.forward(&prompt(), false).unwrap();
        let mut h = manual.forward_hidden(&[BOT]).unwrap();
        for thought in &out.thoughts {
            assert_eq!(&h, thought, "the loop feeds the state it records");
            h = manual.forward_embeds_hidden(h).unwrap();
        }
        let cached = manual.forward(&[EOT], false).unwrap();
        let r = rel(&cached, &logits);
        assert!(r < 1e-4, "k {k}: logits after <eot> rel {r}");
        let argmax = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap() as u32;
        assert_eq!(out.stats.generated[0], argmax);
    }
}

#[test]
fn a_thought_changes_what_follows_and_limits_hold() {
    let m = tiny();
    let never = AtomicBool::new(false);
    let mut cpu = CpuModel::new(&m).unwrap();
    let run = |cpu: &mut CpuModel, k| {
        generate_latent(
            cpu,
            &[Segment::Tokens(prompt())],
            &latent(k),
            &opts(0.0),
            &never,
            |_| {},
            |_| ControlFlow::Continue(()),
        )
    };
    let one = run(&mut cpu, 1).unwrap();
    assert_eq!(cpu.cache().len(), prompt().len() + 3 + 11);
    // The thought is the bot position's hidden state, not a token embedding: the cache after
    // one thought differs from the one after none (the next logits differ).
    let mut zero = CpuModel::new(&m).unwrap();
    zero.forward(&prompt(), false).unwrap();
    zero.forward(&[BOT, EOT], false).unwrap();
    let mut with = CpuModel::new(&m).unwrap();
    with.forward(&prompt(), false).unwrap();
    let h = with.forward_hidden(&[BOT]).unwrap();
    assert_eq!(h, one.thoughts[0]);
    with.forward_embeds_hidden(h).unwrap();
    assert_ne!(
        with.forward(&[EOT], false).unwrap(),
        zero.forward(&[EOT], false).unwrap()
    );
    let limit = m.config().max_position_embeddings;
    let e = run(&mut cpu, limit).unwrap_err();
    assert!(matches!(e, Error::TooLong { .. }), "{e}");
    let stop = AtomicBool::new(true);
    let c = generate_latent(
        &mut cpu,
        &[Segment::Tokens(prompt())],
        &latent(4),
        &opts(0.0),
        &stop,
        |_| {},
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(c.stats.stop, StopReason::Cancelled);
    assert!(c.stats.generated.is_empty() && c.thoughts.is_empty());
}

#[test]
fn a_spec_round_trips_and_its_absence_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(LatentSpec::load(dir.path()).unwrap(), None);
    let spec = LatentSpec {
        thoughts_per_step: 2,
        stages: 3,
    };
    spec.save(dir.path()).unwrap();
    assert_eq!(LatentSpec::load(dir.path()).unwrap(), Some(spec));
    assert_eq!((spec.thoughts_for(1), spec.thoughts_for(5)), (2, 6));
    assert_eq!(spec.max_thoughts(), 6);
    std::fs::write(dir.path().join(SPEC_FILE), "{\"stages\": 1}").unwrap();
    assert!(LatentSpec::load(dir.path()).is_err());
}

#[test]
fn a_gate_sees_the_first_answer_logits_and_can_decline() {
    let m = tiny();
    let never = AtomicBool::new(false);
    let mut cpu = CpuModel::new(&m).unwrap();
    let full = generate_latent(
        &mut cpu,
        &[Segment::Tokens(prompt())],
        &latent(2),
        &opts(0.0),
        &never,
        |_| {},
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    // The logits the gate sees are those the first token is sampled from (greedy: its argmax).
    let mut seen = vec![];
    let open = generate_latent_gated(
        &mut cpu,
        &[Segment::Tokens(prompt())],
        &latent(2),
        &opts(0.0),
        &never,
        |_| {},
        |l| {
            seen = l.to_vec();
            ControlFlow::Continue(())
        },
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(open.stats.generated, full.stats.generated);
    assert_eq!(open.thoughts, full.thoughts);
    assert_eq!(seen.len(), m.config().vocab_size);
    let argmax = (0..seen.len())
        .max_by(|&a, &b| seen[a].total_cmp(&seen[b]).then(b.cmp(&a)))
        .unwrap() as u32;
    assert_eq!(full.stats.generated[0], argmax);
    let declined = generate_latent_gated(
        &mut cpu,
        &[Segment::Tokens(prompt())],
        &latent(2),
        &opts(0.0),
        &never,
        |_| {},
        |_| ControlFlow::Break(()),
        |_| panic!("no token after a declined gate"),
    )
    .unwrap();
    assert_eq!(declined.stats.stop, StopReason::Callback);
    assert!(declined.stats.generated.is_empty());
    assert_eq!(declined.thoughts, full.thoughts);
}
