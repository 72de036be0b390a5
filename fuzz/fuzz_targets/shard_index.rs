//! A sharded checkpoint: `model.safetensors.index.json` (the input) beside one valid shard,
//! `model-00001.safetensors`, loaded with `TensorStore::load_dir`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

/// A shard with one f32 tensor `w` of shape [2].
fn shard() -> Vec<u8> {
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    v.extend_from_slice(&[0u8; 8]);
    v
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch::dir("shards");
    let shard_path = dir.join("model-00001.safetensors");
    if !shard_path.exists() {
        scratch::write(&dir, "model-00001.safetensors", &shard());
    }
    scratch::write(&dir, "model.safetensors.index.json", data);
    let _ = tritter_model::TensorStore::load_dir(&dir, &candle_core::Device::Cpu);
});
