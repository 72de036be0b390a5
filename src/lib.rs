//! The `tritter` application as a library: every module of the program lives here, private, and
//! `src/main.rs` only calls [`main`]. The one public module, [`untrusted`], exposes the entry
//! points that read files people download or attach, so that the fuzz targets (`fuzz/`) and the
//! regression tests (`tests/fuzz_regressions.rs`) drive the same code the program runs.

mod attach;
mod audio_in;
mod bench;
mod caught;
mod cli;
mod config;
mod device;
mod engine;
mod files;
mod repomap;
mod tui;
pub mod untrusted;

use std::process::ExitCode;

use clap::Parser;

/// Runs the program: parses the command line and prints any error as one line (the whole cause
/// chain) with exit code 1, after the terminal is restored.
pub fn main() -> ExitCode {
    match cli::run(cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tui::terminal::restore_terminal();
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("tritter: {msg}");
            ExitCode::FAILURE
        }
    }
}
