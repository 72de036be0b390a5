//! `config.json`: parsed and validated (`Config::from_json_str`, what `load_model` calls), then
//! sized (`ternary_params`, what the memory planner reads).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = tritter_model::Config::from_json_str(text) {
            let _ = cfg.ternary_params();
        }
    }
});
