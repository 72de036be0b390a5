//! `tritter --train CONFIG --prepare-only`: run the training-data pipeline of the `[data]`
//! section and exit, with indicatif progress bars for the long stages.
//!
//! Reads the training config as a TOML table: `run.dir` (the run directory) and the `data`
//! table (see `tritter_model::data::DataConfig`); other sections belong to the trainer and are
//! ignored here. Relative paths in the config are relative to the config file's directory.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tritter_model::data::{self, DataConfig, Issue, Progress, Stage};

/// Progress bars on stderr, one per stage.
struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, stage: Stage, total: Option<u64>) {
        let template = match (total, stage) {
            (Some(_), _) => "{msg:24} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len}",
            (None, Stage::Read) => "{spinner} {msg:24} [{elapsed_precise}] {human_pos} documents",
            (None, _) => "{spinner} {msg:24} [{elapsed_precise}]",
        };
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        }
        .with_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(stage.name());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.inc(n);
            }
        }
    }

    fn finish(&self, _stage: Stage) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(bar) = slot.take() {
                bar.finish();
            }
        }
    }

    fn issue(&self, issue: &Issue) {
        let line = format!("skipped {}: {}", issue.path, issue.message);
        match self.bar.lock().ok().as_ref().and_then(|s| s.as_ref()) {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

/// Run the data pipeline for the training config `config` (with `--set` overrides applied; paths
/// relative to the config file) and print a summary.
pub fn prepare(config: &Path, overrides: &[String]) -> anyhow::Result<()> {
    let cfg = tritter_model::train::TrainConfig::load(config, overrides)?;
    run_pipeline(&cfg.data, &cfg.run.dir)
}

/// Run the data pipeline into `run_dir/data` with progress bars and print a summary.
pub fn run_pipeline(cfg: &DataConfig, run_dir: &Path) -> anyhow::Result<()> {
    let bars = Bars {
        bar: Mutex::new(None),
    };
    let m = data::prepare(cfg, run_dir, &bars)?;
    let read: u64 = m.sources.iter().map(|s| s.documents).sum();
    let kept: u64 = m.sources.iter().map(|s| s.kept).sum();
    let rejected: u64 = m.filter_rejections.values().sum();
    eprintln!(
        "{read} documents read, {rejected} rejected by filters, {} exact and {} near duplicates dropped, {kept} kept",
        m.exact_duplicates.len(),
        m.near_duplicates.len()
    );
    eprintln!(
        "{} train / {} val tokens in {} + {} sequences of {}; vocabulary {} ({} text)",
        m.tokens.train_tokens,
        m.tokens.val_tokens,
        m.tokens.train_sequences,
        m.tokens.val_sequences,
        m.seq_len,
        m.tokenizer.vocab_size,
        m.tokenizer.text_vocab_size
    );
    if m.tokens.chat_too_long > 0 {
        eprintln!(
            "{} chat examples left out: longer than data.seq_len = {} (examples are never split)",
            m.tokens.chat_too_long, m.seq_len
        );
    }
    if m.issues_total > 0 {
        eprintln!(
            "{} inputs skipped as unreadable or invalid (listed in the manifest)",
            m.issues_total
        );
    }
    eprintln!(
        "wrote {}",
        run_dir.join("data").join("manifest.json").display()
    );
    Ok(())
}
