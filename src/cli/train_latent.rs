//! `tritter --train CONFIG` with `task = "latent"`: trains Coconut latent mode on JSONL records
//! `{"question", "steps": [..], "answer"}` (`scripts/make_prosqa.py` writes them). A byte-level
//! BPE is trained on the records' text; each record becomes the chat engine's prompt for the
//! question (Tritter's chat format up to the assistant's turn), then each written step as its own
//! line, then the answer and `<|end|>` — the pieces the curriculum (`[latent]`,
//! `tritter_model::train::latent_loop`) turns into `<bot>`, thoughts and `<eot>` stage by stage.
//! The model is written to `RUN/final/` and, at the end of each stage `s`, to
//! `RUN/stages/stage-s/` (stage 0 is the model trained on written reasoning alone); the step
//! records go to `RUN/metrics.jsonl`. Resumable checkpoints (`[checkpoint] every`, and at every
//! stage's end and on Ctrl-C) go to `RUN/checkpoints/`; `--resume` continues exactly where one
//! left off, inside a stage or across a stage switch.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use tokenizers::Tokenizer;
use tritter_model::latent::{LatentSpec, SPEC_FILE};
use tritter_model::train::image_text::ImageStep;
use tritter_model::train::latent::{
    read_records, LatentConfig, LatentIds, LatentProblem, LatentRecord,
};
use tritter_model::train::latent_loop::LatentRun;
use tritter_model::train::optim::AdamW;
use tritter_model::train::state::{self, TrainState};
use tritter_model::train::TrainError;
use tritter_model::weights::Params;

use crate::cli::train_vision::{train_tokenizer, StepLog};
use crate::engine::chat_format::ChatFormat;
use crate::engine::{ChatMessage, Role};

/// Loads the config: TOML with `--set` overrides, paths relative to the file.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<LatentConfig> {
    let (mut cfg, fix): (LatentConfig, _) = crate::cli::train::read_config(path, overrides)?;
    cfg.run.dir = fix(&cfg.run.dir);
    cfg.data.train = fix(&cfg.data.train);
    cfg.data.test = cfg.data.test.as_deref().map(&fix);
    cfg.validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok(cfg)
}

/// The reply a record teaches, written out: each step on its own line, then the answer.
pub fn written_reply(r: &LatentRecord) -> String {
    let mut s = String::new();
    for step in &r.steps {
        s.push_str(step);
        s.push('\n');
    }
    s.push_str(&r.answer);
    s
}

/// The chat prompt of a record's question, as the engine renders it before the reply.
pub fn prompt_text(r: &LatentRecord) -> Result<String> {
    ChatFormat::tritter().render(&[ChatMessage::new(Role::User, r.question.clone())])
}

/// A record as ids: the prompt, each step's line, the answer with `<|end|>`.
pub fn problem(r: &LatentRecord, tk: &Tokenizer) -> Result<LatentProblem> {
    let enc = |s: &str| -> Result<Vec<u32>> {
        Ok(tk
            .encode(s, false)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?
            .get_ids()
            .to_vec())
    };
    Ok(LatentProblem {
        question: enc(&prompt_text(r)?)?,
        steps: r
            .steps
            .iter()
            .map(|s| enc(&format!("{s}\n")))
            .collect::<Result<_>>()?,
        answer: enc(&format!("{}<|end|>", r.answer))?,
    })
}

