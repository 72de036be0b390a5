//! `tritter`: the entry point. The program is the `tritter` library (`src/lib.rs`): `cli` parses
//! the command line and runs the TUI, the headless `-p` mode, a subcommand or `--train`; every
//! error is printed as one line (the whole cause chain) with exit code 1, after the terminal is
//! restored.

fn main() -> std::process::ExitCode {
    tritter::main()
}
