//! `tritter export --model DIR --format hf --out OUT [--form packed|bf16]`: a checkpoint that
//! transformers' `BitNetForCausalLM.from_pretrained(OUT)` loads as it is, with equal logits
//! (the work is `tritter_model::export`; this prints what was written and what transformers
//! ignores). The chat template of a checkpoint without one is Tritter's own format, the one
//! `engine::chat_format` renders.

use anyhow::{Context, Result};
use std::path::Path;

use tritter_model::export::{export_hf, HfForm};

/// The export format (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Hugging Face transformers' BitNet layout.
    Hf,
}

/// The form of the HF export (`--form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportForm {
    /// uint8 packed ternary weights + weight_scale (bitlinear / offline): for inference.
    Packed,
    /// bf16 master weights quantised at run time (autobitlinear / online): for further training.
    Bf16,
}

/// Exports `model` to `out` and prints one line per file group and note.
pub fn run(model: &Path, format: ExportFormat, out: &Path, form: ExportForm) -> Result<()> {
    let ExportFormat::Hf = format;
    let form = match form {
        ExportForm::Packed => HfForm::Packed,
        ExportForm::Bf16 => HfForm::Bf16,
    };
    let template = crate::engine::chat_format::TRITTER_TEMPLATE;
    let s = export_hf(model, out, form, template)
        .with_context(|| format!("export {}", model.display()))?;
    println!(
        "exported {} -> {} (hf, {} form): {} tensors",
        model.display(),
        out.display(),
        form.name(),
        s.tensors
    );
    if s.tokenizer {
        let t = if s.source_template {
            "the checkpoint's"
        } else {
            "Tritter's format"
        };
        println!("tokenizer.json, tokenizer_config.json (chat template: {t})");
    } else {
        println!(
            "note: {} has no tokenizer.json; only the model was exported",
            model.display()
        );
    }
    for i in &s.ignored {
        println!("note: transformers ignores {i}");
    }
    Ok(())
}
