//! `tritter`: the command-line entry point. Parses the CLI and dispatches; errors are printed as
//! one line with their whole chain.

mod logits;
mod prepare;
mod train_cli;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "tritter",
    version,
    about = "Offline terminal coding assistant with an in-process ternary LLM"
)]
struct Cli {
    /// Model checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, global = true)]
    model: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// Training config (TOML): train or QAT a model.
    #[arg(long, value_name = "CONFIG")]
    train: Option<PathBuf>,
    /// With --train: only run the data pipeline (filter, dedup, tokenizer, shards) and exit.
    #[arg(long, requires = "train")]
    prepare_only: bool,
    /// With --train: continue from the newest checkpoint of the run directory.
    #[arg(long, requires = "train")]
    resume: bool,
    /// With --train: override a config key, e.g. --set train.steps=100 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "train")]
    overrides: Vec<String>,
    /// With --train: redraw RUN/loss.png from metrics.jsonl and exit.
    #[arg(long, requires = "train")]
    plot: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the f32 logits [T, V] of one forward pass over token ids (conformance probe).
    Logits {
        /// Comma-separated token ids, e.g. 1,2,3.
        #[arg(long)]
        ids: String,
        /// Output safetensors file (tensor `logits`).
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            bail!("--device {s}: this build has no CUDA support (build with --features cuda)")
        }
        other => bail!("--device: unknown device `{other}` (expected cpu, cuda or cuda:N)"),
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let device = parse_device(&cli.device)?;
    if let Some(config) = &cli.train {
        if cli.prepare_only {
            return prepare::prepare(config);
        }
        if cli.plot {
            return train_cli::plot(config, &cli.overrides);
        }
        return train_cli::train(config, &cli.overrides, cli.resume);
    }
    match cli.command {
        Some(Command::Logits { ids, out }) => {
            let Some(model) = cli.model else {
                bail!("logits: --model DIR is required");
            };
            logits::run(&model, &ids, &out, &device)
        }
        None => bail!("the interactive app is not built yet; try `tritter logits --help`"),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tritter: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
