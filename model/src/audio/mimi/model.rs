//! [`Mimi`]: the Mimi codec's encode (waveform → codes) and decode (codes → waveform) paths,
//! built from candle-transformers' Mimi modules over HF's checkpoint layout.
//!
//! Must match HF transformers' `MimiModel.encode(x, num_quantizers=n_q)` / `MimiModel.decode`
//! in non-streaming use (tested against `tests/golden/mimi_tiny/`, written by HF itself).

use super::config::MimiConfig;
use super::layout::expected_tensors;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Module, StreamingModule, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::mimi::{conv, quantization, seanet, transformer, NormType};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// Tensors that are buffers, not parameters, in HF's `MimiModel` (not in [`Mimi::param_count`]).
const BUFFER_SUFFIXES: [&str; 3] = [".embed_sum", ".cluster_usage", ".initialized"];

/// The Mimi neural audio codec (inference).
///
/// Codes are `[B, n_q, T]` with codebook 0 from the **semantic** quantiser
/// (`quantizer.semantic_residual_vector_quantizer`, distilled from a speech model) and codebooks
/// `1..n_q` from the **acoustic** residual quantiser
/// (`quantizer.acoustic_residual_vector_quantizer`), which quantises the same latents as the
/// semantic one, not its residual. Asking for fewer codebooks keeps a prefix: the first `n_q`
/// codebooks of a full encode.
#[derive(Clone)]
pub struct Mimi {
    cfg: MimiConfig,
    encoder: seanet::SeaNetEncoder,
    encoder_transformer: transformer::ProjectedTransformer,
    downsample: conv::ConvDownsample1d,
    quantizer: quantization::SplitResidualVectorQuantizer,
    upsample: conv::ConvTrUpsample1d,
    decoder_transformer: transformer::ProjectedTransformer,
    decoder: seanet::SeaNetDecoder,
    vb: VarBuilder<'static>,
    param_count: usize,
}

impl std::fmt::Debug for Mimi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mimi")
            .field("cfg", &self.cfg)
            .field("param_count", &self.param_count)
            .finish_non_exhaustive()
    }
}

fn seanet_config(cfg: &MimiConfig) -> seanet::Config {
    seanet::Config {
        dimension: cfg.hidden_size,
        channels: cfg.audio_channels,
        causal: cfg.use_causal_conv,
        n_filters: cfg.num_filters,
        n_residual_layers: cfg.num_residual_layers,
        ratios: cfg.ratios(),
        activation: candle_nn::Activation::Elu(1.0),
        // Reads a plain `weight` when the checkpoint has one (HF's layout), else weight_g/_v.
        norm: conv::Norm::WeightNorm,
        kernel_size: cfg.kernel_size,
        residual_kernel_size: cfg.residual_kernel_size,
        last_kernel_size: cfg.last_kernel_size,
        dilation_base: cfg.dilation_growth_rate,
        pad_mode: if cfg.pad_mode == "replicate" {
            conv::PadMode::Replicate
        } else {
            conv::PadMode::Constant
        },
        true_skip: !cfg.use_conv_shortcut,
        compress: cfg.compress,
        lstm: 0,
        disable_norm_outer_blocks: 0,
        final_activation: None,
    }
}

fn transformer_config(cfg: &MimiConfig, theta: f64) -> transformer::Config {
    transformer::Config {
        d_model: cfg.hidden_size,
        num_heads: cfg.num_attention_heads,
        num_layers: cfg.num_hidden_layers,
        causal: true,
        norm_first: true,
        bias_ff: false,
        bias_attn: cfg.attention_bias,
        layer_scale: Some(cfg.layer_scale_initial_scale),
        positional_embedding: transformer::PositionalEmbedding::Rope,
        use_conv_block: false,
        cross_attention: false,
        conv_kernel_size: 1,
        use_conv_bias: false,
        gating: None,
        norm: NormType::LayerNorm,
        // candle lets a query see `context + 1` keys (itself and `context` before it); HF's
        // sliding window is `sliding_window` keys, itself included.
        context: cfg.sliding_window - 1,
        // Validated: a positive whole number.
        max_period: theta as usize,
        max_seq_len: cfg.max_position_embeddings,
        kv_repeat: 1,
        dim_feedforward: cfg.intermediate_size,
        conv_layout: true,
    }
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
}

