//! `tritter --train CONFIG --prepare-only`: run the training-data pipeline of the `[data]`
//! section and exit, with indicatif progress bars for the long stages.
//!
//! Reads the training config as a TOML table: `run.dir` (the run directory) and the `data`
//! table (see `tritter_model::data::DataConfig`); other sections belong to the trainer and are
//! ignored here. Relative paths in the config are relative to the config file's directory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use tritter_model::data::{self, DataConfig, Issue, Progress, Stage};

/// Progress bars on stderr, one per stage.
struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, stage: Stage, total: Option<u64>) {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{msg:24} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(
                    "{spinner} {msg:24} [{elapsed_precise}] {pos} docs ({per_sec})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
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

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Parse the training config into the run directory and the `[data]` section, with relative
/// paths resolved against the config file's directory.
pub fn load_config(config: &Path) -> anyhow::Result<(PathBuf, DataConfig)> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    let base = config.parent().unwrap_or(Path::new("."));
    let run_dir = table
        .get("run")
        .and_then(|r| r.get("dir"))
        .and_then(|d| d.as_str())
        .ok_or_else(|| anyhow!("{}: missing string `run.dir`", config.display()))?;
    let Some(data) = table.get("data") else {
        bail!("{}: missing [data] section", config.display());
    };
    let mut cfg = DataConfig::from_toml_value(data.clone())
        .with_context(|| format!("in {}", config.display()))?;
    for s in &mut cfg.sources {
        s.path = resolve(base, &s.path);
    }
    if let Some(p) = &cfg.tokenizer.path {
        cfg.tokenizer.path = Some(resolve(base, p));
    }
    Ok((resolve(base, Path::new(run_dir)), cfg))
}

/// Run the data pipeline for `config` and print a summary.
pub fn prepare(config: &Path) -> anyhow::Result<()> {
    let (run_dir, cfg) = load_config(config)?;
    let bars = Bars {
        bar: Mutex::new(None),
    };
    let m = data::prepare(&cfg, &run_dir, &bars)?;
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
