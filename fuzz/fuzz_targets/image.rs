//! An image attachment: PNG or JPEG bytes decoded through Tritter's size and pixel limits
//! (`tritter::untrusted::image`, what `/img` and `--img` call).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    let dir = scratch::dir("image");
    let path = scratch::write(&dir, "attachment", data);
    let _ = tritter::untrusted::image(&path);
});
