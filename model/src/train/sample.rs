//! Sample completions from an exported checkpoint (`final/`), written to `samples.txt` at the end
//! of a run when `[eval] samples` lists prompts: greedy decoding, unedited.

use super::TrainError;
use crate::checkpoint::load_model;
use crate::generation::{generate, GenerateOptions};
use crate::sampling::SamplingParams;
use candle_core::Device;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Greedy completions of `prompts` (at most `max_new` tokens each) by the checkpoint in `dir`,
/// decoded with its `tokenizer.json`. Returns (prompt, completion) pairs.
pub fn complete(
    dir: &Path,
    prompts: &[String],
    max_new: usize,
    device: &Device,
) -> Result<Vec<(String, String)>, TrainError> {
    let ck = load_model(dir, device)?;
    let tp = dir.join("tokenizer.json");
    let tok = crate::data::tokenizer::load(&tp).map_err(|e| TrainError::Config(e.to_string()))?;
    let opts = GenerateOptions {
        max_new_tokens: max_new,
        sampling: SamplingParams::greedy(),
        stop_tokens: ck.config.eos_token_ids.clone(),
    };
    let cancel = AtomicBool::new(false);
    let mut out = Vec::new();
    for p in prompts {
        let enc = tok
            .encode(p.as_str(), false)
            .map_err(|e| TrainError::Config(format!("encoding a sample prompt: {e}")))?;
        let mut ids: Vec<u32> = ck.config.bos_token_id.into_iter().collect();
        ids.extend_from_slice(enc.get_ids());
        let stats = generate(&ck.model, &ids, &opts, &cancel, |_| {
            ControlFlow::Continue(())
        })?;
        let text = tok
            .decode(&stats.generated, false)
            .map_err(|e| TrainError::Config(format!("decoding a sample: {e}")))?;
        out.push((p.clone(), text));
    }
    Ok(out)
}
