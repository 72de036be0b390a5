//! Export to the Hugging Face BitNet layout (`tritter export --format hf`): a directory that
//! transformers' `BitNetForCausalLM.from_pretrained(OUT)` loads as it is, with the same logits
//! (≤ 1e-4 relative; `tests/export_hf.rs`, `scripts/check_export.py`).
//!
//! Two forms (`tensors.rs`): packed (`bitlinear` / `offline`, what inference loads) and bf16
//! master weights (`autobitlinear` / `online`, what PyTorch trains further). `config.json` is
//! Tritter's own (HF key names) with the form's `quantization_config`; the keys transformers'
//! BitNet has no use for (`norm_placement`, `qk_norm`, `mlp_gated`, `attention_mode`,
//! `sliding_window_size`, `use_attention_sinks`) stay in it as an extension transformers ignores,
//! so the export only takes configs whose values match what transformers does anyway — except
//! the rolling window, which transformers ignores (it attends to the whole context: the two
//! agree on sequences up to the window). `latent.json` is copied (transformers ignores it; the
//! text model works as a plain causal LM there). Anything else transformers' BitNet lacks is
//! refused with every such feature named ([`hf_unsupported`]).
//!
//! `tokenizer.json` is copied; `tokenizer_config.json` is the source's, or a new one, with
//! `tokenizer_class` and the special tokens filled in where missing and the caller's chat
//! template where the source has none. Written atomically (temporary directory, fsync, rename).

mod tensors;

pub use tensors::master_from_codes;

use crate::attn::AttentionMode;
use crate::checkpoint::{write_dir_atomically, write_file_synced};
use crate::config::{Config, NormPlacement, QkNormKind, WeightFormat};
use crate::error::{Error, Result};
use crate::weights::TensorStore;
use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

/// Which of transformers' two BitNet layouts to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfForm {
    /// uint8 packed ternary weights + `weight_scale` (`bitlinear` / `offline`).
    Packed,
    /// bf16 master weights quantised at run time (`autobitlinear` / `online`).
    Bf16,
}

impl HfForm {
    pub fn name(self) -> &'static str {
        match self {
            HfForm::Packed => "packed",
            HfForm::Bf16 => "bf16",
        }
    }
}

/// What an export wrote, for the caller to report.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    pub tensors: usize,
    /// Whether `tokenizer.json` was there to copy.
    pub tokenizer: bool,
    /// Whether the chat template came from the source (else the caller's).
    pub source_template: bool,
    /// Config values transformers ignores, as one phrase each.
    pub ignored: Vec<String>,
}

/// The features of a checkpoint transformers' `BitNetForCausalLM` lacks, one phrase each; empty
/// when it can be exported.
pub fn hf_unsupported(cfg: &Config, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.weight_format == WeightFormat::Dense {
        out.push("unquantised linear layers (no `quantization_config`)".to_string());
    }
    if let Some(kind) = cfg.qk_norm {
        let kind = match kind {
            QkNormKind::Rms => "rms_norm",
            QkNormKind::Layernorm => "layer_norm",
        };
        out.push(format!("QK-Norm (`qk_norm = {kind}`)"));
    }
    match cfg.norm_placement {
        NormPlacement::Subln => {}
        NormPlacement::SwinNorm => out.push(
            "post-norm placement (`norm_placement = swin_norm`: norms after attention and the FFN)"
                .into(),
        ),
        NormPlacement::Pre => {
            out.push("pre-norm without SubLN (`norm_placement = pre`: no sub-norms)".into())
        }
    }
    if !cfg.mlp_gated {
        out.push("an ungated MLP (`mlp_gated = false`)".into());
    }
    if cfg.attention_mode != AttentionMode::Causal {
        out.push(format!(
            "attention mode `{}` (transformers' BitNet is causal)",
            cfg.attention_mode.name()
        ));
    }
    for (sub, what) in [
        (crate::multimodal::VISION_DIR, "an image tower"),
        (crate::multimodal::VQ_DIR, "a VQ-VAE image tokenizer"),
        ("audio", "an audio codec"),
    ] {
        if dir.join(sub).exists() {
            out.push(format!("{what} (`{sub}/`)"));
        }
    }
    out
}

/// Config values transformers reads differently or not at all, one phrase each.
fn ignored_by_transformers(cfg: &Config, dir: &Path) -> Vec<String> {
    let mut out = vec![format!(
        "sliding_window_size = {}{} (transformers attends to the whole context)",
        cfg.sliding_window_size,
        if cfg.use_attention_sinks {
            " with attention sinks"
        } else {
            ""
        }
    )];
    if dir.join(crate::latent::SPEC_FILE).exists() {
        out.push(format!(
            "{} (latent mode; transformers runs the model in token mode)",
            crate::latent::SPEC_FILE
        ));
    }
    out
}

