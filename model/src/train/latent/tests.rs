//! The curriculum's sequences against hand-built ones, the cached chain's loss against full
//! forward passes by hand, its gradient through a chain of two thoughts against central finite
//! differences, and the stage switch as an optimiser reset.

use super::*;
use crate::train::latent_loop::LatentRun;
use candle_core::{Device, Var};
use std::sync::atomic::AtomicBool;

const IDS: LatentIds = LatentIds {
    bot: 40,
    eot: 41,
    latent: 42,
};

fn problem() -> LatentProblem {
    LatentProblem {
        question: vec![1, 2, 3],
        steps: vec![vec![10, 11], vec![12], vec![13, 14]],
        answer: vec![20, 21],
    }
}

#[test]
fn stage_sequences_replace_the_first_steps_with_thoughts() {
    let p = problem();
    let s0 = stage_sequence(&p, 0, 2, &IDS);
    assert_eq!(s0.ids, vec![1, 2, 3, 40, 41, 10, 11, 12, 13, 14, 20, 21]);
    assert_eq!((s0.bot, s0.thoughts, s0.labels.clone()), (3, 0, 5..12));
    let s2 = stage_sequence(&p, 2, 2, &IDS);
    assert_eq!(
        s2.ids,
        vec![1, 2, 3, 40, 42, 42, 42, 42, 41, 13, 14, 20, 21]
    );
    assert_eq!((s2.bot, s2.thoughts, s2.labels.clone()), (3, 4, 9..13));
    // Past the last written step every step is a thought; only the answer is predicted.
    let s5 = stage_sequence(&p, 5, 1, &IDS);
    assert_eq!(s5.ids, vec![1, 2, 3, 40, 42, 42, 42, 41, 20, 21]);
    assert_eq!((s5.thoughts, s5.labels.clone()), (3, 8..10));
    assert_eq!(&s5.ids[s5.labels.clone()], &[20, 21]);
}

fn tiny_cfg() -> Config {
    let mut cfg = Config::tritter_tiny();
    cfg.vocab_size = 48;
    cfg.hidden_size = 16;
    cfg.intermediate_size = 32;
    cfg.num_layers = 2;
    cfg.num_heads = 2;
    cfg.num_kv_heads = 1;
    cfg.head_dim = 8;
    cfg.sliding_window_size = 0;
    cfg
}

