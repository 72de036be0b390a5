//! A safetensors file (header and data) through `TensorStore::from_bytes`, the parser every
//! checkpoint load uses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tritter_model::TensorStore::from_bytes(
        data,
        "model.safetensors",
        &candle_core::Device::Cpu,
    );
});
