//! `tokenizer.json`: loaded as the engine loads a checkpoint's tokenizer, then used to encode and
//! decode a line (`tritter::untrusted::tokenizer`).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

// Tritter catches the tokenizers crate's panics and turns them into errors (`catch_unwind`);
// libFuzzer's panic hook would abort on those too, so it is replaced by a silent one. A panic
// that escapes still aborts (libfuzzer-sys checks for it) and is reported as a crash.
fuzz_target!(init: std::panic::set_hook(Box::new(|_| {})), |data: &[u8]| {
    let dir = scratch::dir("tokenizer");
    let path = scratch::write(&dir, "tokenizer.json", data);
    let _ = tritter::untrusted::tokenizer(&path);
});
