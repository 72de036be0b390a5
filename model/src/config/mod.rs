//! Model configuration: `config.json` with Hugging Face key names (so HF BitNet configs load as they
//! are) deserialised into [`ConfigFile`], then validated into the typed [`Config`] (`file.rs`:
//! the file's form and its validation, one function per section, each error naming its key);
//! presets.
//!
//! Unknown keys in `config.json` are ignored on purpose: HF writes many bookkeeping keys
//! (`architectures`, `transformers_version`, `initializer_range`, ...) and new versions add more.
//! Every key the model uses is checked, and an error names the key.

mod file;
mod hybrid;
mod keys;
mod write;

pub use hybrid::{GdnShape, HybridParts, LayerKind, MambaShape, MlpLayout, RecurrentDepth, Scales};
pub use keys::{ConfigFile, QkNormKey, QuantizationConfig, RopeParameters};

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

/// QK-Norm: which norm queries and keys get over `head_dim`, after the projections and before
/// RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QkNormKind {
    /// RMSNorm with one weight `[head_dim]` shared by all heads (`q_norm.weight`), eps
    /// `rms_norm_eps`.
    #[serde(alias = "rms_norm")]
    Rms,
    /// Chameleon's `ChameleonLayerNorm`: LayerNorm statistics over `head_dim` (eps 1e-5, not the
    /// config's), then a per-head weight and bias `[heads, head_dim]` (`q_norm.{weight,bias}`;
    /// k: `[kv_heads, head_dim]`).
    #[serde(alias = "layer_norm")]
    Layernorm,
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
    /// Plain float linears `y = x·Wᵀ` (HF `nn.Linear`, no quantisation of weights or
    /// activations): a Chameleon config without `quantization_config`. Inference on the candle
    /// and CPU paths only.
    Dense,
}

/// The largest size a config key may give (2²⁴): far past any real model, small enough that
/// products of sizes cannot overflow.
pub const MAX_SIZE: usize = 1 << 24;

/// The most weights a config's layers may hold (2⁵⁰): every count downstream (the planner's
/// bytes, the loaders) fits in 64 bits below it.
pub const MAX_PARAMS: u128 = 1 << 50;

