//! Latent mode in the engine on a tiny random checkpoint with a `latent.json`: the streamed reply
//! and thoughts against `generate_latent` run directly and a naive cosine scan of the embedding
//! table; token mode on a latent-trained model against `<bot><eot>` with no thought; `auto` and
//! `on` without a spec, on a GPU, and with a confidence threshold every chain fails.

use std::ops::ControlFlow;

use candle_core::{DType, Device};
use tritter_model::latent::generate_latent;
use tritter_model::{GenerateOptions, SamplingParams, Segment};

use super::super::tests::{checkpoint, request};
use super::*;
use crate::engine::chat_format::ChatFormat;
use crate::engine::Engine;

const SPEC: LatentSpec = LatentSpec {
    thoughts_per_step: 1,
    stages: 3,
};

/// An engine over a tiny random checkpoint (with `latent.json` when `spec`) and its tokenizer.
fn engine(dir: &std::path::Path, spec: bool) -> (ModelEngine, tokenizers::Tokenizer) {
    let tk = checkpoint(dir);
    if spec {
        SPEC.save(dir).unwrap();
    }
    (ModelEngine::load_dir(dir, &Device::Cpu, "cpu").unwrap(), tk)
}

fn ask(mode: LatentMode, min_cosine: f32) -> GenRequest {
    let mut r = request(20);
    r.latent = mode;
    r.latent_min_cosine = min_cosine;
    r
}

/// What the engine sent: the reply's text, the thoughts, the notices, `Done`'s thought count.
struct Reply {
    text: String,
    thoughts: Vec<Vec<ThoughtToken>>,
    notices: Vec<String>,
    fed: usize,
}

fn run(eng: &mut ModelEngine, req: &GenRequest) -> anyhow::Result<Reply> {
    let mut r = Reply {
        text: String::new(),
        thoughts: vec![],
        notices: vec![],
        fed: usize::MAX,
    };
    eng.generate(req, &AtomicBool::new(false), &mut |e| match e {
        GenEvent::Token { text } => r.text.push_str(&text),
        GenEvent::Thought { index, candidates } => {
            assert_eq!(index, r.thoughts.len());
            r.thoughts.push(candidates);
        }
        GenEvent::Notice(n) => r.notices.push(n),
        GenEvent::Done { thoughts, .. } => r.fed = thoughts,
        GenEvent::Prompt { .. } | GenEvent::Error(_) => {}
    })?;
    Ok(r)
}

/// The reply and thought vectors of `generate_latent` with `k` thoughts, run on the model
/// crate directly with the engine's prompt, stop tokens and sampling.
fn direct(dir: &std::path::Path, tk: &tokenizers::Tokenizer, k: usize) -> (String, Vec<Vec<f32>>) {
    let text = ChatFormat::tritter().render(&request(20).messages).unwrap();
    let ids = tk.encode(text, false).unwrap().get_ids().to_vec();
    let ck = tritter_model::load_model(dir, &Device::Cpu).unwrap();
    let id = |t: &str| tk.token_to_id(t).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 20,
        sampling: SamplingParams {
            repetition_penalty: 1.1,
            ..SamplingParams::greedy()
        },
        stop_tokens: vec![id("<|end|>"), id("<|eos|>")],
    };
    let latent = LatentOptions {
        thoughts: k,
        bot: id("<bot>"),
        eot: id("<eot>"),
    };
    let mut cpu = CpuModel::new(&ck.model).unwrap();
    let out = generate_latent(
        &mut cpu,
        &[Segment::Tokens(ids)],
        &latent,
        &opts,
        &AtomicBool::new(false),
        |_| {},
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    (tk.decode(&out.stats.generated, true).unwrap(), out.thoughts)
}

/// Every embedding row's cosine with `t`, in f64, sorted by (-cosine, id).
fn naive(dir: &std::path::Path, t: &[f32]) -> Vec<(u32, f64)> {
    let ck = tritter_model::load_model(dir, &Device::Cpu).unwrap();
    let e = ck.model.embeddings().to_dtype(DType::F32).unwrap();
    let rows: Vec<Vec<f32>> = e.to_vec2().unwrap();
    let dot =
        |a: &[f32], b: &[f32]| -> f64 { a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum() };
    let mut all: Vec<(u32, f64)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u32, dot(r, t) / (dot(r, r).sqrt() * dot(t, t).sqrt())))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all
}

