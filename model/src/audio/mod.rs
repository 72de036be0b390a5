//! Audio codecs that turn waveforms into discrete tokens for the model and back: Mimi
//! (Hugging Face `MimiModel`). Each codec must reproduce its Hugging Face transformers reference
//! (tested against fixtures written by HF itself, `tests/golden/`).

pub mod mimi;
