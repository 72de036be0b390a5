//! A small VQ-VAE training loop: AdamW (candle's) over a `VarMap`, shuffled batches of images,
//! the losses of [`VqVae::losses`]; returns the trained model (which saves its current values)
//! and its `VarMap`. The trainer of the language model (`crate::train`) is not involved.
//!
//! Must keep to differentiable candle ops (everything in [`VqVae::losses`] has a backward) and be
//! reproducible in its data order and initial weights for a given seed (candle's CPU RNG cannot be
//! seeded, so the weights are re-drawn here from the recorded initialisers).

use super::config::VqVaeConfig;
use super::model::{VqLosses, VqVae};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Init, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Options of [`train_vqvae`].
#[derive(Debug, Clone)]
pub struct VqTrainOptions {
    /// The model to train (from scratch).
    pub model: VqVaeConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW β1 (taming-transformers trains its VQGAN with 0.5).
    pub beta1: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// AdamW epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the initial weights and the data order.
    pub seed: u64,
    /// Where to train.
    pub device: Device,
}

impl Default for VqTrainOptions {
    fn default() -> Self {
        VqTrainOptions {
            model: VqVaeConfig::default(),
            steps: 1000,
            batch_size: 8,
            lr: 1e-4,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
            seed: 0,
            device: Device::Cpu,
        }
    }
}

/// Re-draws every weight of a `VarMap`-built model from its initialiser with a seeded RNG.
pub fn seeded_init(model: &VqVae, varmap: &VarMap, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| Error::Invalid("VQ-VAE init: the VarMap lock is poisoned".into()))?;
    for (name, t, init) in model.recorded() {
        let n = t.elem_count();
        let values: Vec<f32> = match *init {
            Init::Const(v) => vec![v as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
            _ => {
                return Err(Error::Invalid(format!(
                    "VQ-VAE init: `{name}` has no seeded form"
                )))
            }
        };
        let var = vars
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("VQ-VAE init: `{name}` is not in the VarMap")))?;
        var.set(&Tensor::from_vec(values, t.shape(), t.device())?)?;
    }
    Ok(())
}

/// All images as one `[N, C, H, W]` tensor; each input is `[C, H, W]` or a batch `[B, C, H, W]`.
fn stack_images(images: &[Tensor], cfg: &VqVaeConfig, device: &Device) -> Result<Tensor> {
    let mut all = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let img = match img.rank() {
            3 => img.unsqueeze(0)?,
            4 => img.clone(),
            _ => {
                return Err(Error::Invalid(format!(
                    "VQ-VAE training: image {i} has shape {:?}; expected [C, H, W] or [B, C, H, W]",
                    img.dims()
                )))
            }
        };
        let dims = img.dims();
        if dims[1] != cfg.in_channels {
            return Err(Error::Invalid(format!(
                "VQ-VAE training: image {i} has {} channels; the config has in_channels {}",
                dims[1], cfg.in_channels
            )));
        }
        if let Some(first) = all.first().map(|t: &Tensor| t.dims()[2..].to_vec()) {
            if dims[2..] != first[..] {
                return Err(Error::Invalid(format!(
                    "VQ-VAE training: image {i} is {}×{}, image 0 is {}×{}; batches need one size",
                    dims[2], dims[3], first[0], first[1]
                )));
            }
        }
        all.push(img.to_dtype(DType::F32)?.to_device(device)?);
    }
    if all.is_empty() {
        return Err(Error::Invalid("VQ-VAE training: no images".into()));
    }
    Ok(Tensor::cat(&all, 0)?)
}

/// Trains a VQ-VAE from scratch on `images` (pixels in [-1, 1]); `on_step(step, losses)` sees
/// each step's losses before its update. A non-finite loss stops training with an error.
pub fn train_vqvae(
    images: &[Tensor],
    opts: &VqTrainOptions,
    mut on_step: impl FnMut(usize, &VqLosses),
) -> Result<(VqVae, VarMap)> {
    opts.model.validate()?;
    if opts.batch_size == 0 {
        return Err(Error::Invalid(
            "VQ-VAE training: batch_size must be at least 1".into(),
        ));
    }
    let data = stack_images(images, &opts.model, &opts.device)?;
    let n = data.dim(0)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &opts.device);
    let model = VqVae::new(&opts.model, vb)?;
    seeded_init(&model, &varmap, opts.seed)?;
    let params = ParamsAdamW {
        lr: opts.lr,
        beta1: opts.beta1,
        beta2: opts.beta2,
        eps: opts.eps,
        weight_decay: opts.weight_decay,
    };
    let mut opt = AdamW::new(varmap.all_vars(), params)?;
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed_da7a);
    let mut order: Vec<u32> = Vec::new();
    for step in 0..opts.steps {
        let mut batch = Vec::with_capacity(opts.batch_size);
        while batch.len() < opts.batch_size.min(n) {
            if order.is_empty() {
                order = (0..n as u32).collect();
                order.shuffle(&mut rng);
            }
            batch.extend(order.pop());
        }
        let idx = Tensor::new(batch.as_slice(), &opts.device)?;
        let losses = model.losses(&data.index_select(&idx, 0)?)?;
        let total = losses.total.to_scalar::<f32>()?;
        if !total.is_finite() {
            return Err(Error::Invalid(format!(
                "VQ-VAE training: loss is {total} at step {step}"
            )));
        }
        opt.backward_step(&losses.total)?;
        on_step(step, &losses);
    }
    Ok((model, varmap))
}
