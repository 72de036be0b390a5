//! Every TOML config. The first byte picks the reader: 0 the TUI's `config.toml`, 1 a colour
//! theme, 2 (and anything else) a `--train` config of any task, where lines `#--set KEY=VALUE`
//! (comments to TOML) are also passed as `--set` overrides.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match kind {
        0 => drop(tritter::untrusted::tui_config(text)),
        1 => drop(tritter::untrusted::theme(text)),
        _ => {
            let overrides: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("#--set "))
                .map(str::to_string)
                .collect();
            let dir = scratch::dir("train");
            let path = scratch::write(&dir, "train.toml", rest);
            let _ = tritter::untrusted::train_config(&path, &overrides);
        }
    }
});
