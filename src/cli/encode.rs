//! `tritter encode image --model DIR (--image FILE | --pixels P.safetensors) --out O.safetensors`:
//! the conformance probe of the image path. Writes `pixel_values` (f32 `[1,3,H,W]`, after the
//! checkpoint's preprocessing, or the given tensor), `last_hidden_state` (the SigLIP tower's
//! output, f32 `[1,N,D]`), `projected` (after pixel shuffle + projection, f32 `[1,N/s²,C]`) and,
//! when the checkpoint has a VQ tokenizer (`vqvae/`), `codes` (i64 `[1,h·w]`). Tensor names are a
//! contract: scripts compare them with Hugging Face transformers.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

use tritter_model::multimodal::{vq_pixel_values, VisionPart, VqPart};

/// What `encode` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncodeWhat {
    /// An image through the vision tower, connector and VQ tokenizer.
    Image,
    /// A clip through the audio codec (codes and the decoded clip).
    Audio,
}

/// Where the pixels come from.
pub enum PixelSource<'a> {
    Image(&'a Path),
    Pixels(&'a Path),
}

/// Largest `--pixels` file: one f32 `[1, 3, 4096, 4096]` image and change.
const MAX_PIXELS_FILE: u64 = 3 * 4096 * 4096 * 4 + (1 << 20);

/// Reads `pixel_values` (or the file's only tensor) from a safetensors file: f32 `[1,3,H,W]`.
fn read_pixels(path: &Path) -> Result<Tensor> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .len();
    if len > MAX_PIXELS_FILE {
        bail!(
            "{} is {len} bytes, over the {MAX_PIXELS_FILE}-byte limit for a pixel tensor; refused",
            path.display()
        );
    }
    let map = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    let t = match map.get("pixel_values") {
        Some(t) => t.clone(),
        None if map.len() == 1 => map.into_values().next().context("empty file")?,
        None => bail!("{}: no tensor named pixel_values", path.display()),
    };
    let dims = t.dims().to_vec();
    if dims.len() != 4 || dims[0] != 1 || dims[1] != 3 {
        bail!(
            "{}: pixel_values has shape {dims:?}, expected [1, 3, H, W]",
            path.display()
        );
    }
    Ok(t.to_dtype(DType::F32)?)
}

pub fn run(model_dir: &Path, src: PixelSource<'_>, out: &Path) -> Result<()> {
    let device = Device::Cpu;
    let cfg = tritter_model::Config::from_json_file(&model_dir.join("config.json"))
        .with_context(|| format!("reading the text config of {}", model_dir.display()))?;
    let vision = VisionPart::load(model_dir, cfg.hidden_size, &device)
        .with_context(|| format!("loading the image path of {}", model_dir.display()))?;
    let vq_dir = model_dir.join(tritter_model::multimodal::VQ_DIR);
    let vq = if VqPart::present(model_dir) {
        Some(
            tritter_model::vqvae::VqVae::load(&vq_dir, &device)
                .with_context(|| format!("loading {}", vq_dir.display()))?,
        )
    } else {
        None
    };
    if vision.is_none() && vq.is_none() {
        bail!(
            "{} has no image path (no vision/ tower, no vqvae/ tokenizer): it takes no images",
            model_dir.display()
        );
    }
    let pixels = match (src, &vision, &vq) {
        (PixelSource::Pixels(p), _, _) => read_pixels(p)?,
        (PixelSource::Image(p), Some(v), _) => {
            v.pixel_values(&crate::attach::load_image(p)?.1, &device)?
        }
        (PixelSource::Image(p), None, Some(q)) => vq_pixel_values(
            &crate::attach::load_image(p)?.1,
            q.config().resolution,
            &device,
        )?,
        (PixelSource::Image(_), None, None) => bail!("no image path"),
    };
    let mut map = HashMap::new();
    if let Some(v) = &vision {
        let hidden = v
            .tower
            .forward(&pixels)
            .context("running the vision tower")?;
        let projected = v
            .connector
            .forward(&hidden)
            .context("running the connector")?;
        map.insert("last_hidden_state".to_string(), hidden);
        map.insert("projected".to_string(), projected);
    }
    if let Some(q) = &vq {
        // The tower's processor and the VQ tokenizer both read pixels in [-1, 1]; the VQ codes
        // are taken from the same tensor (it must suit the tokenizer's downsampling).
        let codes = q.encode(&pixels).context("VQ-encoding the pixels")?;
        map.insert("codes".to_string(), codes);
    }
    map.insert("pixel_values".to_string(), pixels);
    candle_core::safetensors::save(&map, out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
