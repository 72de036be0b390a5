//! An audio attachment decoded through Tritter's limits (`tritter::untrusted::audio`, what
//! `/audio` and `--audio` call). The first byte picks the file's extension: 0 `.wav`, 1 `.flac`,
//! 2 `.mp3`, 3 `.ogg`, anything else none (the format is then guessed from the bytes).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

// Tritter catches symphonia's panics and turns them into errors (`catch_unwind`); libFuzzer's
// panic hook would abort on those too, so it is replaced by a silent one. A panic that escapes
// still aborts (libfuzzer-sys checks for it) and is reported as a crash.
fuzz_target!(init: std::panic::set_hook(Box::new(|_| {})), |data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let name = match kind {
        0 => "clip.wav",
        1 => "clip.flac",
        2 => "clip.mp3",
        3 => "clip.ogg",
        _ => "clip",
    };
    let dir = scratch::dir("audio");
    let path = scratch::write(&dir, name, rest);
    let _ = tritter::untrusted::audio(&path);
    let _ = std::fs::remove_file(&path);
});