impl Mimi {
    /// Loads `config.json` + `model.safetensors` (HF names) from `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Mimi> {
        let cfg = MimiConfig::from_file(&dir.join("config.json"))?;
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
        Self::from_tensors(&cfg, &tensors, device)
    }

    /// Builds the model from tensors under HF's names; every name and shape is checked first.
    pub fn from_tensors(
        cfg: &MimiConfig,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Mimi> {
        cfg.validate()?;
        let mut map = HashMap::new();
        let mut param_count = 0;
        for (name, shape) in expected_tensors(cfg) {
            let t = tensors
                .get(&name)
                .ok_or_else(|| Error::MissingTensor(name.clone()))?;
            if t.dims() != shape.as_slice() {
                return Err(Error::BadShape {
                    name,
                    got: t.dims().to_vec(),
                    expected: shape,
                });
            }
            if !is_float(t.dtype()) {
                return Err(Error::BadDtype {
                    name,
                    got: format!("{:?}", t.dtype()),
                    expected: "a float type".into(),
                });
            }
            if !BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                param_count += t.elem_count();
            }
            map.insert(name, t.to_dtype(DType::F32)?.to_device(device)?);
        }
        let vb = VarBuilder::from_tensors(map, DType::F32, device);
        Self::build(cfg, vb, param_count)
    }

    fn build(cfg: &MimiConfig, vb: VarBuilder<'static>, param_count: usize) -> Result<Mimi> {
        let (h, stride) = (cfg.hidden_size, cfg.latent_stride());
        let sea = seanet_config(cfg);
        let tr = transformer_config(cfg, cfg.rope_theta_value()?);
        let projected =
            |name: &str| transformer::ProjectedTransformer::new(h, &[h], &tr, vb.pp(name));
        Ok(Mimi {
            encoder: seanet::SeaNetEncoder::new(&sea, vb.pp("encoder"))?,
            encoder_transformer: projected("encoder_transformer")?,
            downsample: conv::ConvDownsample1d::new(stride, h, true, true, vb.pp("downsample"))?,
            quantizer: Self::quantizer(cfg, &vb, cfg.num_quantizers)?,
            upsample: conv::ConvTrUpsample1d::new(stride, h, true, true, vb.pp("upsample"))?,
            decoder_transformer: projected("decoder_transformer")?,
            decoder: seanet::SeaNetDecoder::new(&sea, vb.pp("decoder"))?,
            cfg: cfg.clone(),
            vb,
            param_count,
        })
    }

    /// The split quantiser with its first `n_q` codebooks (semantic first).
    fn quantizer(
        cfg: &MimiConfig,
        vb: &VarBuilder<'static>,
        n_q: usize,
    ) -> Result<quantization::SplitResidualVectorQuantizer> {
        Ok(quantization::SplitResidualVectorQuantizer::new(
            cfg.vector_quantization_hidden_dimension,
            Some(cfg.hidden_size),
            Some(cfg.hidden_size),
            n_q,
            cfg.codebook_size,
            vb.pp("quantizer"),
        )?)
    }

    fn quantizer_for(
        &self,
        n_q: usize,
    ) -> Result<Cow<'_, quantization::SplitResidualVectorQuantizer>> {
        if n_q > self.cfg.num_quantizers || n_q < self.cfg.num_semantic_quantizers.max(1) {
            return Err(Error::Invalid(format!(
                "Mimi: {n_q} codebooks asked for; this model has {} (at least {})",
                self.cfg.num_quantizers,
                self.cfg.num_semantic_quantizers.max(1)
            )));
        }
        if n_q == self.cfg.num_quantizers {
            Ok(Cow::Borrowed(&self.quantizer))
        } else {
            Ok(Cow::Owned(Self::quantizer(&self.cfg, &self.vb, n_q)?))
        }
    }

    /// Fails clearly when a transformer input is longer than the RoPE tables.
    fn check_steps(&self, steps: usize) -> Result<()> {
        if steps > self.cfg.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "Mimi: the clip is {steps} transformer steps long; max_position_embeddings is {} \
                 ({:.1} s at {} Hz)",
                self.cfg.max_position_embeddings,
                self.cfg.max_position_embeddings as f64 / self.cfg.encodec_frame_rate() as f64,
                self.cfg.sampling_rate
            )));
        }
        Ok(())
    }

    fn check_samples(&self, samples: &Tensor) -> Result<Tensor> {
        let dims = samples.dims();
        if dims.len() != 3 || dims[1] != self.cfg.audio_channels || dims[2] == 0 || dims[0] == 0 {
            return Err(Error::Invalid(format!(
                "Mimi: samples must be [batch, {}, samples] with samples > 0, got {dims:?}",
                self.cfg.audio_channels
            )));
        }
        Ok(samples.to_dtype(DType::F32)?)
    }

    /// The SEANet encoder's output `[B, hidden_size, steps]` (HF: `model.encoder.encoder_seanet`).
    pub fn encoder_seanet(&self, samples: &Tensor) -> Result<Tensor> {
        let x = self.check_samples(samples)?;
        Ok(self.encoder.forward(&x)?)
    }

    /// The latents before quantisation `[B, hidden_size, T]`, f32 (HF: `model.encoder(x).latents`).
    pub fn latents(&self, samples: &Tensor) -> Result<Tensor> {
        let xs = self.encoder_seanet(samples)?;
        self.check_steps(xs.dim(2)?)?;
        let mut tr = self.encoder_transformer.clone();
        tr.reset_state();
        let xs = first(tr.forward(&xs)?)?;
        Ok(xs.apply(&self.downsample)?)
    }

    /// Encodes f32 samples `[B, audio_channels, S]` at [`Mimi::sample_rate`] into codes
    /// `[B, n_q, T]` (i64; codebook 0 semantic), `T = ceil(S / frame_size)`.
    pub fn encode(&self, samples: &Tensor, n_q: usize) -> Result<Tensor> {
        let quantizer = self.quantizer_for(n_q)?;
        let latents = self.latents(samples)?;
        Ok(quantizer.encode(&latents)?.to_dtype(DType::I64)?)
    }

    /// Decodes codes `[B, n_q, T]` (integers in `0..codebook_size`, codebook 0 semantic) into
    /// f32 samples `[B, audio_channels, T * frame_size]`.
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let dims = codes.dims();
        if dims.len() != 3 || dims.contains(&0) || is_float(codes.dtype()) {
            return Err(Error::Invalid(format!(
                "Mimi: codes must be integer [batch, n_q, frames], got {:?} {dims:?}",
                codes.dtype()
            )));
        }
        let quantizer = self.quantizer_for(dims[1])?;
        let flat = codes.to_dtype(DType::I64)?.flatten_all()?;
        let (lo, hi) = (
            flat.min(0)?.to_scalar::<i64>()?,
            flat.max(0)?.to_scalar::<i64>()?,
        );
        if lo < 0 || hi >= self.cfg.codebook_size as i64 {
            return Err(Error::Invalid(format!(
                "Mimi: codes must be in 0..{}, got values in {lo}..={hi}",
                self.cfg.codebook_size
            )));
        }
        self.check_steps(dims[2] * self.cfg.latent_stride())?;
        let codes = codes.to_dtype(DType::U32)?;
        let emb = quantizer.decode(&codes)?;
        // One batch item at a time: candle-core 0.11.1's CPU conv_transpose1d (its col2im path)
        // is wrong for a batch of more than one (measured 1.7 max|Δ|/max|ref| on the upsample).
        let mut outs = Vec::with_capacity(dims[0]);
        for b in 0..dims[0] {
            let emb = emb.narrow(0, b, 1)?.apply(&self.upsample)?;
            let mut tr = self.decoder_transformer.clone();
            tr.reset_state();
            let xs = first(tr.forward(&emb)?)?;
            outs.push(self.decoder.forward(&xs)?);
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// The configuration.
    pub fn config(&self) -> &MimiConfig {
        &self.cfg
    }

    /// Audio sampling rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.cfg.sampling_rate
    }

    /// Code frames per second.
    pub fn frame_rate(&self) -> f64 {
        self.cfg.frame_rate()
    }

    /// Codebooks in all (the largest `n_q`).
    pub fn num_quantizers(&self) -> usize {
        self.cfg.num_quantizers
    }

    /// Semantic codebooks (they come first).
    pub fn num_semantic_quantizers(&self) -> usize {
        self.cfg.num_semantic_quantizers
    }

    /// Entries per codebook.
    pub fn codebook_size(&self) -> usize {
        self.cfg.codebook_size
    }

    /// Parameters, counted as HF's `model.num_parameters()` does (the codebooks' `embed_sum`,
    /// `cluster_usage` and `initialized` are buffers and not counted).
    pub fn param_count(&self) -> usize {
        self.param_count
    }
}

fn first(mut outs: Vec<Tensor>) -> Result<Tensor> {
    if outs.is_empty() {
        return Err(Error::Invalid(
            "Mimi: transformer returned no output".into(),
        ));
    }
    Ok(outs.swap_remove(0))
}
