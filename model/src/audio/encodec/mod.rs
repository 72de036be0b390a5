//! EnCodec (Défossez et al., 2022), the neural audio codec, as HF transformers' `EncodecModel`
//! states it: a waveform at `sampling_rate` becomes `n_q` parallel streams of codes at
//! `frame_rate` (75 Hz and up to 32 codebooks of 1024 entries for `facebook/encodec_24khz`), and
//! codes decode back to a waveform.
//!
//! What each part is held against: the encoder, quantiser and decoder against HF fixtures written
//! by `scripts/golden_encodec.py` (`tests/golden/encodec_tiny*`; codes, pre-quantisation
//! embeddings, decoded audio); the differentiable path against the fast path, and the im2col
//! conv and polyphase transposed conv (values and gradients) against naive sums, the host
//! kernels of the fast CPU path against the candle ops they replace (tests); the speed against
//! transformers on PyTorch (`scripts/bench_encodec_torch.py` beside [`bench::encode_report`]).
//!
//! Children: `config` (HF config), `params` (tensor sources and names), `conv` (padded convs,
//! weight norm, the two paths), `lstm`, `seanet` (encoder / decoder stacks), `quantizer` (RVQ),
//! `model` ([`Encodec`]), `bench` (encode timing); the fast CPU path's host kernels: `cpu`
//! (frames, `gemm`, padding, ELU), `conv_cpu` (convs and the fused residual block), `lstm_cpu`
//! (the threaded recurrence), `rvq_cpu` (the nearest-code search).

pub mod bench;
pub mod config;
mod conv;
mod conv_cpu;
mod cpu;
mod lstm;
mod lstm_cpu;
pub mod model;
mod params;
mod quantizer;
mod rvq_cpu;
mod seanet;

pub use config::EncodecConfig;
pub use conv::EncodecPath;
pub use model::{Encodec, TrainForward};