/// A deterministic ±1 direction of `shape`.
fn direction(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (s >> 33) & 1 == 1 {
                1.0
            } else {
                -1.0
            }
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn loss_value(cfg: &Config, params: &Params, seq: &StageSequence) -> f64 {
    let text = text_model(cfg, params, false).unwrap();
    latent_loss(&text, &[seq])
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
}

#[test]
fn gradients_through_two_thoughts_match_finite_differences() {
    let cfg = tiny_cfg();
    let params = Params::init(&cfg, 5, 0.3, &Device::Cpu).unwrap();
    let p = LatentProblem {
        question: vec![3, 9, 17, 4, 30],
        steps: vec![vec![5, 6], vec![7, 8]],
        answer: vec![11, 12, 13],
    };
    let seq = stage_sequence(&p, 2, 1, &IDS);
    assert_eq!(seq.thoughts, 2);
    assert_eq!(&seq.ids[seq.labels.clone()], &[11, 12, 13]);
    let text = text_model(&cfg, &params, false).unwrap();
    let grads = chain_loss(&text, &[&seq], false)
        .unwrap()
        .backward()
        .unwrap();
    let cut = chain_loss(&text, &[&seq], true)
        .unwrap()
        .backward()
        .unwrap();
    let mut chain_mattered = 0;
    let names = [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.input_layernorm.weight",
        "model.norm.weight",
    ];
    for (k, name) in names.iter().enumerate() {
        let var: &Var = params.get(name).unwrap();
        let w0 = var.as_tensor().copy().unwrap();
        let v = direction(w0.dims(), 17 + k as u64);
        let dot = |g: &Tensor| -> f64 {
            (g * &v)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let analytic = dot(grads.get(var.as_tensor()).unwrap());
        let detached = dot(cut.get(var.as_tensor()).unwrap());
        let eps = 1e-3;
        var.set(&(&w0 + (&v * eps).unwrap()).unwrap()).unwrap();
        let up = loss_value(&cfg, &params, &seq);
        var.set(&(&w0 - (&v * eps).unwrap()).unwrap()).unwrap();
        let down = loss_value(&cfg, &params, &seq);
        var.set(&w0).unwrap();
        let fd = (up - down) / (2.0 * eps);
        let err = (analytic - fd).abs() / fd.abs().max(1e-3);
        assert!(
            err < 1e-2,
            "{name}: analytic {analytic} vs finite differences {fd} (rel {err})"
        );
        // Cutting the chain at the thoughts changes the gradient by more than the tolerance:
        // the match above is not the no-thought path's alone.
        if (detached - fd).abs() / fd.abs().max(1e-3) > 0.1 {
            chain_mattered += 1;
        }
    }
    assert!(chain_mattered >= 3, "the chain's gradient barely mattered");
}

/// The loss of one sequence computed by hand: each thought is the last row of a full
/// (non-cached) forward over the embeddings so far, then one full forward over everything, and
/// the cross-entropy of the labelled ids from the rows before them.
fn loss_by_hand(text: &Transformer, s: &StageSequence) -> f32 {
    let ids = Tensor::from_slice(&s.ids, (1, s.ids.len()), &Device::Cpu).unwrap();
    let emb = text.embed(&ids).unwrap();
    let mut x = emb.narrow(1, 0, s.bot + 1).unwrap();
    for _ in 0..s.thoughts {
        let h = text.hidden_from_embeds(&x).unwrap();
        let last = h.narrow(1, h.dim(1).unwrap() - 1, 1).unwrap();
        x = Tensor::cat(&[&x, &last], 1).unwrap();
    }
    let rest = s.bot + 1 + s.thoughts;
    let tail = emb.narrow(1, rest, s.ids.len() - rest).unwrap();
    x = Tensor::cat(&[&x, &tail], 1).unwrap();
    let logits = text.forward_embeds(&x).unwrap().squeeze(0).unwrap();
    let rows = logits.to_vec2::<f32>().unwrap();
    let mut sum = 0f64;
    for j in s.labels.clone() {
        let row = &rows[j - 1];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        sum += lse - row[s.ids[j] as usize] as f64;
    }
    (sum / s.labels.len() as f64) as f32
}

#[test]
fn the_cached_chain_equals_full_forward_passes_by_hand() {
    let cfg = tiny_cfg();
    let params = Params::init(&cfg, 2, 0.3, &Device::Cpu).unwrap();
    let p = LatentProblem {
        question: vec![3, 9, 17, 4, 30, 2],
        steps: vec![vec![5, 6], vec![7], vec![8, 9, 10]],
        answer: vec![11, 12, 13],
    };
    for ternary in [false, true] {
        let text = text_model(&cfg, &params, ternary).unwrap();
        for (stage, c) in [(0, 1), (1, 1), (2, 2), (3, 1), (4, 2)] {
            let seq = stage_sequence(&p, stage, c, &IDS);
            let got = latent_loss(&text, &[&seq])
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let want = loss_by_hand(&text, &seq);
            assert!(
                (got - want).abs() <= 1e-4 * want.abs(),
                "ternary {ternary}, stage {stage}, c {c}: {got} vs {want}"
            );
        }
        // A batch is the mean over all its labelled ids.
        let (a, b) = (
            stage_sequence(&p, 1, 1, &IDS),
            stage_sequence(&p, 3, 1, &IDS),
        );
        let both = latent_loss(&text, &[&a, &b])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let (na, nb) = (a.labels.len() as f32, b.labels.len() as f32);
        let want = (loss_by_hand(&text, &a) * na + loss_by_hand(&text, &b) * nb) / (na + nb);
        assert!((both - want).abs() <= 1e-4 * want, "{both} vs {want}");
    }
}

fn problems(n: usize) -> Vec<LatentProblem> {
    (0..n)
        .map(|i| {
            let a = (i * 7 % 30) as u32;
            LatentProblem {
                question: vec![1, 2 + a, 3],
                steps: vec![vec![4 + a], vec![5 + a, 6]],
                answer: vec![7 + a, 0],
            }
        })
        .collect()
}

fn run_cfg(reset: bool) -> LatentConfig {
    let mut cfg: LatentConfig = toml::from_str("task = \"latent\"").unwrap();
    cfg.train.steps = 3;
    cfg.train.batch_size = 2;
    cfg.schedule.warmup = 1;
    cfg.optim.lr = 1e-2;
    cfg.latent.stages = 2;
    cfg.latent.mix_prob = 0.5;
    cfg.latent.reset_optimizer = reset;
    cfg
}

#[test]
fn a_curriculum_is_its_stages_each_with_a_fresh_optimiser() {
    let text_cfg = tiny_cfg();
    let data = problems(5);
    let never = AtomicBool::new(false);
    let losses = |reset: bool, by_hand: bool| -> Vec<f64> {
        let params = Params::init(&text_cfg, 9, 0.1, &Device::Cpu).unwrap();
        let cfg = run_cfg(reset);
        let run = LatentRun {
            text_cfg: &text_cfg,
            params: &params,
            cfg: &cfg,
            problems: &data,
            ids: IDS,
        };
        if !by_hand {
            let mut stages = vec![];
            let out = run.train(&never, |s| stages.push(s.stage)).unwrap();
            assert_eq!(stages, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
            return out;
        }
        let mut out = vec![];
        for stage in 0..=2 {
            let mut adam = run.optimizer().unwrap();
            out.extend(
                run.train_stage(stage, &mut adam, &never, &mut |_| {})
                    .unwrap(),
            );
        }
        out
    };
    let curriculum = losses(true, false);
    assert_eq!(curriculum.len(), 9);
    assert!(curriculum.iter().all(|l| l.is_finite()));
    assert_eq!(curriculum, losses(true, true));
    // Without the reset, stage 0 is the same and later stages are not.
    let kept = losses(false, false);
    assert_eq!(kept[..3], curriculum[..3]);
    assert_ne!(kept[3..], curriculum[3..]);
}

#[test]
fn batches_are_seeded_and_mix_only_earlier_stages() {
    let text_cfg = tiny_cfg();
    let params = Params::init(&text_cfg, 9, 0.1, &Device::Cpu).unwrap();
    let data = problems(7);
    let mut cfg = run_cfg(true);
    cfg.latent.mix_prob = 1.0;
    let run = LatentRun {
        text_cfg: &text_cfg,
        params: &params,
        cfg: &cfg,
        problems: &data,
        ids: IDS,
    };
    assert_eq!(run.batch(2, 5), run.batch(2, 5));
    // Every example of stage 2 is built at stage 0 or 1; stage 0 cannot mix.
    let mut seen = std::collections::BTreeSet::new();
    for step in 0..8 {
        for s in run.batch(2, step) {
            assert!(s.thoughts < 2, "{s:?}");
            seen.insert(s.thoughts);
        }
        assert!(run.batch(0, step).iter().all(|s| s.thoughts == 0));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    // One epoch of stage 1 covers every problem once (7 problems, batches of 2: 4 batches).
    cfg.latent.mix_prob = 0.0;
    let run = LatentRun {
        text_cfg: &text_cfg,
        params: &params,
        cfg: &cfg,
        problems: &data,
        ids: IDS,
    };
    let mut questions: Vec<Vec<u32>> = (0..4)
        .flat_map(|step| run.batch(1, step))
        .map(|s| s.ids[..s.bot].to_vec())
        .collect();
    questions.sort();
    let mut want: Vec<Vec<u32>> = data.iter().map(|p| p.question.clone()).collect();
    want.sort();
    assert_eq!(questions, want);
}

/// Every parameter of `params` as a name → values map (for exact comparison).
fn values(params: &Params) -> std::collections::BTreeMap<String, Vec<f32>> {
    params
        .iter()
        .map(|(k, v)| {
            let t = v
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (k.clone(), t)
        })
        .collect()
}

#[test]
fn resume_is_exact_inside_a_stage_and_across_a_stage_switch() {
    use crate::train::state::{self, TrainState};
    let text_cfg = tiny_cfg();
    let data = problems(5);
    let never = AtomicBool::new(false);
    for reset in [true, false] {
        let cfg = run_cfg(reset);
        // The whole curriculum in one go: 3 stages of 3 steps.
        let whole = Params::init(&text_cfg, 9, 0.1, &Device::Cpu).unwrap();
        let run = LatentRun {
            text_cfg: &text_cfg,
            params: &whole,
            cfg: &cfg,
            problems: &data,
            ids: IDS,
        };
        let want = run.train(&never, |_| {}).unwrap();
        // Stopped after `cut` steps (inside stage 1, and exactly at the stage 0 → 1 switch),
        // saved, loaded and resumed.
        for cut in [4u64, 3] {
            let dir = tempfile::tempdir().unwrap();
            let params = Params::init(&text_cfg, 9, 0.1, &Device::Cpu).unwrap();
            let first = LatentRun {
                params: &params,
                ..run_with(&run)
            };
            let mut adam = first.optimizer().unwrap();
            let stop = AtomicBool::new(false);
            let mut n = 0;
            let mut got = first
                .train_from(&mut adam, 0, &stop, &mut |_, _| {
                    n += 1;
                    if n == cut {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(())
                })
                .unwrap();
            assert_eq!(got.len() as u64, cut);
            let st = TrainState {
                step: cut,
                data_pos: cut,
                tokens: 0,
                seed: 0,
            };
            let ck = dir.path().join("ck");
            state::save(&ck, &st, &params, adam.moments()).unwrap();
            let loaded = state::load(&ck, &text_cfg, &Device::Cpu).unwrap();
            let second = LatentRun {
                params: &loaded.params,
                ..run_with(&run)
            };
            let mut adam = second.optimizer().unwrap();
            adam.restore(second.adam_steps(cut), loaded.moments)
                .unwrap();
            got.extend(
                second
                    .train_from(&mut adam, cut, &never, &mut |_, _| Ok(()))
                    .unwrap(),
            );
            assert_eq!(got, want, "reset {reset}, cut at {cut}");
            assert_eq!(
                values(&loaded.params),
                values(&whole),
                "reset {reset}, cut {cut}"
            );
        }
    }
}

/// A copy of `run`'s fields (to swap the parameters with struct update syntax).
fn run_with<'a>(run: &LatentRun<'a>) -> LatentRun<'a> {
    LatentRun {
        text_cfg: run.text_cfg,
        params: run.params,
        cfg: run.cfg,
        problems: run.problems,
        ids: run.ids,
    }
}
