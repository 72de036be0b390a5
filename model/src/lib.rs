//! `tritter-model`: the Tritter / BitNet b1.58 transformer — config, BitLinear, attention with a
//! KV cache, generation, checkpoints (HF BitNet packed and bf16 layouts).
//!
//! The crate never touches the terminal: it returns values and events; the binary prints.

pub mod attn;
pub mod audio;
pub mod bitlinear;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod decoder;
pub mod decoder_candle;
pub mod dense;
pub mod device;
pub mod error;
pub mod export;
pub mod fused;
pub mod generation;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod gpu_scope;
pub(crate) mod hostgemm;
pub mod hybrid;
pub mod infer;
pub mod latent;
pub mod layer;
pub mod layer_cache;
pub mod multimodal;
pub mod norm;
pub mod plan;
pub mod plan_gpu;
pub mod quant;
pub mod random;
pub mod rope;
pub mod sampling;
pub mod source;
pub mod train;
pub mod transformer;
pub mod vision;
pub mod vocab;
pub mod vqvae;
pub mod weights;

pub use bitlinear::{BitLinear, BitWeights, PackedLinear};
pub use checkpoint::{load_model, load_model_from_bytes, save_checkpoint, Checkpoint};
pub use config::{Activation, Config, NormPlacement, WeightFormat};
pub use decoder::{Decoder, Profile};
pub use dense::dense_random;
pub use device::Compute;
pub use error::{Error, Result};
pub use generation::{
    generate, generate_segments, generate_with, segments_len, GenerateOptions, GenerationStats,
    Segment, StopReason,
};
pub use infer::{CacheOptions, CpuModel, HeadKind, InferenceCache};
pub use layer::LayerView;
pub use sampling::{Sampler, SamplingParams};
pub use transformer::{TensorKvCache, Transformer};
pub use weights::{Params, TensorStore, WeightSource};
