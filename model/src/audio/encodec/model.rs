//! [`Encodec`]: the EnCodec neural audio codec — SEANet encoder, residual vector quantiser,
//! SEANet decoder — with loading (HF `EncodecModel` layout), atomic saving, inference on the fast
//! path and a differentiable training forward.
//!
//! Must match HF transformers' `EncodecModel.encode(x, bandwidth=…)` (codes) and `.decode`
//! (audio) for a clip encoded in one piece (`chunk_length_s` null, `normalize` false: the 24 kHz
//! model), held against HF fixtures in `tests/golden/encodec_*`. Chunked encoding with a scale
//! per chunk (the 48 kHz model: `normalize` true, `chunk_length_s` 1.0) is refused with an error
//! naming the key: the API carries no per-chunk scales.

use super::config::EncodecConfig;
use super::conv::EncodecPath;
use super::cpu::Frames;
use super::params::{Named, Params};
use super::quantizer::Rvq;
use super::seanet::Seanet;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::Path;

/// Names of the quantiser's EMA buffers (kept and saved, not trained, not counted as weights).
const EMA_BUFFERS: [&str; 3] = [".inited", ".cluster_size", ".embed_avg"];

/// The EnCodec codec.
#[derive(Debug, Clone)]
pub struct Encodec {
    cfg: EncodecConfig,
    encoder: Seanet,
    decoder: Seanet,
    quantizer: Rvq,
    tensors: Named,
    device: Device,
}

impl Encodec {
    /// Builds every module from `vb`: a `VarBuilder::from_varmap` for a trainable (randomly
    /// initialised) model, or any backend that holds the tensors under HF's names.
    pub fn new(cfg: &EncodecConfig, vb: VarBuilder) -> Result<Encodec> {
        cfg.validate()?;
        let p = Params::vars(vb);
        Self::build(cfg, &p)
    }

