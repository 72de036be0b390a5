//! Model configuration: `config.json` with Hugging Face key names (so HF BitNet configs load as they
//! are) deserialised into [`ConfigFile`], then validated into the typed [`Config`].
//!
//! Unknown keys in `config.json` are ignored on purpose: HF writes many bookkeeping keys
//! (`architectures`, `transformers_version`, `initializer_range`, ...) and new versions add more.
//! Every key the model uses is checked, and an error names the key.

use crate::attn::AttentionMode;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where the norms sit in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// Llama-style pre-norm: `x + attn(norm(x))`, `h + mlp(norm(h))`.
    Pre,
    /// Chameleon "swin norm": `x + norm(attn(x))`, `h + norm(mlp(h))`.
    #[serde(alias = "swin_norm", alias = "post")]
    SwinNorm,
    /// BitNet b1.58 SubLN: pre-norm plus an RMSNorm before `o_proj` (`attn_sub_norm`) and before
    /// `down_proj` (`ffn_sub_norm`), as in HF `BitNetForCausalLM`.
    #[serde(alias = "sub_ln")]
    Subln,
}

/// MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// ReLU² (`relu(x)^2`), BitNet's choice.
    Relu2,
    /// SiLU (with a gate this is SwiGLU).
    Silu,
}

/// Quantisation of the linear layers as stored in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Packed uint8 `[out/4, in]` ternary weights plus `weight_scale`, HF `bitlinear` / `offline`:
    /// `y = (x_q · W_q) / (s_x · weight_scale)`.
    PackedBitLinear,
    /// Packed uint8 weights under HF `autobitlinear` / `offline`: `y = (x_q·W_q / s_x) · weight_scale`.
    PackedAutoBitLinear,
    /// Full-precision master weights quantised on the fly (absmean), HF `autobitlinear` / `online`.
    Online,
}

/// The `quantization_config` object of an HF BitNet config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuantizationConfig {
    pub quant_method: String,
    #[serde(default = "default_linear_class")]
    pub linear_class: String,
    #[serde(default = "default_quant_mode")]
    pub quantization_mode: String,
    #[serde(default)]
    pub use_rms_norm: bool,
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_to_not_convert: Option<Vec<String>>,
}

fn default_linear_class() -> String {
    "bitlinear".into()
}
fn default_quant_mode() -> String {
    "offline".into()
}

/// The `rope_parameters` object newer transformers versions write instead of `rope_theta`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_type: Option<String>,
}

/// `config.json` as written by HF transformers for BitNet (plus Tritter's own switches).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigFile {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub pad_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub quantization_config: Option<QuantizationConfig>,
    // ---- Tritter's own switches (absent from HF configs; defaults give HF BitNet) ----
    /// "subln" (default), "pre", "swin_norm".
    #[serde(default)]
    pub norm_placement: Option<NormPlacement>,
    /// QK-Norm: RMSNorm over head_dim on queries and keys (`q_norm`, `k_norm`).
    #[serde(default)]
    pub qk_norm: Option<bool>,
    /// Gated MLP (`act(gate(x)) * up(x)`); false gives `down(act(up(x)))`.
    #[serde(default)]
    pub mlp_gated: Option<bool>,
    /// Sliding attention window (tokens); 0 or absent = full attention.
    #[serde(default)]
    pub sliding_window_size: Option<usize>,
    /// StreamingLLM attention sinks.
    #[serde(default)]
    pub use_attention_sinks: Option<bool>,
    /// "causal" (default), "bidirectional", "prefix_lm", "embedding".
    #[serde(default)]
    pub attention_mode: Option<String>,
}

/// A validated model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub activation: Activation,
    pub mlp_gated: bool,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub norm_placement: NormPlacement,
    pub qk_norm: bool,
    pub weight_format: WeightFormat,
    /// RMSNorm inside each BitLinear before activation quantisation (HF `use_rms_norm`).
    pub bitlinear_rms_norm: Option<f64>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub sliding_window_size: usize,
    pub use_attention_sinks: bool,
    /// How positions attend to each other (`attention_mode`).
    pub attention_mode: AttentionMode,
}

