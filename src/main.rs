//! `tritter`: the command-line entry point.
pub mod bench_kernels;

fn main() {}
