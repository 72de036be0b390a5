//! `tritter`: the command-line entry point.

mod prepare;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Tritter: offline terminal coding assistant.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Training config (TOML): train or QAT a model.
    #[arg(long, value_name = "CONFIG")]
    train: Option<PathBuf>,
    /// With --train: only run the data pipeline (filter, dedup, tokenizer, shards) and exit.
    #[arg(long, requires = "train")]
    prepare_only: bool,
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match (&cli.train, cli.prepare_only) {
        (Some(config), true) => prepare::prepare(config),
        (Some(_), false) => anyhow::bail!("training is not implemented yet; use --prepare-only"),
        (None, _) => Ok(()),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