fn ids_of(key: &str, v: &Option<serde_json::Value>) -> Result<Vec<u32>> {
    let Some(v) = v else { return Ok(vec![]) };
    let one = |x: &serde_json::Value| -> Result<u32> {
        x.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::config(key, format!("expected a token id, got {x}")))
    };
    match v {
        serde_json::Value::Null => Ok(vec![]),
        serde_json::Value::Array(a) => a.iter().map(one).collect(),
        x => Ok(vec![one(x)?]),
    }
}

fn required(key: &str, v: Option<usize>) -> Result<usize> {
    match v {
        Some(0) => Err(Error::config(key, "must be greater than 0")),
        Some(n) => Ok(n),
        None => Err(Error::config(
            key,
            "missing (a positive integer is required)",
        )),
    }
}

/// The sizes of a config (`vocab_size` ... `head_dim`), checked against each other.
struct Dims {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_layers: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

fn dims(f: &ConfigFile) -> Result<Dims> {
    let vocab_size = required("vocab_size", f.vocab_size)?;
    let hidden_size = required("hidden_size", f.hidden_size)?;
    let intermediate_size = required("intermediate_size", f.intermediate_size)?;
    let num_layers = required("num_hidden_layers", f.num_hidden_layers)?;
    let num_heads = required("num_attention_heads", f.num_attention_heads)?;
    let num_kv_heads = required(
        "num_key_value_heads",
        Some(f.num_key_value_heads.unwrap_or(num_heads)),
    )?;
    if num_heads % num_kv_heads != 0 {
        return Err(Error::config(
            "num_key_value_heads",
            format!("{num_kv_heads} does not divide num_attention_heads {num_heads}"),
        ));
    }
    let head_dim = match f.head_dim {
        Some(d) => required("head_dim", Some(d))?,
        None => {
            if hidden_size % num_heads != 0 {
                return Err(Error::config(
                    "hidden_size",
                    format!("{hidden_size} is not divisible by num_attention_heads {num_heads}"),
                ));
            }
            hidden_size / num_heads
        }
    };
    if head_dim % 2 != 0 {
        return Err(Error::config(
            "head_dim",
            format!("{head_dim} must be even for RoPE"),
        ));
    }
    Ok(Dims {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
    })
}

fn activation(f: &ConfigFile) -> Result<Activation> {
    match f.hidden_act.as_deref().unwrap_or("relu2") {
        "relu2" | "relu_squared" | "squared_relu" => Ok(Activation::Relu2),
        "silu" | "swish" => Ok(Activation::Silu),
        other => Err(Error::config(
            "hidden_act",
            format!("unsupported activation `{other}` (expected relu2 or silu)"),
        )),
    }
}

/// HF switches Tritter does not implement: biases and RoPE scaling.
fn check_unsupported(f: &ConfigFile) -> Result<()> {
    if f.attention_bias == Some(true) {
        return Err(Error::config("attention_bias", "true is not supported"));
    }
    if f.mlp_bias == Some(true) {
        return Err(Error::config("mlp_bias", "true is not supported"));
    }
    if let Some(s) = &f.rope_scaling {
        if !s.is_null() {
            return Err(Error::config(
                "rope_scaling",
                "RoPE scaling is not supported",
            ));
        }
    }
    Ok(())
}

/// `rope_parameters.rope_theta` (newer transformers), else `rope_theta`, else HF's default.
fn rope_theta(f: &ConfigFile) -> Result<f64> {
    let rope_theta = match (&f.rope_parameters, f.rope_theta) {
        (Some(p), _) if p.rope_theta.is_some() => {
            if let Some(t) = p.rope_type.as_deref() {
                if t != "default" {
                    return Err(Error::config(
                        "rope_parameters.rope_type",
                        format!("`{t}` is not supported (only default)"),
                    ));
                }
            }
            p.rope_theta.unwrap_or(500_000.0)
        }
        (_, Some(t)) => t,
        // HF BitNetConfig default.
        _ => 500_000.0,
    };
    if !(rope_theta.is_finite() && rope_theta > 0.0) {
        return Err(Error::config("rope_theta", "must be a positive number"));
    }
    Ok(rope_theta)
}

fn rms_norm_eps(f: &ConfigFile) -> Result<f64> {
    let eps = f.rms_norm_eps.unwrap_or(1e-5);
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::config(
            "rms_norm_eps",
            "must be a non-negative number",
        ));
    }
    Ok(eps)
}