/// `tritter --train` for `task = "latent"`; `resume` continues from the newest checkpoint under
/// `RUN/checkpoints/` (the same config and data: the tokenizer trained again must equal the one
/// saved).
pub fn train(
    config: &Path,
    overrides: &[String],
    resume: bool,
    device: Option<&str>,
) -> Result<()> {
    let cfg = load_config(config, overrides)?;
    let dev = match device {
        Some(name) => {
            tritter_model::train::trainer::open_device(name, &format!("--device {name}"))?
        }
        None => Device::Cpu,
    };
    let records = read_records(&cfg.data.train)?;
    let test = cfg.data.test.as_deref().map(read_records).transpose()?;
    std::fs::create_dir_all(&cfg.run.dir)
        .with_context(|| format!("creating {}", cfg.run.dir.display()))?;
    let ckpts = cfg.run.dir.join("checkpoints");
    let found = if resume { state::latest(&ckpts)? } else { None };
    let (tk, layout) = tokenizer(&cfg, &records, found.is_some())?;
    let tk_dir = cfg.run.dir.join("tokenizer");
    let mut text_cfg = cfg.model.preset_config()?;
    text_cfg.vocab_size = (layout.total() as usize).max(tk.get_vocab_size(true));
    text_cfg.max_position_embeddings = text_cfg.max_position_embeddings.min(1024);
    let problems = records
        .iter()
        .map(|r| problem(r, &tk))
        .collect::<Result<Vec<_>>>()?;
    check_lengths(&cfg, &text_cfg, &problems)?;
    let (params, st, moments) = initial(&cfg, &text_cfg, found.as_ref().map(|f| &f.1), &dev)?;
    let (done, mut tokens) = st.map_or((0, 0), |s| (s.step, s.tokens));
    let run = LatentRun {
        text_cfg: &text_cfg,
        params: &params,
        cfg: &cfg,
        problems: &problems,
        ids: LatentIds::new(&layout),
    };
    let mut adam = run.optimizer()?;
    if let Some(m) = moments {
        adam.restore(run.adam_steps(done), m)?;
    }
    let spec = |stages| LatentSpec {
        thoughts_per_step: cfg.latent.thoughts_per_step,
        stages,
    };
    let per_stage = run.stage_steps();
    let total = per_stage * (cfg.latent.stages as u64 + 1);
    let metrics = cfg.run.dir.join("metrics.jsonl");
    let mut log = StepLog::new(total, cfg.train.log_every).resumed(&metrics, done)?;
    let mut saved = done;
    crate::cli::train::install_sigint();
    let losses = run.train_from(
        &mut adam,
        done,
        crate::cli::train::stop_flag(),
        &mut |s, adam| {
            let global = s.stage as u64 * per_stage + s.step;
            tokens += s.tokens;
            log.step(&ImageStep {
                step: global,
                loss: s.loss,
                lr: s.lr,
                grad_norm: s.grad_norm,
            });
            let every = cfg.checkpoint.every;
            let stage_end = s.step == per_stage;
            if stage_end || (every > 0 && global.is_multiple_of(every)) {
                checkpoint(&cfg, global, tokens, &params, adam)?;
                log.save(&metrics)
                    .map_err(|e| TrainError::Checkpoint(format!("{e:#}")))?;
                saved = global;
            }
            if stage_end {
                let dir = cfg
                    .run
                    .dir
                    .join("stages")
                    .join(format!("stage-{}", s.stage));
                tritter_model::save_checkpoint(&dir, &text_cfg, &params, Some(&tk_dir))
                    .and_then(|()| spec(s.stage).save(&dir))
                    .map_err(TrainError::from)?;
            }
            Ok(())
        },
    )?;
    log.finish(&metrics)?;
    let reached = done + losses.len() as u64;
    if reached < total {
        if reached > saved {
            checkpoint(&cfg, reached, tokens, &params, &adam)?;
        }
        eprintln!("stopped at step {reached} of {total}; `--resume` continues");
        return Ok(());
    }
    let final_dir = cfg.run.dir.join("final");
    tritter_model::save_checkpoint(&final_dir, &text_cfg, &params, Some(&tk_dir))?;
    spec(cfg.latent.stages).save(&final_dir)?;
    eprintln!(
        "{total} steps over stages 0..={}, last loss {:.4}; model: {}",
        cfg.latent.stages,
        losses.last().copied().unwrap_or(f64::NAN),
        final_dir.display()
    );
    if let Some(test) = &test {
        let report = evaluate(&final_dir, test)?;
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(cfg.run.dir.join("eval.json"), &json)?;
        println!("{json}");
    }
    Ok(())
}