/// Attention sinks kept when `use_attention_sinks` is set (StreamingLLM's choice); the
/// rolling window (`sliding_window_size`) must be larger.
pub const ATTENTION_SINKS: usize = 4;

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
    /// QK-Norm, if any.
    pub qk_norm: Option<QkNormKind>,
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
    /// Each layer's token mixer, the recurrent layers' shapes and Granite's switches
    /// (`hybrid.rs`); all attention, no multipliers, RoPE and split MLP for BitNet.
    pub hybrid: HybridParts,
}

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| match e {
            Error::ConfigJson { cause, .. } => Error::ConfigJson {
                path: path.to_path_buf(),
                cause,
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
                    cause: source,
                }
            }
        })?;
        Config::try_from(file)
    }

    /// A preset by name: `tritter-tiny`, `tritter-small`, `tritter-hybrid-tiny`,
    /// `tritter-depth-tiny`, `tritter-7b`, `bitnet-b1.58-2b4t`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tritter-tiny" => Ok(Self::tritter_tiny()),
            "tritter-small" => Ok(Self::tritter_small()),
            "tritter-hybrid-tiny" => Ok(Self::tritter_hybrid_tiny()),
            "tritter-depth-tiny" => Ok(Self::tritter_depth_tiny()),
            "tritter-7b" => Ok(Self::tritter_7b()),
            "bitnet-b1.58-2b4t" | "bitnet-2b4t" => Ok(Self::bitnet_b158_2b4t()),
            other => Err(Error::config(
                "preset",
                format!(
                    "unknown preset `{other}` (tritter-tiny, tritter-small, \
                     tritter-hybrid-tiny, tritter-depth-tiny, tritter-7b, bitnet-b1.58-2b4t)"
                ),
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
            qk_norm: None,
            weight_format: WeightFormat::PackedBitLinear,
            bitlinear_rms_norm: None,
            bos_token_id: None,
            eos_token_ids: vec![],
            pad_token_id: None,
            sliding_window_size: 4096,
            use_attention_sinks: false,
            attention_mode: AttentionMode::Causal,
            hybrid: HybridParts {
                layer_types: vec![],
                mamba: None,
                gdn: None,
                scales: Scales::default(),
                use_rope: true,
                mlp_layout: MlpLayout::Split,
                depth: None,
            },
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

    /// The next size up (27.4 M parameters with an 8192-entry vocabulary): hidden 512, 8 layers,
    /// FFN 1376, 8 heads / 4 KV heads of 64 — the shape of the 27M PyTorch training peer
    /// (issue #17), for training-speed comparisons and a stronger built-in model.
    pub fn tritter_small() -> Self {
        let mut c = Self::base(8192, 512, 1376, 8, 8, 4);
        c.max_position_embeddings = 2048;
        c.rope_theta = 10_000.0;
        c.sliding_window_size = 2048;
        c
    }

    /// The 9:1 Mamba-2 : attention hybrid after IBM's Granite 4.0-H (whose 40 layers put
    /// attention at every tenth, from layer 5): `tritter-tiny`'s width and vocabulary, ten layers
    /// with attention at layer 5 only, Mamba-2 elsewhere (8 heads of 64 — `expand` 2 — state 64,
    /// one group, conv 4, chunk 64). Ternary linears, SubLN for the attention layer, ReLU² MLPs
    /// as every Tritter model.
    pub fn tritter_hybrid_tiny() -> Self {
        let mut c = Self::tritter_tiny();
        c.num_layers = 10;
        c.hybrid.layer_types = (0..10)
            .map(|l| match l % 10 == 5 {
                true => LayerKind::Attention,
                false => LayerKind::Mamba2,
            })
            .collect();
        c.hybrid.mamba = Some(MambaShape {
            num_heads: 8,
            head_dim: 64,
            state_size: 64,
            n_groups: 1,
            conv_kernel: 4,
            conv_bias: true,
            chunk_size: 64,
        });
        c
    }

    /// Recurrent depth on `tritter-tiny`'s layers: layer 0 the prelude, layers 1–2 the block
    /// iterated (4 times at inference by default; training samples 1–4), layer 3 the coda. At 4
    /// iterations it computes like a 10-layer model with the parameters of 4.
    pub fn tritter_depth_tiny() -> Self {
        let mut c = Self::tritter_tiny();
        c.hybrid.depth = Some(RecurrentDepth {
            start: 1,
            end: 3,
            iterations: 4,
            train_max: 4,
        });
        c
    }

    /// The order layers run in: each once, the recurrent-depth block (if any) `iterations`
    /// times over.
    pub fn layer_schedule(&self, iterations: usize) -> Vec<usize> {
        match self.hybrid.depth {
            None => (0..self.num_layers).collect(),
            Some(d) => (0..d.start)
                .chain((0..iterations).flat_map(|_| d.start..d.end))
                .chain(d.end..self.num_layers)
                .collect(),
        }
    }

    /// The kind of layer `l` (attention past the end of the list).
    pub fn layer_kind(&self, l: usize) -> LayerKind {
        self.hybrid
            .layer_types
            .get(l)
            .copied()
            .unwrap_or(LayerKind::Attention)
    }

    /// Whether any layer has a recurrent mixer (Mamba-2, Gated DeltaNet).
    pub fn has_recurrent_layers(&self) -> bool {
        (0..self.num_layers).any(|l| self.layer_kind(l) != LayerKind::Attention)
    }

    /// Whether the config uses anything only the candle path implements: recurrent layers,
    /// Granite's multipliers, attention without RoPE, the fused MLP. The CPU inference and GPU
    /// paths refuse such models; [`crate::decoder::open`] runs them on the candle path.
    pub fn needs_candle_path(&self) -> bool {
        let h = &self.hybrid;
        self.has_recurrent_layers()
            || h.depth.is_some()
            || !h.scales.is_default()
            || !h.use_rope
            || h.mlp_layout != MlpLayout::Split
    }

    /// The RTX 5080 target of ROADMAP.md's memory table (~7B parameters, ~1.4 GB ternary weights).
    pub fn tritter_7b() -> Self {
        let mut c = Self::base(100_352, 4096, 11_008, 32, 32, 8);
        c.max_position_embeddings = 131_072;
        c.qk_norm = Some(QkNormKind::Rms);
        c
    }

    /// Microsoft's BitNet b1.58 2B4T (HF `microsoft/bitnet-b1.58-2B-4T`).
    pub fn bitnet_b158_2b4t() -> Self {
        let mut c = Self::base(128_256, 2560, 6912, 30, 20, 5);
        c.bos_token_id = Some(128_000);
        c.eos_token_ids = vec![128_001, 128_009];
        c
    }

    /// Number of weights in the ternary linear layers (every projection of every mixer and MLP).
    pub fn ternary_params(&self) -> usize {
        usize::try_from(self.ternary_params_exact()).unwrap_or(usize::MAX)
    }

    /// [`Config::ternary_params`] in 128 bits (no overflow for sizes up to [`MAX_SIZE`]).
    pub fn ternary_params_exact(&self) -> u128 {
        let w = |n: usize| n as u128;
        let h = w(self.hidden_size);
        let q = w(self.num_heads) * w(self.head_dim);
        let kv = w(self.num_kv_heads) * w(self.head_dim);
        let mlp = if self.mlp_gated { 3 } else { 2 } * h * w(self.intermediate_size);
        (0..self.num_layers)
            .map(|l| {
                let mixer = match self.layer_kind(l) {
                    LayerKind::Attention => h * q + 2 * h * kv + q * h,
                    LayerKind::Mamba2 => self.hybrid.mamba.map_or(0, |m| {
                        let i = w(m.num_heads) * w(m.head_dim);
                        let conv = i + 2 * w(m.n_groups) * w(m.state_size);
                        h * (i + conv + w(m.num_heads)) + i * h
                    }),
                    LayerKind::GatedDeltaNet => self.hybrid.gdn.map_or(0, |g| {
                        let (k, v) = (
                            w(g.num_heads) * w(g.head_k_dim),
                            w(g.num_heads) * w(g.head_v_dim),
                        );
                        // a_proj and b_proj are full precision (`hybrid::gated_deltanet`).
                        h * (2 * k + 2 * v) + v * h
                    }),
                };
                mixer + mlp
            })
            .sum()
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

    const TINY: &str = r#""vocab_size":10,"hidden_size":8,"intermediate_size":8,
        "num_hidden_layers":1,"num_attention_heads":2"#;

    fn tiny(extra: &str) -> Result<Config> {
        Config::from_json_str(&format!("{{{TINY}{extra}}}"))
    }

    /// HF `ChameleonConfig`'s meaning of its keys and defaults (transformers 5.x): silu, RoPE
    /// theta 10000, pre-norm unless `swin_norm`, q/k LayerNorm always (its attention has no switch),
    /// float linears without a `quantization_config`, HF BitNet's `quantization_config` honoured.
    #[test]
    fn chameleon_config_maps_to_its_switches() {
        let c = tiny(r#","model_type":"chameleon""#).unwrap();
        assert_eq!(c.activation, Activation::Silu);
        assert_eq!(c.rope_theta, 10_000.0);
        assert_eq!(c.norm_placement, NormPlacement::Pre);
        assert_eq!(c.qk_norm, Some(QkNormKind::Layernorm));
        assert_eq!(c.weight_format, WeightFormat::Dense);
        assert!(!c.tie_word_embeddings);
        let c = tiny(
            r#","model_type":"chameleon","swin_norm":true,"qk_layernorm":false,
            "quantization_config":{"quant_method":"bitnet","linear_class":"autobitlinear",
            "quantization_mode":"online"}"#,
        )
        .unwrap();
        assert_eq!(c.norm_placement, NormPlacement::SwinNorm);
        assert_eq!(c.qk_norm, None);
        assert_eq!(c.weight_format, WeightFormat::Online);
        // BitNet's defaults are unchanged by the new keys.
        let c = tiny("").unwrap();
        assert_eq!((c.norm_placement, c.qk_norm), (NormPlacement::Subln, None));
        assert_eq!(c.weight_format, WeightFormat::Online);
        assert_eq!(c.rope_theta, 500_000.0);
    }

    #[test]
    fn qk_norm_key_takes_a_switch_or_a_kind() {
        for (v, want) in [
            ("true", Some(QkNormKind::Rms)),
            ("false", None),
            (r#""rms""#, Some(QkNormKind::Rms)),
            (r#""layernorm""#, Some(QkNormKind::Layernorm)),
        ] {
            assert_eq!(
                tiny(&format!(r#","qk_norm":{v}"#)).unwrap().qk_norm,
                want,
                "{v}"
            );
        }
        let e = tiny(r#","qk_norm":"batchnorm""#).unwrap_err().to_string();
        assert!(e.contains("qk_norm"), "{e}");
        let e = tiny(r#","qk_norm":"rms","qk_layernorm":true"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("qk_layernorm"), "{e}");
        let e = tiny(r#","norm_placement":"pre","swin_norm":true"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("swin_norm"), "{e}");
        let e = tiny(r#","model_type":"chameleon","head_dim":2"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("head_dim"), "{e}");
    }

    #[test]
    fn tritter_small_is_in_the_25_to_50m_range() {
        let c = Config::tritter_small();
        let n = c.ternary_params() + c.vocab_size * c.hidden_size;
        assert!((25_000_000..50_000_000).contains(&n), "{n}");
        assert_eq!(c.head_dim, 64);
    }

    #[test]
    fn round_trips_through_config_file() {
        for name in [
            "tritter-tiny",
            "tritter-small",
            "tritter-hybrid-tiny",
            "tritter-depth-tiny",
            "tritter-7b",
            "bitnet-b1.58-2b4t",
        ] {
            let c = Config::preset(name).unwrap();
            let json = serde_json::to_string(&c.to_config_file()).unwrap();
            assert_eq!(Config::from_json_str(&json).unwrap(), c, "{name}");
        }
        let mut c = Config::tritter_tiny();
        c.qk_norm = Some(QkNormKind::Layernorm);
        c.norm_placement = NormPlacement::SwinNorm;
        let json = serde_json::to_string(&c.to_config_file()).unwrap();
        assert_eq!(Config::from_json_str(&json).unwrap(), c);
    }

    /// Found by the `config_json` fuzz target: a huge `hidden_size` overflowed the weight count.
    #[test]
    fn sizes_beyond_any_model_are_refused_by_key() {
        let big = r#"{"vocab_size":8014,"hidden_size":222222222222256,"intermediate_size":688,
            "num_hidden_layers":8,"num_attention_heads":4}"#;
        let e = Config::from_json_str(big).unwrap_err().to_string();
        assert!(
            e.contains("hidden_size") && e.contains("beyond any model"),
            "{e}"
        );
        // Each size within bounds, the product past 2^50 weights.
        let wide = r#"{"vocab_size":10,"hidden_size":16777216,"intermediate_size":16777216,
            "num_hidden_layers":64,"num_attention_heads":4096}"#;
        let e = Config::from_json_str(wide).unwrap_err().to_string();
        assert!(e.contains("weights, beyond any model"), "{e}");
    }

    #[test]
    fn seven_b_preset_has_about_1_4_gb_of_ternary_weights() {
        let c = Config::tritter_7b();
        let bytes = c.ternary_params() as f64 / 4.0;
        assert!((1.2e9..1.8e9).contains(&bytes), "{bytes}");
    }
}