/// The weight layout `quantization_config` names, and the BitLinear input norm's eps
/// (`use_rms_norm`).
fn quantization(f: &ConfigFile) -> Result<(WeightFormat, Option<f64>)> {
    let Some(q) = &f.quantization_config else {
        return Ok((WeightFormat::Online, None));
    };
    if q.quant_method != "bitnet" {
        return Err(Error::config(
            "quantization_config.quant_method",
            format!("`{}` is not supported (expected bitnet)", q.quant_method),
        ));
    }
    let fmt = match (q.linear_class.as_str(), q.quantization_mode.as_str()) {
        ("bitlinear", "offline") => WeightFormat::PackedBitLinear,
        ("autobitlinear", "offline") => WeightFormat::PackedAutoBitLinear,
        ("autobitlinear", "online") => WeightFormat::Online,
        (c, m) => {
            return Err(Error::config(
                "quantization_config",
                format!("linear_class `{c}` with quantization_mode `{m}` is not supported"),
            ))
        }
    };
    let norm = q.use_rms_norm.then(|| q.rms_norm_eps.unwrap_or(1e-6));
    Ok((fmt, norm))
}

/// `attention_mode` (default `causal`).
fn attention_mode(f: &ConfigFile) -> Result<AttentionMode> {
    match f.attention_mode.as_deref() {
        None => Ok(AttentionMode::Causal),
        Some(s) => AttentionMode::parse(s).ok_or_else(|| {
            Error::config(
                "attention_mode",
                format!("`{s}` (expected causal, bidirectional, prefix_lm or embedding)"),
            )
        }),
    }
}

impl TryFrom<ConfigFile> for Config {
    type Error = Error;

