//! `tokenizer_config.json` with a chat template (minijinja): compiled and rendered for a
//! conversation (`tritter::untrusted::chat_template`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tritter::untrusted::chat_template(text);
    }
});
