//! `tritter-model`: the Tritter / BitNet b1.58 transformer.

pub mod attn;
pub mod plan;