/// The run's starting weights: the checkpoint in `from` (with its counters and moments), or
/// fresh ones from the seed.
#[allow(clippy::type_complexity)]
fn initial(
    cfg: &LatentConfig,
    text_cfg: &tritter_model::Config,
    from: Option<&std::path::PathBuf>,
    dev: &Device,
) -> Result<(
    Params,
    Option<TrainState>,
    Option<std::collections::BTreeMap<String, tritter_model::train::optim::Moments>>,
)> {
    Ok(match from {
        Some(dir) => {
            let l = state::load(dir, text_cfg, dev)?;
            eprintln!("resuming from {} (step {})", dir.display(), l.state.step);
            (l.params, Some(l.state), Some(l.moments))
        }
        None => (
            Params::init(text_cfg, cfg.run.seed, cfg.model.init_std, dev)?,
            None,
            None,
        ),
    })
}

/// The run's tokenizer: trained on the records (deterministically) and saved to
/// `RUN/tokenizer/`; on resume it must equal the one saved, or the checkpoint's ids would mean
/// other text.
fn tokenizer(
    cfg: &LatentConfig,
    records: &[LatentRecord],
    resuming: bool,
) -> Result<(Tokenizer, tritter_model::vocab::VocabLayout)> {
    let replies: Vec<String> = records.iter().map(written_reply).collect();
    let pairs: Vec<(&str, &str)> = records
        .iter()
        .zip(&replies)
        .map(|(r, t)| (r.question.as_str(), t.as_str()))
        .collect();
    let (tk, layout) = train_tokenizer(&pairs, cfg.data.vocab_size, 0, 0)?;
    let tk_dir = cfg.run.dir.join("tokenizer");
    let path = tk_dir.join("tokenizer.json");
    let json = tk
        .to_string(false)
        .map_err(|e| anyhow::anyhow!("serialising the tokenizer: {e}"))?;
    if resuming {
        let saved = std::fs::read_to_string(&path)
            .with_context(|| format!("resuming needs {}", path.display()))?;
        if saved != json {
            bail!(
                "{}: the tokenizer trained on [data] train differs from the run's; the data \
                 changed since the checkpoint",
                path.display()
            );
        }
    } else {
        std::fs::create_dir_all(&tk_dir)?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((tk, layout))
}

/// Fails when the longest sequence of the last stage would not fit the model's positions.
fn check_lengths(
    cfg: &LatentConfig,
    text_cfg: &tritter_model::Config,
    problems: &[LatentProblem],
) -> Result<()> {
    let longest = problems
        .iter()
        .map(|p| p.question.len() + p.steps.iter().map(Vec::len).sum::<usize>() + p.answer.len())
        .max()
        .unwrap_or(0)
        + 2
        + cfg.latent.thoughts_per_step * cfg.latent.stages;
    if longest > text_cfg.max_position_embeddings {
        bail!(
            "the longest sequence is {longest} positions, over the model's {}",
            text_cfg.max_position_embeddings
        );
    }
    Ok(())
}

/// Writes the resumable checkpoint after `step` steps (over all stages) and prunes old ones.
fn checkpoint(
    cfg: &LatentConfig,
    step: u64,
    tokens: u64,
    params: &Params,
    adam: &AdamW,
) -> std::result::Result<(), TrainError> {
    let root = cfg.run.dir.join("checkpoints");
    let st = TrainState {
        step,
        data_pos: step,
        tokens,
        seed: cfg.run.seed,
    };
    state::save(&state::step_dir(&root, step), &st, params, adam.moments())?;
    state::prune(&root, cfg.checkpoint.keep)
}

/// Held-out accuracy of the latent-trained checkpoint in `model_dir` on `records` in latent
/// mode (each record's `min(steps, S)·c` thoughts, as the last stage trained it) and written
/// mode (`<bot><eot>` with no thought: stage 0's form, the steps written out).
pub fn evaluate(model_dir: &Path, records: &[LatentRecord]) -> Result<serde_json::Value> {
    let spec = LatentSpec::load(model_dir)?
        .with_context(|| format!("{}: no {SPEC_FILE}", model_dir.display()))?;
    let latent = score(model_dir, records, &|r: &LatentRecord| {
        spec.thoughts_for(r.steps.len())
    })?;
    let written = score(model_dir, records, &|_: &LatentRecord| 0)?;
    Ok(serde_json::json!({ "n": records.len(), "latent": latent, "written": written }))
}

/// Greedy replies of the checkpoint in `model_dir` to `records`, each prompt followed by
/// `<bot>`, `thoughts(record)` thoughts and `<eot>`: `{"accuracy", "n",
/// "mean_generated_tokens"}`. A reply is right when its last line is the answer; thoughts are
/// not counted as generated tokens.
pub fn score(
    model_dir: &Path,
    records: &[LatentRecord],
    thoughts: &dyn Fn(&LatentRecord) -> usize,
) -> Result<serde_json::Value> {
    use std::ops::ControlFlow;
    use tritter_model::latent::{generate_latent, LatentOptions};
    use tritter_model::{CpuModel, GenerateOptions, SamplingParams, Segment};
    let ck = tritter_model::load_model(model_dir, &Device::Cpu)?;
    let tk = crate::engine::model::load_tokenizer(&model_dir.join("tokenizer.json"))?;
    let id = |t: &str| tk.token_to_id(t).with_context(|| format!("no {t} token"));
    let (bot, eot, end) = (id("<bot>")?, id("<eot>")?, id("<|end|>")?);
    let mut cpu = CpuModel::new(&ck.model)?;
    let opts = GenerateOptions {
        max_new_tokens: 160,
        sampling: SamplingParams::greedy(),
        stop_tokens: vec![end],
    };
    let never = AtomicBool::new(false);
    let (mut hit, mut tokens) = (0usize, 0usize);
    for r in records {
        let p = problem(r, &tk)?;
        let latent = LatentOptions {
            thoughts: thoughts(r),
            bot,
            eot,
        };
        let out = generate_latent(
            &mut cpu,
            &[Segment::Tokens(p.question)],
            &latent,
            &opts,
            &never,
            |_| {},
            |_| ControlFlow::Continue(()),
        )?;
        let text = tk
            .decode(&out.stats.generated, true)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        if last_line_is(&text, &r.answer) {
            hit += 1;
        }
        tokens += out.stats.generated.len();
    }
    let n = records.len().max(1) as f64;
    Ok(serde_json::json!({
        "accuracy": hit as f64 / n,
        "n": records.len(),
        "mean_generated_tokens": tokens as f64 / n,
    }))
}

/// Whether the last non-empty line of `reply` is `answer` (spaces around ignored).
pub fn last_line_is(reply: &str, answer: &str) -> bool {
    reply.trim().lines().last().map(str::trim) == Some(answer.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_becomes_prompt_steps_and_answer() {
        let r = LatentRecord {
            question: "Every a is a b. Tom is a a. Is Tom a b or a c?".into(),
            steps: vec!["Tom is a a.".into(), "Every a is a b.".into()],
            answer: "Tom is a b.".into(),
        };
        assert_eq!(
            written_reply(&r),
            "Tom is a a.\nEvery a is a b.\nTom is a b."
        );
        let (tk, _) = train_tokenizer(&[(&r.question, &written_reply(&r))], 300, 0, 0).unwrap();
        let p = problem(&r, &tk).unwrap();
        let dec = |ids: &[u32]| tk.decode(ids, false).unwrap();
        assert_eq!(dec(&p.question), prompt_text(&r).unwrap());
        assert!(dec(&p.question).contains("Is Tom a b or a c?"));
        assert_eq!(p.steps.len(), 2);
        assert_eq!(dec(&p.steps[1]), "Every a is a b.\n");
        assert_eq!(dec(&p.answer), "Tom is a b.<|end|>");
        assert!(last_line_is("Tom is a a.\n Tom is a b. \n", "Tom is a b."));
        assert!(!last_line_is("Tom is a b.\nTom is a c.", "Tom is a b."));
        assert!(!last_line_is("", "Tom is a b."));
    }
}
