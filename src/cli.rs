//! The command line (clap). `tritter` alone opens the TUI; `-p` runs one prompt headless.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tritter",
    version,
    about = "Offline terminal coding assistant with an in-process ternary language model"
)]
pub struct Cli {
    /// Model directory (config.json, model.safetensors, tokenizer.json); default: the built-in model.
    #[arg(long, value_name = "DIR", global = true)]
    pub model: Option<PathBuf>,
    /// Compute device: cpu or cuda[:N].
    #[arg(long, value_name = "DEVICE", global = true)]
    pub device: Option<String>,
    /// Reopen the most recent saved conversation; with --train, continue from the newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Run one prompt without the TUI and stream the reply to stdout; `-p -` reads it from stdin.
    #[arg(short = 'p', long = "prompt", value_name = "PROMPT")]
    pub prompt: Option<String>,
    /// With -p: print one JSON object {reply, tokens, tok_per_s, first_token_ms, model} instead.
    #[arg(long, requires = "prompt")]
    pub json: bool,
    /// With -p: attach an image (PNG/JPEG).
    #[arg(long, value_name = "FILE", requires = "prompt")]
    pub img: Vec<PathBuf>,
    /// With -p: attach audio (WAV/FLAC/MP3).
    #[arg(long, value_name = "FILE", requires = "prompt")]
    pub audio: Vec<PathBuf>,
    /// Colour theme (overrides config.toml).
    #[arg(long, value_name = "NAME")]
    pub theme: Option<String>,
    /// Train or QAT a model from a config (TOML).
    #[arg(long, value_name = "CONFIG.toml")]
    pub train: Option<PathBuf>,
    /// With --train: only run the data pipeline (filter, dedup, tokenizer, shards) and exit.
    #[arg(long, requires = "train")]
    pub prepare_only: bool,
    /// With --train: override a config key, e.g. --set train.steps=100 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "train")]
    pub overrides: Vec<String>,
    /// With --train: redraw RUN/loss.png from metrics.jsonl and exit.
    #[arg(long, requires = "train")]
    pub plot: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands beside the TUI and `-p`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a text embedding (mean-pooled hidden states) as JSON.
    Embed {
        /// The text to embed.
        text: String,
    },
    /// Write the f32 logits [T, V] of one forward pass over token ids (conformance probe).
    Logits {
        /// Comma-separated token ids, e.g. 1,2,3.
        #[arg(long)]
        ids: String,
        /// Output safetensors file (tensor `logits`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a benchmark report: kernels, decode or attention.
    Bench {
        /// What to measure.
        #[arg(value_enum)]
        what: crate::bench::BenchWhat,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Worker threads (default: every core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Plan memory for a model preset: weights, KV cache, activations against a budget.
    Plan {
        /// Model preset (tritter-tiny, tritter-7b, bitnet-b1.58-2b4t).
        #[arg(long)]
        preset: String,
        /// Context length in tokens.
        #[arg(long)]
        context: usize,
        /// Memory budget, e.g. 16GiB or 8GB.
        #[arg(long, default_value = "16GiB")]
        budget: String,
        /// Rolling attention window in tokens (0 = full attention); plans 4 sinks with it.
        #[arg(long, default_value_t = 0)]
        window: usize,
        /// KV cache kind: f32, f16, bf16, int4 (or int4-gG-rR).
        #[arg(long, default_value = "f16")]
        kv: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Plan the CUDA build's GPU memory instead (weights, f16 head, GPU KV cache, scratch,
        /// CUDA context) against the budget (an RTX 5080 has 16 GiB).
        #[arg(long)]
        gpu: bool,
    },
}

/// Where the model runs: the model crate's one device type and parser.
pub use tritter_model::device::Compute;
use tritter_model::device::DeviceError;

/// Parses `--device` (`cpu`, `cuda`, `cuda:N`; absent: `cpu`).
pub fn parse_compute(s: Option<&str>) -> Result<Compute> {
    let s = s.unwrap_or("cpu");
    Compute::parse(s).map_err(|e| match e {
        DeviceError::NoCuda => no_cuda(s),
        e => anyhow::anyhow!("--device {s}: {e}"),
    })
}

/// The error for `--device DEVICE` in a build without the `cuda` feature.
pub fn no_cuda(device: &str) -> anyhow::Error {
    anyhow::anyhow!("--device {device}: {}", DeviceError::NoCuda)
}

/// Parses `--device` into a candle device (the candle path: embeddings, training).
pub fn parse_device(s: Option<&str>) -> Result<Device> {
    let c = parse_compute(s)?;
    c.device()
        .map_err(|e| anyhow::anyhow!("--device {}: {e}", c.name()))
}

/// Runs a subcommand.
pub fn run_command(cli: &Cli, cmd: &Command) -> Result<()> {
    match cmd {
        Command::Embed { text } => {
            let device = parse_device(cli.device.as_deref())?;
            crate::embed::run(cli.model.as_deref(), text, &device)
        }
        Command::Logits { ids, out } => {
            let Some(model) = &cli.model else {
                bail!("logits: --model DIR is required");
            };
            crate::logits::run(model, ids, out, parse_compute(cli.device.as_deref())?)
        }
        Command::Bench {
            what,
            json,
            threads,
        } => crate::bench::run(
            *what,
            *json,
            *threads,
            parse_compute(cli.device.as_deref())?,
        ),
        Command::Plan {
            preset,
            context,
            budget,
            window,
            kv,
            json,
            gpu,
        } => crate::plan_cli::run(&crate::plan_cli::PlanArgs {
            preset: preset.clone(),
            context: *context,
            budget: budget.clone(),
            window: *window,
            kv: kv.clone(),
            json: *json,
            gpu: *gpu,
        }),
    }
}

#[cfg(test)]
mod compute_tests {
    use super::*;

    #[test]
    fn device_flag_parses_or_names_the_problem() {
        assert_eq!(parse_compute(None).unwrap(), Compute::Cpu);
        assert_eq!(parse_compute(Some("cpu")).unwrap(), Compute::Cpu);
        let e = parse_compute(Some("gpu")).unwrap_err().to_string();
        assert!(e.contains("unknown device `gpu`"), "{e}");
        let e = parse_compute(Some("cuda:x")).unwrap_err().to_string();
        assert!(e.contains("ordinal"), "{e}");
        if cfg!(feature = "cuda") {
            assert_eq!(parse_compute(Some("cuda:1")).unwrap(), Compute::Cuda(1));
        } else {
            let e = parse_compute(Some("cuda:1")).unwrap_err().to_string();
            assert!(e.contains("no CUDA support"), "{e}");
        }
    }
}
