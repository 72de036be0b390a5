//! `tritter`: the entry point. `cli` parses the command line and runs the TUI, the headless `-p`
//! mode, a subcommand or `--train`; every error is printed here as one line (the whole cause
//! chain) with exit code 1, after the terminal is restored.

mod attach;
mod audio_in;
mod bench;
mod cli;
mod config;
mod device;
mod engine;
mod files;
mod tui;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tui::terminal::restore_terminal();
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("tritter: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    cli::run(cli::Cli::parse())
}