/// `config.json` of the export: Tritter's config in HF key names, nulls dropped, the form's
/// `quantization_config`, `architectures` and `dtype`.
fn config_json(cfg: &Config, form: HfForm, any_f32: bool) -> Result<String> {
    let v = serde_json::to_value(cfg.to_config_file())
        .map_err(|e| Error::Invalid(format!("config serialisation: {e}")))?;
    let Value::Object(map) = v else {
        return Err(Error::Invalid("config serialisation: not an object".into()));
    };
    let mut m: Map<String, Value> = map.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let (class, mode) = match form {
        HfForm::Packed => ("bitlinear", "offline"),
        HfForm::Bf16 => ("autobitlinear", "online"),
    };
    m.insert(
        "quantization_config".into(),
        json!({
            "quant_method": "bitnet",
            "linear_class": class,
            "quantization_mode": mode,
            "use_rms_norm": cfg.bitlinear_rms_norm.is_some(),
            "rms_norm_eps": cfg.bitlinear_rms_norm.unwrap_or(1e-6),
            "modules_to_not_convert": null,
        }),
    );
    m.insert("architectures".into(), json!(["BitNetForCausalLM"]));
    let dtype = if any_f32 { "float32" } else { "bfloat16" };
    m.insert("dtype".into(), json!(dtype));
    serde_json::to_string_pretty(&Value::Object(m))
        .map_err(|e| Error::Invalid(format!("config serialisation: {e}")))
}

/// `tokenizer_config.json` of the export: the source's object, with what transformers'
/// `AutoTokenizer` and `apply_chat_template` need filled in where missing. Returns the text and
/// whether the chat template is the source's.
fn tokenizer_config(src: &Path, cfg: &Config, template: &str) -> Result<(String, bool)> {
    let p = src.join("tokenizer_config.json");
    let mut m = if p.exists() {
        let text = fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "{}: not a JSON object",
                    p.display()
                )))
            }
            Err(e) => {
                return Err(Error::Invalid(format!(
                    "{}: invalid JSON: {e}",
                    p.display()
                )))
            }
        }
    } else {
        Map::new()
    };
    let tok = crate::data::tokenizer::load(&src.join("tokenizer.json"))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let token = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i));
    let specials = [
        ("bos_token", token(cfg.bos_token_id)),
        ("eos_token", token(cfg.eos_token_ids.first().copied())),
        ("pad_token", token(cfg.pad_token_id)),
    ];
    for (key, val) in specials {
        if let (Some(s), false) = (val, m.contains_key(key)) {
            m.insert(key.into(), json!(s));
        }
    }
    m.entry("tokenizer_class")
        .or_insert_with(|| json!("PreTrainedTokenizerFast"));
    let own = m.contains_key("chat_template");
    if !own {
        m.insert("chat_template".into(), json!(template));
    }
    let text = serde_json::to_string_pretty(&Value::Object(m))
        .map_err(|e| Error::Invalid(format!("tokenizer_config serialisation: {e}")))?;
    Ok((text, own))
}

fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(tensors.iter(), Some(meta), path).map_err(|e| {
        Error::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        }
    })?;
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Refuses an `out` that would replace something other than an earlier checkpoint, or the source.
fn check_out(src: &Path, out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let same = fs::canonicalize(src).ok() == fs::canonicalize(out).ok();
    if same {
        return Err(Error::Invalid(format!(
            "--out {} is the model directory itself; export into another directory",
            out.display()
        )));
    }
    let empty = fs::read_dir(out)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !(out.is_dir() && (empty || out.join("config.json").exists())) {
        return Err(Error::Invalid(format!(
            "--out {} exists and is not a checkpoint directory; it would be replaced",
            out.display()
        )));
    }
    Ok(())
}

/// Exports the checkpoint in `src` to `out` in `form`; `chat_template` is used when the source
/// has none. Refuses checkpoints with features transformers' BitNet lacks, naming each.
pub fn export_hf(
    src: &Path,
    out: &Path,
    form: HfForm,
    chat_template: &str,
) -> Result<ExportSummary> {
    let cfg = Config::from_json_file(&src.join("config.json"))?;
    let lacks = hf_unsupported(&cfg, src);
    if !lacks.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: transformers' BitNetForCausalLM has no {}; not exported",
            src.display(),
            lacks.join(", no ")
        )));
    }
    check_out(src, out)?;
    let store = TensorStore::load_dir(src, &Device::Cpu)?;
    let (tensors, any_f32) = tensors::hf_tensors(&cfg, &store, form)?;
    let config = config_json(&cfg, form, any_f32)?;
    let has_tok = src.join("tokenizer.json").exists();
    let tok_cfg = if has_tok {
        Some(tokenizer_config(src, &cfg, chat_template)?)
    } else {
        None
    };
    let latent = src.join(crate::latent::SPEC_FILE);
    write_dir_atomically(out, |tmp| {
        write_file_synced(&tmp.join("config.json"), config.as_bytes())?;
        write_safetensors(&tmp.join("model.safetensors"), &tensors)?;
        if let Some((text, _)) = &tok_cfg {
            let from = src.join("tokenizer.json");
            let bytes = fs::read(&from).map_err(|e| Error::io(&from, e))?;
            write_file_synced(&tmp.join("tokenizer.json"), &bytes)?;
            write_file_synced(&tmp.join("tokenizer_config.json"), text.as_bytes())?;
        }
        if latent.exists() {
            let bytes = fs::read(&latent).map_err(|e| Error::io(&latent, e))?;
            write_file_synced(&tmp.join(crate::latent::SPEC_FILE), &bytes)?;
        }
        Ok(())
    })?;
    Ok(ExportSummary {
        tensors: tensors.len(),
        tokenizer: has_tok,
        source_template: tok_cfg.as_ref().is_some_and(|(_, own)| *own),
        ignored: ignored_by_transformers(&cfg, src),
    })
}
