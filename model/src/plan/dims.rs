//! The dimensions the planner needs ([`ModelDims`]): presets, or read from a config, with the
//! weight arithmetic. Recurrent layers (Mamba-2, Gated DeltaNet) count their fixed state here;
//! the KV arithmetic is in `plan/mod.rs`.

use super::PlanError;
use serde::Serialize;

/// The dimensions the planner needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelDims {
    /// Preset name (`checkpoint`: read from a model directory).
    pub name: &'static str,
    /// Transformer layers.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (GQA).
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// FFN inner size.
    pub intermediate: usize,
    /// Vocabulary (unified: text + specials + image + audio codes).
    pub vocab: usize,
    /// Whether the LM head shares the embedding matrix.
    pub tied: bool,
    /// Gated FFN (three matrices) or plain (two).
    pub gated_ffn: bool,
    /// Parameters of the image path (tower + connector, f32; 0: the model has none).
    pub vision_params: u64,
    /// Bytes of each layer's recurrent state at batch 1 (f32; 0 for an attention layer, which
    /// holds a KV cache instead); empty: every layer is attention.
    pub state_bytes: Vec<u64>,
    /// Ternary weights when the layers are not all attention (`Config::ternary_params`);
    /// `None`: the attention formula of [`ModelDims::ternary_params`].
    pub ternary: Option<u64>,
    /// Extra layer runs that each keep a KV cache of their own: a recurrent-depth block's
    /// attention layers once per iteration beyond the first.
    pub extra_kv_runs: usize,
}

impl ModelDims {
    /// The embedded default model (adjust with the trained checkpoint).
    pub fn tritter_tiny() -> Self {
        ModelDims {
            name: "tritter-tiny",
            layers: 4,
            hidden: 256,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            intermediate: 688,
            vocab: 8192,
            tied: true,
            gated_ffn: true,
            vision_params: 0,
            state_bytes: vec![],
            ternary: None,
            extra_kv_runs: 0,
        }
    }

    /// The RTX 5080 target: LLaMA-7B's shape (hidden 4096, 32 layers, 32 heads of 128, gated FFN
    /// 11008) with GQA 8 kv heads and the ~100K unified vocabulary. Its ternary layers hold 5.67 G
    /// weights = 1.42 GB packed at 2 bits, ROADMAP.md's "7B BitNet weights 1.4 GB"; the f16
    /// embedding (tied) comes on top. A text model: plan the roadmap's SigLIP-B/16 tower by
    /// setting `vision_params` ([`crate::multimodal::siglip_b16_params`]).
    pub fn tritter_7b() -> Self {
        ModelDims {
            name: "tritter-7b",
            layers: 32,
            hidden: 4096,
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            intermediate: 11008,
            vocab: 100_352,
            tied: true,
            gated_ffn: true,
            vision_params: 0,
            state_bytes: vec![],
            ternary: None,
            extra_kv_runs: 0,
        }
    }

    /// Microsoft's BitNet b1.58 2B4T.
    pub fn bitnet_2b4t() -> Self {
        ModelDims {
            name: "bitnet-b1.58-2b4t",
            layers: 30,
            hidden: 2560,
            heads: 20,
            kv_heads: 5,
            head_dim: 128,
            intermediate: 6912,
            vocab: 128_256,
            tied: true,
            gated_ffn: true,
            vision_params: 0,
            state_bytes: vec![],
            ternary: None,
            extra_kv_runs: 0,
        }
    }

    /// A text model's config (named `checkpoint`), without an image path: attention layers hold a
    /// KV cache, Mamba-2 and Gated DeltaNet layers a fixed state.
    pub fn from_config(cfg: &crate::Config) -> Self {
        let state_bytes = match cfg.has_recurrent_layers() {
            true => (0..cfg.num_layers).map(|l| state_bytes(cfg, l)).collect(),
            false => vec![],
        };
        let ternary = cfg
            .has_recurrent_layers()
            .then(|| cfg.ternary_params() as u64);
        let extra_kv_runs = cfg.hybrid.depth.map_or(0, |d| {
            let attention = (d.start..d.end)
                .filter(|&l| cfg.layer_kind(l) == crate::config::LayerKind::Attention)
                .count();
            attention * (d.iterations - 1)
        });
        ModelDims {
            name: "checkpoint",
            layers: cfg.num_layers,
            hidden: cfg.hidden_size,
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            intermediate: cfg.intermediate_size,
            vocab: cfg.vocab_size,
            tied: cfg.tie_word_embeddings,
            gated_ffn: cfg.mlp_gated,
            vision_params: 0,
            state_bytes,
            ternary,
            extra_kv_runs,
        }
    }