    /// Builds the model from a checkpoint's tensors (HF names, any float dtype), f32 on
    /// `device`. A tensor the config does not use is an error (it means a config mismatch).
    pub fn from_tensors(
        cfg: &EncodecConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Encodec> {
        cfg.validate()?;
        let p = Params::file(tensors, device);
        let model = Self::build(cfg, &p)?;
        let unused = p.unused();
        if let Some(first) = unused.first() {
            return Err(Error::Invalid(format!(
                "checkpoint: tensor `{first}` is not part of this EnCodec config ({} unused; \
                 check upsampling_ratios, num_residual_layers, num_lstm_layers, norm_type, \
                 use_conv_shortcut, target_bandwidths)",
                unused.len()
            )));
        }
        Ok(model)
    }

    /// Loads `dir/config.json` (an HF `EncodecConfig`) and `dir/model.safetensors`.
    pub fn load(dir: &Path, device: &Device) -> Result<Encodec> {
        let cfg = EncodecConfig::from_file(&dir.join("config.json"))?;
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

    fn build(cfg: &EncodecConfig, p: &Params) -> Result<Encodec> {
        let encoder = Seanet::encoder(&p.pp("encoder"), cfg)?;
        let decoder = Seanet::decoder(&p.pp("decoder"), cfg)?;
        let quantizer = Rvq::new(
            &p.pp("quantizer"),
            cfg.num_quantizers(),
            cfg.codebook_size,
            cfg.codebook_dim(),
        )?;
        Ok(Encodec {
            cfg: cfg.clone(),
            encoder,
            decoder,
            quantizer,
            tensors: p.recorded(),
            device: p.device().clone(),
        })
    }

    /// Writes `config.json` + `model.safetensors` (HF names, f32; weight-normalised convs as
    /// `parametrizations.weight.original0/1`, as transformers 5 saves them) into `dir`
    /// atomically. A model built from a `VarMap` saves its current (trained) values.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = self.cfg.to_json()?;
        let mut map = HashMap::new();
        for (name, t) in &self.tensors {
            let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
            map.insert(name.clone(), t.contiguous()?);
        }
        crate::checkpoint::write_dir_atomically(dir, |tmp| {
            crate::checkpoint::write_file_synced(&tmp.join("config.json"), json.as_bytes())?;
            let st = tmp.join("model.safetensors");
            candle_core::safetensors::save(&map, &st).map_err(|e| Error::Safetensors {
                path: st.clone(),
                msg: e.to_string(),
            })?;
            std::fs::File::open(&st)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&st, e))
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EncodecConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Sample rate of the waveform (Hz).
    pub fn sample_rate(&self) -> u32 {
        self.cfg.sampling_rate
    }

    /// Code frames per second (`sampling_rate / hop_length`; 75 for the 24 kHz model).
    pub fn frame_rate(&self) -> f64 {
        self.cfg.frame_rate()
    }

    /// Samples per code frame.
    pub fn hop_length(&self) -> usize {
        self.cfg.hop_length()
    }

    /// The number of codebooks (the most `encode` can use).
    pub fn num_quantizers(&self) -> usize {
        self.quantizer.len()
    }

    /// Entries per codebook.
    pub fn codebook_size(&self) -> usize {
        self.cfg.codebook_size
    }

    /// Weights, codebooks included (the quantiser's EMA buffers are not counted).
    pub fn param_count(&self) -> usize {
        self.tensors
            .iter()
            .filter(|(n, _)| !EMA_BUFFERS.iter().any(|b| n.ends_with(b)))
            .map(|(_, t)| t.elem_count())
            .sum()
    }

    /// Every tensor under its HF name, in construction order (EMA buffers included).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.tensors.clone()
    }

    /// The trainable tensors (every one but the EMA buffers), HF names.
    pub fn trainable_tensors(&self) -> Vec<(String, Tensor)> {
        self.tensors
            .iter()
            .filter(|(n, _)| !EMA_BUFFERS.iter().any(|b| n.ends_with(b)))
            .cloned()
            .collect()
    }

    fn check_samples(&self, samples: &Tensor) -> Result<Tensor> {
        if self.cfg.normalize {
            return Err(Error::config(
                "normalize",
                "true (per-chunk loudness scales, the 48 kHz model) is not supported",
            ));
        }
        if self.cfg.chunk_length_s.is_some() {
            return Err(Error::config(
                "chunk_length_s",
                "chunked encoding (the 48 kHz model) is not supported; it must be null",
            ));
        }
        let dims = samples.dims();
        if dims.len() != 3 || dims[1] != self.cfg.audio_channels || dims[2] == 0 {
            return Err(Error::Invalid(format!(
                "EnCodec: samples of shape {dims:?}; expected [batch, {}, samples > 0]",
                self.cfg.audio_channels
            )));
        }
        Ok(samples.to_dtype(DType::F32)?.to_device(&self.device)?)
    }

    /// The encoder's output before quantisation, `[B, hidden_size, ceil(S / hop_length)]`.
    pub fn embeddings(&self, samples: &Tensor, path: EncodecPath) -> Result<Tensor> {
        let x = self.check_samples(samples)?;
        self.encoder.forward(&x, path)
    }

    fn check_n_q(&self, n_q: usize) -> Result<()> {
        if n_q == 0 || n_q > self.num_quantizers() {
            return Err(Error::Invalid(format!(
                "EnCodec: {n_q} codebooks requested; this model has 1 to {}",
                self.num_quantizers()
            )));
        }
        Ok(())
    }

    /// Samples `f32 [B, audio_channels, S]` at `sample_rate` → codes `I64 [B, n_q, T]`,
    /// `T = ceil(S / hop_length)` (HF `encode(...).audio_codes[0]`).
    pub fn encode(&self, samples: &Tensor, n_q: usize) -> Result<Tensor> {
        self.encode_with(samples, n_q, EncodecPath::Fast)
    }

    /// [`Encodec::encode`] on the chosen path.
    pub fn encode_with(&self, samples: &Tensor, n_q: usize, path: EncodecPath) -> Result<Tensor> {
        self.check_n_q(n_q)?;
        let host = path == EncodecPath::Fast && self.device.is_cpu() && self.encoder.host_ok();
        if !host {
            let emb = self.embeddings(samples, path)?;
            return self.quantizer.encode(&emb, n_q);
        }
        // The fast path on the CPU: encoder and quantiser on host buffers, item by item.
        let x = self.check_samples(samples)?;
        let mut codes = Vec::with_capacity(x.dim(0)?);
        for b in 0..x.dim(0)? {
            let emb = self.encoder.forward_host(Frames::from_tensor(&x, b)?)?;
            let frames = emb.len;
            let c = self.quantizer.encode_host(emb.data, frames, n_q)?;
            codes.push(Tensor::from_vec(c, (n_q, frames), &Device::Cpu)?);
        }
        Ok(Tensor::stack(&codes, 0)?
            .to_dtype(DType::I64)?
            .to_device(&self.device)?)
    }

    /// [`Encodec::encode`] at `bandwidth` kbps (one of `target_bandwidths`), as HF counts it.
    pub fn encode_bandwidth(&self, samples: &Tensor, bandwidth: f64) -> Result<Tensor> {
        let n_q = self.cfg.num_quantizers_for_bandwidth(bandwidth)?;
        self.encode(samples, n_q)
    }

    /// Codes `[B, n_q, T]` (any integer dtype) → the quantised embeddings `[B, hidden_size, T]`.
    pub fn quantized(&self, codes: &Tensor) -> Result<Tensor> {
        self.quantizer.decode(&codes.to_device(&self.device)?)
    }

    /// Codes `I64 [B, n_q, T]` → samples `f32 [B, audio_channels, T · hop_length]` (HF
    /// `decode(codes, [None]).audio_values`; trim to the clip's length yourself).
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        self.decode_with(codes, EncodecPath::Fast)
    }

