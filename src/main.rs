//! `tritter`: the command-line entry point.
// Wired into `tritter bench attention --json` by the CLI.
#[allow(dead_code)]
mod bench_attn;

fn main() {}
