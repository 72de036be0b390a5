//! [`VqVae`]: the Chameleon VQ-VAE image tokenizer — encoder, `quant_conv`, quantiser,
//! `post_quant_conv`, decoder — with loading, atomic saving and the training losses.
//!
//! Must match HF transformers' `ChameleonVQVAE.encode` for the encoder path (`encoder.*`,
//! `quant_conv.*`, `quantize.embedding.weight`, tested against HF fixtures); the decode path
//! (`post_quant_conv.*`, `decoder.*`) follows Chameleon's original VQGAN (taming-transformers
//! layout) and is tested against our own PyTorch statement. A checkpoint without `decoder.*`
//! tensors (as HF's own `ChameleonVQVAE` has none) loads as an encoder-only model.

use super::blocks::{Builder, Conv, Named};
use super::config::VqVaeConfig;
use super::decoder::Decoder;
use super::encoder::Encoder;
use super::quantizer::Quantizer;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

/// Prefix of the VQ-VAE's tensors inside a full Chameleon checkpoint.
pub const CHAMELEON_PREFIX: &str = "model.vqmodel.";
/// Top-level names of the VQ-VAE's tensors.
const ROOTS: [&str; 5] = [
    "encoder.",
    "decoder.",
    "quantize.",
    "quant_conv.",
    "post_quant_conv.",
];

/// The training losses of one batch (scalar tensors; `total` is the one to backpropagate).
#[derive(Debug, Clone)]
pub struct VqLosses {
    /// Reconstruction: mean squared error between the pixels and the decoded pixels.
    pub recon: Tensor,
    /// Codebook: `mean((sg[z_e] − e)²)` — moves the chosen entries toward the encoder output.
    pub codebook: Tensor,
    /// Commitment: `β · mean((z_e − sg[e])²)` — keeps the encoder near its entries.
    pub commitment: Tensor,
    /// `recon + codebook + commitment`.
    pub total: Tensor,
}

impl VqLosses {
    /// The four values as `f32`: `[recon, codebook, commitment, total]`.
    pub fn values(&self) -> Result<[f32; 4]> {
        let v = |t: &Tensor| -> Result<f32> { Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?) };
        Ok([
            v(&self.recon)?,
            v(&self.codebook)?,
            v(&self.commitment)?,
            v(&self.total)?,
        ])
    }
}

/// The Chameleon VQ-VAE.
#[derive(Debug, Clone)]
pub struct VqVae {
    cfg: VqVaeConfig,
    encoder: Encoder,
    quant_conv: Conv,
    quantize: Quantizer,
    post_quant_conv: Option<Conv>,
    decoder: Option<Decoder>,
    tensors: Named,
    device: Device,
}

impl VqVae {
    /// Builds every module (decoder included) from `vb`: a `VarBuilder::from_varmap` for a
    /// trainable model, or any other backend holding the tensors under HF's names.
    pub fn new(cfg: &VqVaeConfig, vb: VarBuilder) -> Result<VqVae> {
        cfg.validate()?;
        let device = vb.device().clone();
        Self::build(cfg, Builder::new(vb, None), true, device)
    }

    /// Builds the model from named tensors (a whole checkpoint's, HF names, optionally under
    /// `model.vqmodel.`), converted to f32 on `device`. Without `decoder.*` tensors the model is
    /// encoder-only; a VQ-VAE tensor the config does not use is an error.
    pub fn from_tensors(
        cfg: &VqVaeConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<VqVae> {
        cfg.validate()?;
        let full = tensors.keys().any(|k| k.starts_with(CHAMELEON_PREFIX));
        let mut own = HashMap::new();
        for (name, t) in tensors {
            let name = match (full, name.strip_prefix(CHAMELEON_PREFIX)) {
                (true, Some(rest)) => rest.to_string(),
                (true, None) => continue,
                (false, _) => name,
            };
            if ROOTS.iter().any(|r| name.starts_with(r)) {
                own.insert(name, t.to_dtype(DType::F32)?.to_device(device)?);
            }
        }
        let shapes: HashMap<String, Vec<usize>> = own
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        let with_decoder = shapes.contains_key("decoder.conv_in.weight");
        let names: Vec<String> = shapes.keys().cloned().collect();
        let vb = VarBuilder::from_tensors(own, DType::F32, device);
        let model = Self::build(
            cfg,
            Builder::new(vb, Some(shapes)),
            with_decoder,
            device.clone(),
        )?;
        let used: std::collections::HashSet<&str> =
            model.tensors.iter().map(|(n, _, _)| n.as_str()).collect();
        let mut unused: Vec<&String> = names
            .iter()
            .filter(|n| !used.contains(n.as_str()))
            .collect();
        unused.sort();
        if let Some(first) = unused.first() {
            return Err(Error::Invalid(format!(
                "checkpoint: tensor `{first}` is not part of this VQ-VAE config ({} unused; check \
                 num_res_blocks, channel_multiplier, attn_resolutions)",
                unused.len()
            )));
        }
        Ok(model)
    }

    /// Loads `dir/config.json` (a `ChameleonVQVAEConfig` or a Chameleon config with
    /// `vq_config`) and `dir/model.safetensors`.
    pub fn load(dir: &Path, device: &Device) -> Result<VqVae> {
        let cfg = VqVaeConfig::from_file(&dir.join("config.json"))?;
        let path = dir.join("model.safetensors");
        if !path.exists() {
            return Err(Error::Invalid(format!("{}: no such file", path.display())));
        }
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| {
            Error::Safetensors {
                path: path.clone(),
                msg: e.to_string(),
            }
        })?;
        Self::from_tensors(&cfg, tensors, device)
    }