    /// [`Encodec::decode`] on the chosen path.
    pub fn decode_with(&self, codes: &Tensor, path: EncodecPath) -> Result<Tensor> {
        self.decoder.forward(&self.quantized(codes)?, path)
    }

    /// The training forward over samples `[B, audio_channels, S]` with every codebook, all
    /// differentiable: `(recon, codes, commitment_loss, codebook_loss)` — the decoded
    /// straight-through latents `[B, audio_channels, T · hop_length]` (compare with the samples
    /// over their first `S`), the codes `I64 [B, n_q, T]`, and the scalar losses of
    /// the residual quantiser (means over codebooks; see the quantiser). HF updates its
    /// codebooks by EMA; here the codebook loss moves them by gradient, as the VQ-VAE does.
    pub fn forward_train(&self, samples: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let t = self.forward_train_levels(samples)?;
        Ok((t.recon, t.codes, t.commitment, t.codebook))
    }

    /// [`Encodec::forward_train`] that also returns the first quantiser level alone,
    /// straight-through (`first`, `[B, D, T]`: value `e_0`, gradient to the encoder), for
    /// semantic distillation of codebook 0.
    pub fn forward_train_levels(&self, samples: &Tensor) -> Result<TrainForward> {
        let z = self.embeddings(samples, EncodecPath::Differentiable)?;
        let (z_q, codes, commitment, codebook, first) = self.quantizer.train_forward(&z)?;
        let recon = self.decoder.forward(&z_q, EncodecPath::Differentiable)?;
        Ok(TrainForward {
            recon,
            codes,
            commitment,
            codebook,
            first,
        })
    }
}

/// What [`Encodec::forward_train_levels`] returns.
pub struct TrainForward {
    pub recon: Tensor,
    pub codes: Tensor,
    pub commitment: Tensor,
    pub codebook: Tensor,
    pub first: Tensor,
}
