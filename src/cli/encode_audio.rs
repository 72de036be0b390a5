//! `tritter encode audio --model DIR (--audio FILE | --samples S.safetensors) --out O.safetensors
//! [--codebooks N]`: the conformance probe of the audio path. `DIR` is a checkpoint with an
//! `audio/` folder, or a codec directory itself (HF `EncodecModel` / `MimiModel` layout). Writes
//! `samples` (f32 `[S]`, mono at the codec's rate: the file decoded, downmixed and resampled, or
//! the given tensor), `codes` (i64 `[n_q, T]`; `n_q` = `--codebooks`, default the checkpoint's
//! `tokens.json`, or every codebook of a bare codec) and `audio_values` (f32 `[S']`, the codes
//! decoded). Tensor names are a contract: scripts compare them with Hugging Face transformers.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

use tritter_model::audio::{AudioTokens, Codec, AUDIO_DIR};

/// Where the samples come from.
pub enum SampleSource<'a> {
    Audio(&'a Path),
    Samples(&'a Path),
}

/// Largest `--samples` file: ten minutes of f32 at 48 kHz and change.
const MAX_SAMPLES_FILE: u64 = 600 * 48_000 * 4 + (1 << 20);

/// Reads `samples` (or the file's only tensor): f32 `[S]`, `[1, S]` or `[1, 1, S]`.
fn read_samples(path: &Path) -> Result<Vec<f32>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .len();
    if len > MAX_SAMPLES_FILE {
        bail!(
            "{} is {len} bytes, over the {MAX_SAMPLES_FILE}-byte limit for a sample tensor; refused",
            path.display()
        );
    }
    let map = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    let t = match map.get("samples") {
        Some(t) => t.clone(),
        None if map.len() == 1 => map.into_values().next().context("empty file")?,
        None => bail!("{}: no tensor named samples", path.display()),
    };
    let dims = t.dims().to_vec();
    let n = t.elem_count();
    if dims.is_empty() || dims.iter().rev().skip(1).any(|&d| d != 1) || n == 0 {
        bail!(
            "{}: samples has shape {dims:?}, expected [S], [1, S] or [1, 1, S] with S > 0",
            path.display()
        );
    }
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The codec folder of `dir` and the codebooks its language model sees (`None` for a bare
/// codec directory).
fn codec_dir(dir: &Path) -> Result<(std::path::PathBuf, Option<AudioTokens>)> {
    let audio = dir.join(AUDIO_DIR);
    if audio.join("config.json").is_file() {
        let p = audio.join(tritter_model::audio::part::TOKENS_FILE);
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let tokens: AudioTokens =
            serde_json::from_str(&text).with_context(|| format!("{}", p.display()))?;
        return Ok((audio, Some(tokens)));
    }
    let cfg = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg).with_context(|| {
        format!(
            "{} has no audio/ codec and no config.json of its own",
            dir.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", cfg.display()))?;
    match v.get("model_type").and_then(|t| t.as_str()) {
        Some("encodec" | "mimi") => Ok((dir.to_path_buf(), None)),
        _ => bail!(
            "{} has no audio path (no audio/ codec, and it is not an EnCodec or Mimi directory): it takes no audio",
            dir.display()
        ),
    }
}

pub fn run(
    model_dir: &Path,
    src: SampleSource<'_>,
    codebooks: Option<usize>,
    out: &Path,
) -> Result<()> {
    let device = Device::Cpu;
    let (dir, tokens) = codec_dir(model_dir)?;
    let codec = Codec::load(&dir, &device).with_context(|| format!("loading {}", dir.display()))?;
    let n_q = codebooks
        .or(tokens.map(|t| t.codebooks))
        .unwrap_or(codec.num_quantizers());
    if n_q == 0 || n_q > codec.num_quantizers() {
        bail!(
            "--codebooks {n_q}: the codec has {} codebooks",
            codec.num_quantizers()
        );
    }
    let samples = match src {
        SampleSource::Samples(p) => read_samples(p)?,
        SampleSource::Audio(p) => crate::audio_in::load_mono_at(p, codec.sample_rate())?,
    };
    let s = samples.len();
    let x = Tensor::from_vec(samples, (1, 1, s), &device)?;
    let codes = codec.encode(&x, n_q).context("encoding the clip")?;
    let decoded = codec.decode(&codes).context("decoding the codes")?;
    let mut map = HashMap::new();
    map.insert("samples".to_string(), x.flatten_all()?);
    map.insert("codes".to_string(), codes.squeeze(0)?);
    map.insert("audio_values".to_string(), decoded.flatten_all()?);
    candle_core::safetensors::save(&map, out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