    fn build(cfg: &VqVaeConfig, b: Builder, with_decoder: bool, device: Device) -> Result<VqVae> {
        let encoder = Encoder::new(&b.pp("encoder"), cfg)?;
        let (lat, dim) = (cfg.latent_channels, cfg.embed_dim);
        let quant_conv = Conv::new(&b.pp("quant_conv"), lat, dim, 1, 1, 0)?;
        let quantize = Quantizer::new(&b.pp("quantize"), cfg.num_embeddings, dim)?;
        // HF's checkpoint has post_quant_conv although it has no decoder: load it when present.
        let post = b.pp("post_quant_conv");
        let post_quant_conv = if with_decoder || post.has("weight") {
            Some(Conv::new(&post, dim, lat, 1, 1, 0)?)
        } else {
            None
        };
        let decoder = if with_decoder {
            Some(Decoder::new(&b.pp("decoder"), cfg)?)
        } else {
            None
        };
        Ok(VqVae {
            cfg: cfg.clone(),
            encoder,
            quant_conv,
            quantize,
            post_quant_conv,
            decoder,
            tensors: b.recorded(),
            device,
        })
    }

    /// Writes `config.json` + `model.safetensors` (HF names, f32) into `dir` atomically: a
    /// temporary sibling directory is filled, fsynced and renamed over `dir`. A model built from
    /// a `VarMap` saves its current (trained) values.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = self.cfg.to_json()?;
        let mut map = HashMap::new();
        for (name, t, _) in &self.tensors {
            map.insert(name.clone(), t.to_device(&Device::Cpu)?.contiguous()?);
        }
        crate::checkpoint::write_dir_atomically(dir, |tmp| {
            let cj = tmp.join("config.json");
            let mut f = fs::File::create(&cj).map_err(|e| Error::io(&cj, e))?;
            f.write_all(json.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io(&cj, e))?;
            let st = tmp.join("model.safetensors");
            candle_core::safetensors::save(&map, &st).map_err(|e| Error::Safetensors {
                path: st.clone(),
                msg: e.to_string(),
            })?;
            fs::File::open(&st)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&st, e))
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VqVaeConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the model has a decoder (HF's `ChameleonVQVAE` checkpoints have none).
    pub fn has_decoder(&self) -> bool {
        self.decoder.is_some()
    }

    /// Every tensor under its HF name, in construction order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.tensors
            .iter()
            .map(|(n, t, _)| (n.clone(), t.clone()))
            .collect()
    }

    pub(crate) fn recorded(&self) -> &Named {
        &self.tensors
    }

    /// The codebook `[num_embeddings, embed_dim]`.
    pub fn codebook(&self) -> &Tensor {
        self.quantize.embedding()
    }

    /// The latent grid `(h, w)` of an `H × W` image; `H` and `W` must be positive multiples of
    /// `2^(levels − 1)`.
    pub fn grid(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let s = self.cfg.downscale();
        if height == 0 || width == 0 || !height.is_multiple_of(s) || !width.is_multiple_of(s) {
            return Err(Error::Invalid(format!(
                "VQ-VAE: image of {height}×{width} pixels; sides must be positive multiples of {s}"
            )));
        }
        Ok((height / s, width / s))
    }