    /// The 9:1 Mamba-2 hybrid preset (`Config::tritter_hybrid_tiny`).
    pub fn tritter_hybrid_tiny() -> Self {
        ModelDims {
            name: "tritter-hybrid-tiny",
            ..Self::from_config(&crate::Config::tritter_hybrid_tiny())
        }
    }

    /// KV caches the model keeps: one per attention layer, and one more per extra run of an
    /// attention layer in a recurrent-depth block.
    pub fn kv_layers(&self) -> usize {
        let attention = match self.state_bytes.is_empty() {
            true => self.layers,
            false => self.state_bytes.iter().filter(|&&b| b == 0).count(),
        };
        attention + self.extra_kv_runs
    }

    /// The recurrent-depth preset (`Config::tritter_depth_tiny`, 4 iterations).
    pub fn tritter_depth_tiny() -> Self {
        ModelDims {
            name: "tritter-depth-tiny",
            ..Self::from_config(&crate::Config::tritter_depth_tiny())
        }
    }

    /// Bytes of all recurrent states (independent of the context).
    pub fn total_state_bytes(&self) -> u64 {
        self.state_bytes.iter().sum()
    }

    /// Preset by name.
    pub fn preset(name: &str) -> Result<Self, PlanError> {
        match name {
            "tritter-tiny" => Ok(Self::tritter_tiny()),
            "tritter-small" => Ok(ModelDims {
                name: "tritter-small",
                ..Self::from_config(&crate::Config::tritter_small())
            }),
            "tritter-hybrid-tiny" => Ok(Self::tritter_hybrid_tiny()),
            "tritter-depth-tiny" => Ok(Self::tritter_depth_tiny()),
            "tritter-7b" => Ok(Self::tritter_7b()),
            "bitnet-b1.58-2b4t" | "bitnet-2b4t" => Ok(Self::bitnet_2b4t()),
            _ => Err(PlanError::UnknownPreset { name: name.into() }),
        }
    }

    /// Ternary weights of the transformer layers (q, k, v, o and the FFN matrices).
    pub fn ternary_params(&self) -> u64 {
        if let Some(t) = self.ternary {
            return t;
        }
        let (h, a, kv) = (
            self.hidden as u64,
            (self.heads * self.head_dim) as u64,
            (self.kv_heads * self.head_dim) as u64,
        );
        let ffn = if self.gated_ffn { 3 } else { 2 } * h * self.intermediate as u64;
        self.layers as u64 * (2 * h * a + 2 * h * kv + ffn)
    }

    /// Bytes of the weights as loaded: ternary layers packed 2 bits per weight plus one f32 scale
    /// per matrix, f32 norms, f16 embedding (and f16 LM head when untied).
    pub fn weight_bytes(&self) -> u64 {
        let mats = if self.gated_ffn { 7 } else { 6 };
        let ternary = self.ternary_params() / 4 + 4 * mats * self.layers as u64;
        let norms = 4 * (2 * self.layers as u64 + 1) * self.hidden as u64;
        let emb = 2 * (self.vocab * self.hidden) as u64 * if self.tied { 1 } else { 2 };
        ternary + norms + emb
    }
}

/// Bytes of layer `l`'s recurrent state at batch 1, f32, as `hybrid` allocates it: the conv's
/// last `K − 1` inputs plus the SSM state `H·P·N` (Mamba-2) or the delta-rule state `H·d_k·d_v`
/// (Gated DeltaNet); 0 for attention.
fn state_bytes(cfg: &crate::Config, l: usize) -> u64 {
    use crate::config::LayerKind;
    let b = match cfg.layer_kind(l) {
        LayerKind::Attention => 0,
        LayerKind::Mamba2 => cfg.hybrid.mamba.map_or(0, |m| {
            let conv = m.num_heads * m.head_dim + 2 * m.n_groups * m.state_size;
            (m.conv_kernel - 1) * conv + m.num_heads * m.head_dim * m.state_size
        }),
        LayerKind::GatedDeltaNet => cfg.hybrid.gdn.map_or(0, |g| {
            let conv = g.num_heads * (2 * g.head_k_dim + g.head_v_dim);
            (g.conv_kernel - 1) * conv + g.num_heads * g.head_k_dim * g.head_v_dim
        }),
    };
    4 * b as u64
}
