//! `tritter-model`: the Tritter / BitNet b1.58 transformer.

pub mod data;
pub mod vocab;