    fn check_pixels(&self, pixels: &Tensor) -> Result<Tensor> {
        let dims = pixels.dims();
        if dims.len() != 4 || dims[1] != self.cfg.in_channels {
            return Err(Error::Invalid(format!(
                "VQ-VAE: pixels of shape {dims:?}; expected [batch, {}, height, width]",
                self.cfg.in_channels
            )));
        }
        self.grid(dims[2], dims[3])?;
        Ok(pixels.to_dtype(DType::F32)?.to_device(&self.device)?)
    }

    /// The encoder's output `[B, latent_channels, h, w]` (HF `encode(...).last_hidden_state`).
    pub fn encoder_hidden(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self.check_pixels(pixels)?;
        self.encoder.forward(&x, false)
    }

    /// The continuous latents `z_e = quant_conv(encoder(pixels))`, `[B, embed_dim, h, w]`.
    pub fn latents(&self, pixels: &Tensor) -> Result<Tensor> {
        self.quant_conv.forward(&self.encoder_hidden(pixels)?)
    }

    /// Codes of latents `[B, embed_dim, h, w]`: `I64 [B, h·w]`, row-major over the grid.
    pub fn quantize(&self, latents: &Tensor) -> Result<Tensor> {
        let b = latents.dim(0)?;
        Ok(self
            .quantize
            .nearest(latents)?
            .to_dtype(DType::I64)?
            .reshape((b, ()))?)
    }

    /// Pixels `[B, C, H, W]` in [-1, 1] → codes `I64 [B, h·w]` (HF `encode(...).image_tokens`).
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        self.quantize(&self.latents(pixels)?)
    }

    /// Codes (`[B, h·w]` or `[B, h, w]`, any integer dtype) → the codebook vectors
    /// `[B, embed_dim, h, w]`.
    pub fn embed_codes(&self, codes: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
        let b = codes.dim(0)?;
        self.quantize.lookup(codes, (b, h, w))
    }

    /// Quantised latents `[B, embed_dim, h, w]` → pixels `[B, out_channels, H, W]`.
    pub fn decode_latents(&self, quantized: &Tensor) -> Result<Tensor> {
        self.decode_inner(quantized, false)
    }

    fn decode_inner(&self, quantized: &Tensor, train: bool) -> Result<Tensor> {
        let (Some(post), Some(decoder)) = (&self.post_quant_conv, &self.decoder) else {
            return Err(Error::Invalid(
                "VQ-VAE: this checkpoint has no decoder (no `decoder.*` tensors); it can encode \
                 only"
                    .into(),
            ));
        };
        decoder.forward(&post.forward(quantized)?, train)
    }

    /// Codes → pixels `[B, out_channels, h·s, w·s]` for a latent grid of `h × w`.
    pub fn decode(&self, codes: &Tensor, grid: (usize, usize)) -> Result<Tensor> {
        self.decode_latents(&self.embed_codes(codes, grid)?)
    }

    /// The quantiser's part of training on latents `z_e` `[B, embed_dim, h, w]`: the
    /// straight-through quantised latents `z_q = z_e + sg[e − z_e]` (value `e`, gradient to
    /// `z_e`), the codebook loss `mean((sg[z_e] − e)²)` and the commitment loss
    /// `β · mean((z_e − sg[e])²)`. Their sum equals HF's `embedding_loss` in value.
    pub fn quantizer_losses(&self, z_e: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, _, h, w) = z_e.dims4()?;
        let codes = self.quantize.nearest(&z_e.detach())?;
        let e = self.quantize.lookup(&codes, (b, h, w))?;
        let codebook = (z_e.detach() - &e)?.sqr()?.mean_all()?;
        let commitment = ((z_e - e.detach())?.sqr()?.mean_all()? * self.cfg.beta())?;
        let z_q = (z_e + (e - z_e)?.detach())?;
        Ok((z_q, codebook, commitment))
    }

    /// The training losses of a batch of pixels `[B, C, H, W]` (dropout on, when configured):
    /// reconstruction MSE of the decoded straight-through latents, plus the quantiser's losses.
    pub fn losses(&self, pixels: &Tensor) -> Result<VqLosses> {
        let x = self.check_pixels(pixels)?;
        let z_e = self.quant_conv.forward(&self.encoder.forward(&x, true)?)?;
        let (z_q, codebook, commitment) = self.quantizer_losses(&z_e)?;
        let recon = (self.decode_inner(&z_q, true)? - x)?.sqr()?.mean_all()?;
        let total = ((&recon + &codebook)? + &commitment)?;
        Ok(VqLosses {
            recon,
            codebook,
            commitment,
            total,
        })
    }
}
