//! `tritter`: the command-line entry point. Parses the command line, then runs the TUI or the
//! headless `-p` mode; every error is printed as one line (the whole cause chain) with exit code 1.

mod app;
mod app_commands;
mod attach;
mod bench;
pub mod bench_attn;
#[cfg(feature = "cuda")]
mod bench_cuda;
#[cfg(feature = "cuda")]
mod bench_cuda_variants;
pub mod bench_decode;
pub mod bench_kernels;
mod chat_format;
mod cli;
mod clipboard;
mod codepane;
mod commands;
mod config;
mod default_model;
mod embed;
mod engine;
mod engine_model;
mod engine_scripted;
mod files;
mod headless;
mod highlight;
mod logits;
mod markdown;
mod outline;
mod plan_cli;
mod prepare;
mod prompt;
mod session;
mod theme;
mod train_cli;
mod tui;
mod ui;
mod worker;

#[cfg(test)]
mod ui_tests;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tui::restore_terminal();
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("tritter: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    if let Some(config) = &cli.train {
        if cli.prepare_only {
            return prepare::prepare(config, &cli.overrides);
        }
        if cli.plot {
            return train_cli::plot(config, &cli.overrides);
        }
        return train_cli::train(config, &cli.overrides, cli.resume, cli.device.as_deref());
    }
    if let Some(cmd) = &cli.command {
        return cli::run_command(&cli, cmd);
    }
    match cli.prompt.as_deref() {
        Some(p) => headless::run(&cli, p),
        None => tui::run(&cli),
    }
}