#[test]
fn latent_mode_streams_the_reply_and_each_thoughts_nearest_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut eng, tk) = engine(tmp.path(), true);
    assert_eq!(eng.info().latent, Some(SPEC));
    assert!(eng.info().description.contains("latent-trained"));
    for mode in [LatentMode::On, LatentMode::Auto] {
        let got = run(&mut eng, &ask(mode, 0.0)).unwrap();
        let (text, vectors) = direct(tmp.path(), &tk, SPEC.max_thoughts());
        assert_eq!(got.text, text);
        assert!(!text.is_empty());
        assert_eq!(got.fed, 3);
        assert!(got.notices.is_empty(), "{:?}", got.notices);
        assert_eq!(got.thoughts.len(), 3);
        for (shown, v) in got.thoughts.iter().zip(&vectors) {
            let want = naive(tmp.path(), v);
            assert_eq!(shown.len(), 3);
            for (s, w) in shown.iter().zip(&want) {
                assert_eq!(s.id, w.0, "{shown:?} vs {:?}", &want[..3]);
                assert!((s.score as f64 - w.1).abs() < 1e-5, "{s:?} vs {w:?}");
                assert_eq!(s.token, tk.decode(&[s.id], false).unwrap());
            }
        }
    }
}

#[test]
fn token_mode_on_a_latent_trained_model_writes_after_bot_eot() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut eng, tk) = engine(tmp.path(), true);
    let got = run(&mut eng, &ask(LatentMode::Off, 0.0)).unwrap();
    assert_eq!((got.fed, got.thoughts.len()), (0, 0));
    assert_eq!(got.text, direct(tmp.path(), &tk, 0).0);
}

#[test]
fn auto_without_a_spec_answers_in_token_mode_with_one_notice() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut eng, _) = engine(tmp.path(), false);
    let plain = run(&mut eng, &ask(LatentMode::Off, 0.1)).unwrap();
    let first = run(&mut eng, &ask(LatentMode::Auto, 0.1)).unwrap();
    assert_eq!(first.text, plain.text);
    assert_eq!((first.fed, first.thoughts.len()), (0, 0));
    assert_eq!(first.notices.len(), 1, "{:?}", first.notices);
    assert!(
        first.notices[0].contains("not latent-trained") && first.notices[0].contains("token mode"),
        "{}",
        first.notices[0]
    );
    // Said once per session.
    let second = run(&mut eng, &ask(LatentMode::Auto, 0.1)).unwrap();
    assert!(second.notices.is_empty());
    assert_eq!(second.text, plain.text);
}

#[test]
fn on_without_a_spec_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut eng, _) = engine(tmp.path(), false);
    let mut events = 0;
    let e = eng
        .generate(
            &ask(LatentMode::On, 0.1),
            &AtomicBool::new(false),
            &mut |_| events += 1,
        )
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("not latent-trained") && e.contains("/latent off"),
        "{e}"
    );
    assert_eq!(events, 0);
}

#[test]
fn a_degraded_chain_falls_back_in_auto_and_is_reported_in_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut eng, tk) = engine(tmp.path(), true);
    // No cosine reaches 1.5: every chain counts as degraded.
    let auto = run(&mut eng, &ask(LatentMode::Auto, 1.5)).unwrap();
    assert_eq!(auto.thoughts.len(), 3, "the thoughts are still shown");
    assert_eq!(auto.notices.len(), 1, "{:?}", auto.notices);
    let n = &auto.notices[0];
    assert!(
        n.contains("degraded") && n.contains("token mode") && n.contains("1.50"),
        "{n}"
    );
    assert_eq!(auto.fed, 0);
    assert_eq!(auto.text, direct(tmp.path(), &tk, 0).0);

    let on = run(&mut eng, &ask(LatentMode::On, 1.5)).unwrap();
    assert!(on.notices[0].contains("degraded") && on.notices[0].contains("anyway"));
    assert_eq!(on.fed, 3);
    assert_eq!(on.text, direct(tmp.path(), &tk, 3).0);

    // The weakest thought is named with its score.
    let weakest = auto
        .thoughts
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c[0].score))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert!(n.contains(&format!("thought {}'s", weakest.0 + 1)), "{n}");
    assert!(n.contains(&format!("{:.2}", weakest.1)), "{n}");
}

#[test]
fn the_signal_counts_a_chain_degraded_only_under_the_threshold() {
    assert_eq!(degraded(None, 0.5), None);
    assert_eq!(degraded(Some((0, 0.3)), 0.0), None);
    assert_eq!(degraded(Some((0, 0.3)), 0.2), None);
    let why = degraded(Some((2, 0.1)), 0.2).unwrap();
    assert!(why.contains("thought 3's") && why.contains("0.10"), "{why}");
}
