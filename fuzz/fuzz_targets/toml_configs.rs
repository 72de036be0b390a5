//! Every TOML config, through `tritter::untrusted::toml_input` (the first byte picks the reader:
//! the TUI's `config.toml`, a colour theme, or a `--train` config of any task with `#--set`
//! lines as overrides).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    let dir = scratch::dir("train");
    let _ = tritter::untrusted::toml_input(data, &dir);
});
