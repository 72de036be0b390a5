//! A saved session file (`sessions/NAME.json`) loaded as `/load` and `--resume` load it.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    let data_dir = scratch::dir("data");
    let sessions = data_dir.join("sessions");
    std::fs::create_dir_all(&sessions).expect("creating the sessions directory");
    scratch::write(&sessions, "fuzz.json", data);
    let _ = tritter::untrusted::session(&data_dir, "fuzz");
});
