//! Images into the model: the SigLIP vision tower and its Idefics3-style connector, with the HF
//! configs and image preprocessing they come with (issue #14). Every piece matches its Hugging
//! Face transformers counterpart (names, shapes, arithmetic; golden tests in
//! `model/tests/golden_vision.rs`):
//!
//! - `config.rs` — `SiglipVisionConfig` ([`VisionConfig`]) and `SiglipImageProcessor`
//!   ([`ProcessorConfig`]) files, validated, writable back.
//! - `processor.rs` — image → `pixel_values` ([`preprocess`]).
//! - `layers.rs` — linear, layer norm, encoder layer on a differentiable or fused path.
//! - `cpu.rs` — the fused path's f32 CPU kernels (gemm matmuls, per-head attention, SIMD
//!   layer norm, softmax, GELU).
//! - `siglip.rs` — [`SiglipVision`], `SiglipVisionModel` up to `last_hidden_state`.
//! - `connector.rs` — [`Connector`], `Idefics3Connector` (pixel shuffle + projection).

pub mod config;
pub mod connector;
pub(crate) mod cpu;
pub mod layers;
pub mod processor;
pub mod siglip;

pub use config::{ImageSize, ProcessorConfig, VisionAct, VisionConfig};
pub use connector::{pixel_shuffle, Connector, DEFAULT_SCALE};
pub use layers::VisionPath;
pub use processor::preprocess;
pub use siglip::SiglipVision;
