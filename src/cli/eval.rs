//! `tritter eval --model DIR --data F.jsonl --mode no-cot|cot|latent [--thoughts K] [--json]`:
//! greedy accuracy of a checkpoint on `{question, steps, answer}` records (the reasoning task
//! of `scripts/make_prosqa.py`) and the mean number of tokens it generated. Every mode prompts
//! with the chat prompt of the question and `<bot>`…`<eot>` as `task = "latent"` trains: `latent`
//! puts K continuous thoughts between them (by default each record's `min(steps, S)·c` from the
//! checkpoint's `latent.json`), `cot` and `no-cot` none — they differ in the model evaluated (one
//! trained with its steps written, one on answers alone), not in the prompt. A reply is right
//! when its last line is the answer.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tritter_model::latent::{LatentSpec, SPEC_FILE};
use tritter_model::train::latent::{read_records, LatentRecord};

use crate::cli::train_latent::score;

/// How the prompt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalMode {
    /// `<bot><eot>`: answer without written reasoning (a model trained on answers alone).
    NoCot,
    /// `<bot><eot>`: the model writes its steps, then the answer.
    Cot,
    /// `<bot>`, K continuous thoughts, `<eot>`.
    Latent,
}

/// Runs the evaluation and prints `{"accuracy", "n", "mean_generated_tokens"}` (with `json`,
/// one JSON object; otherwise a line for people).
pub fn run(
    model: &Path,
    data: &Path,
    mode: EvalMode,
    thoughts: Option<usize>,
    json: bool,
) -> Result<()> {
    let records = read_records(data)?;
    if mode != EvalMode::Latent && thoughts.is_some_and(|k| k > 0) {
        bail!("--thoughts is for --mode latent");
    }
    let spec = LatentSpec::load(model)?;
    let count: Box<dyn Fn(&LatentRecord) -> usize> = match (mode, thoughts, spec) {
        (EvalMode::Latent, Some(k), _) => Box::new(move |_| k),
        (EvalMode::Latent, None, Some(s)) => Box::new(move |r| s.thoughts_for(r.steps.len())),
        (EvalMode::Latent, None, None) => bail!(
            "{}: no {SPEC_FILE}, so the model was not latent-trained; give --thoughts K",
            model.display()
        ),
        _ => Box::new(|_| 0),
    };
    let report = score(model, &records, &*count)
        .with_context(|| format!("evaluating {}", model.display()))?;
    if json {
        println!("{report}");
    } else {
        let name = match mode {
            EvalMode::NoCot => "no-cot",
            EvalMode::Cot => "cot",
            EvalMode::Latent => "latent",
        };
        println!(
            "{name}: accuracy {:.3} on {} problems, {:.1} generated tokens each",
            report["accuracy"].as_f64().unwrap_or(f64::NAN),
            records.len(),
            report["mean_generated_tokens"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