    fn try_from(f: ConfigFile) -> Result<Self> {
        let d = dims(&f)?;
        let activation = activation(&f)?;
        check_unsupported(&f)?;
        let rope_theta = rope_theta(&f)?;
        let rms_norm_eps = rms_norm_eps(&f)?;
        let (weight_format, bitlinear_rms_norm) = quantization(&f)?;
        let bos = ids_of("bos_token_id", &f.bos_token_id)?;
        let pad = ids_of("pad_token_id", &f.pad_token_id)?;
        let attention_mode = attention_mode(&f)?;
        Ok(Config {
            vocab_size: d.vocab_size,
            hidden_size: d.hidden_size,
            intermediate_size: d.intermediate_size,
            num_layers: d.num_layers,
            num_heads: d.num_heads,
            num_kv_heads: d.num_kv_heads,
            head_dim: d.head_dim,
            activation,
            mlp_gated: f.mlp_gated.unwrap_or(true),
            max_position_embeddings: f.max_position_embeddings.unwrap_or(2048),
            rms_norm_eps,
            rope_theta,
            // HF's BitNetConfig defaults to untied.
            tie_word_embeddings: f.tie_word_embeddings.unwrap_or(false),
            norm_placement: f.norm_placement.unwrap_or(NormPlacement::Subln),
            qk_norm: f.qk_norm.unwrap_or(false),
            weight_format,
            bitlinear_rms_norm,
            bos_token_id: bos.first().copied(),
            eos_token_ids: ids_of("eos_token_id", &f.eos_token_id)?,
            pad_token_id: pad.first().copied(),
            sliding_window_size: f.sliding_window_size.unwrap_or(0),
            use_attention_sinks: f.use_attention_sinks.unwrap_or(false),
            attention_mode,
        })
    }
}

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| match e {
            Error::ConfigJson { source, .. } => Error::ConfigJson {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates config JSON text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let file: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let source = e.into_inner();
            if source.is_data() && key != "." {
                Error::config(&key, source.to_string())
            } else {
                Error::ConfigJson {
                    path: "config.json".into(),
                    source,
                }
            }
        })?;
        Config::try_from(file)
    }

    /// The HF-compatible `config.json` object for this config. Tritter checkpoints are saved
    /// packed (`bitlinear` / `offline`), so HF transformers loads them as BitNet.
    pub fn to_config_file(&self) -> ConfigFile {
        let ids = |v: &[u32]| match v {
            [] => None,
            [one] => Some(serde_json::json!(one)),
            many => Some(serde_json::json!(many)),
        };
        ConfigFile {
            model_type: Some("bitnet".into()),
            vocab_size: Some(self.vocab_size),
            hidden_size: Some(self.hidden_size),
            intermediate_size: Some(self.intermediate_size),
            num_hidden_layers: Some(self.num_layers),
            num_attention_heads: Some(self.num_heads),
            num_key_value_heads: Some(self.num_kv_heads),
            head_dim: Some(self.head_dim),
            hidden_act: Some(match self.activation {
                Activation::Relu2 => "relu2".into(),
                Activation::Silu => "silu".into(),
            }),
            max_position_embeddings: Some(self.max_position_embeddings),
            rms_norm_eps: Some(self.rms_norm_eps),
            rope_theta: Some(self.rope_theta),
            rope_parameters: None,
            rope_scaling: None,
            tie_word_embeddings: Some(self.tie_word_embeddings),
            attention_bias: Some(false),
            mlp_bias: None,
            bos_token_id: self.bos_token_id.map(|b| serde_json::json!(b)),
            eos_token_id: ids(&self.eos_token_ids),
            pad_token_id: self.pad_token_id.map(|b| serde_json::json!(b)),
            quantization_config: Some(QuantizationConfig {
                quant_method: "bitnet".into(),
                linear_class: "bitlinear".into(),
                quantization_mode: "offline".into(),
                use_rms_norm: self.bitlinear_rms_norm.is_some(),
                rms_norm_eps: self.bitlinear_rms_norm,
                modules_to_not_convert: None,
            }),
            norm_placement: Some(self.norm_placement),
            qk_norm: Some(self.qk_norm),
            mlp_gated: Some(self.mlp_gated),
            sliding_window_size: Some(self.sliding_window_size),
            use_attention_sinks: Some(self.use_attention_sinks),
            attention_mode: Some(self.attention_mode.name().to_string()),
        }
    }

    /// A preset by name: `tritter-tiny`, `tritter-7b`, `bitnet-b1.58-2b4t`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tritter-tiny" => Ok(Self::tritter_tiny()),
            "tritter-7b" => Ok(Self::tritter_7b()),
            "bitnet-b1.58-2b4t" | "bitnet-2b4t" => Ok(Self::bitnet_b158_2b4t()),
            other => Err(Error::config(
                "preset",
                format!("unknown preset `{other}` (tritter-tiny, tritter-7b, bitnet-b1.58-2b4t)"),
            )),
        }
    }

    fn base(
        vocab: usize,
        hidden: usize,
        inter: usize,
        layers: usize,
        heads: usize,
        kv: usize,
    ) -> Self {
        Config {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: inter,
            num_layers: layers,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim: hidden / heads,
            activation: Activation::Relu2,
            mlp_gated: true,
            max_position_embeddings: 4096,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            tie_word_embeddings: true,
            norm_placement: NormPlacement::Subln,
            qk_norm: false,
            weight_format: WeightFormat::PackedBitLinear,
            bitlinear_rms_norm: None,
            bos_token_id: None,
            eos_token_ids: vec![],
            pad_token_id: None,
            sliding_window_size: 4096,
            use_attention_sinks: false,
            attention_mode: AttentionMode::Causal,
        }
    }

    /// The small model embedded in the binary: trains in minutes on a laptop CPU.
    pub fn tritter_tiny() -> Self {
        let mut c = Self::base(8192, 256, 688, 4, 4, 2);
        c.max_position_embeddings = 1024;
        c.rope_theta = 10_000.0;
        c.sliding_window_size = 1024;
        c
    }

    /// The RTX 5080 target of ROADMAP.md's memory table (~7B parameters, ~1.4 GB ternary weights).
    pub fn tritter_7b() -> Self {
        let mut c = Self::base(100_352, 4096, 11_008, 32, 32, 8);
        c.max_position_embeddings = 131_072;
        c.qk_norm = true;
        c
    }

    /// Microsoft's BitNet b1.58 2B4T (HF `microsoft/bitnet-b1.58-2B-4T`).
    pub fn bitnet_b158_2b4t() -> Self {
        let mut c = Self::base(128_256, 2560, 6912, 30, 20, 5);
        c.bos_token_id = Some(128_000);
        c.eos_token_ids = vec![128_001, 128_009];
        c
    }

    /// Number of weights in the ternary linear layers.
    pub fn ternary_params(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let mlp = if self.mlp_gated { 3 } else { 2 } * h * self.intermediate_size;
        self.num_layers * (h * q + 2 * h * kv + q * h + mlp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HF_2B4T: &str = r#"{
      "architectures": ["BitNetForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "relu2", "hidden_size": 2560,
      "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 4096,
      "model_type": "bitnet", "num_attention_heads": 20, "num_hidden_layers": 30,
      "num_key_value_heads": 5, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true,
      "vocab_size": 128256,
      "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                              "quantization_mode": "offline"}
    }"#;

    #[test]
    fn hf_2b4t_config_loads_and_matches_preset_dims() {
        let c = Config::from_json_str(HF_2B4T).unwrap();
        let p = Config::bitnet_b158_2b4t();
        assert_eq!(c.hidden_size, p.hidden_size);
        assert_eq!(c.num_layers, 30);
        assert_eq!(c.num_kv_heads, 5);
        assert_eq!(c.head_dim, 128);
        assert_eq!(c.intermediate_size, 6912);
        assert_eq!(c.rope_theta, 500_000.0);
        assert_eq!(c.weight_format, WeightFormat::PackedAutoBitLinear);
        assert_eq!(c.norm_placement, NormPlacement::Subln);
        assert_eq!(c.eos_token_ids, vec![128_001]);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn rope_parameters_form_is_accepted() {
        let t = r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
          "num_attention_heads":2,"rope_parameters":{"rope_theta":1234.0,"rope_type":"default"}}"#;
        assert_eq!(Config::from_json_str(t).unwrap().rope_theta, 1234.0);
    }

    #[test]
    fn errors_name_the_key() {
        let t =
            r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":8,"num_attention_heads":2}"#;
        let e = Config::from_json_str(t).unwrap_err().to_string();
        assert!(e.contains("num_hidden_layers"), "{e}");
        let t = r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
          "num_attention_heads":4,"num_key_value_heads":3}"#;
        let e = Config::from_json_str(t).unwrap_err().to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
        let t = r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
          "num_attention_heads":2,"hidden_act":"gelu"}"#;
        let e = Config::from_json_str(t).unwrap_err().to_string();
        assert!(e.contains("hidden_act") && e.contains("gelu"), "{e}");
        let t = r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
          "num_attention_heads":2,"attention_mode":"sideways"}"#;
        let e = Config::from_json_str(t).unwrap_err().to_string();
        assert!(
            e.contains("attention_mode") && e.contains("sideways"),
            "{e}"
        );
        let t = r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
          "num_attention_heads":2,"attention_mode":"prefix_lm"}"#;
        let c = Config::from_json_str(t).unwrap();
        assert_eq!(c.attention_mode, AttentionMode::PrefixLm);
        let e = Config::from_json_str("{not json").unwrap_err().to_string();
        assert!(e.contains("invalid JSON"), "{e}");
        let t = r#"{"vocab_size":"many","hidden_size":8}"#;
        assert!(Config::from_json_str(t)
            .unwrap_err()
            .to_string()
            .contains("vocab_size"));
    }

    #[test]
    fn round_trips_through_config_file() {
        for name in ["tritter-tiny", "tritter-7b", "bitnet-b1.58-2b4t"] {
            let c = Config::preset(name).unwrap();
            let json = serde_json::to_string(&c.to_config_file()).unwrap();
            assert_eq!(Config::from_json_str(&json).unwrap(), c, "{name}");
        }
    }

    #[test]
    fn seven_b_preset_has_about_1_4_gb_of_ternary_weights() {
        let c = Config::tritter_7b();
        let bytes = c.ternary_params() as f64 / 4.0;
        assert!((1.2e9..1.8e9).contains(&bytes), "{bytes}");
    }
}
