//! The trainer's TOML config (`tritter --train CONFIG`): one file with `[run]`, `[model]`,
//! `[train]`, `[optim]`, `[schedule]`, `[qat]`, `[eval]`, `[checkpoint]` and the data pipeline's
//! `[data]` section. Every field has a default (documented here and in `scripts/tiny.toml`);
//! `--set key=value` overrides are applied to the TOML table before it is read, so they accept
//! exactly the keys the file does. Keys relied on by scripts: `run.dir`, `train.steps`,
//! `checkpoint.every`.

use super::TrainError;
use crate::config::Config;
use crate::data::DataConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[run]`: where outputs go and the seed of everything random.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Run directory (data/, checkpoints/, final/, metrics.jsonl). Default `runs/default`.
    pub dir: PathBuf,
    /// Seed of initialisation and data order. Default 0.
    pub seed: u64,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            dir: PathBuf::from("runs/default"),
            seed: 0,
        }
    }
}

/// `[model]`: the architecture and where the weights start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Preset name (`tritter-tiny`, ...) used when `config` and `init` are unset. Default
    /// `tritter-tiny`. Its vocabulary size is replaced by the tokenizer's.
    pub preset: String,
    /// An HF-style `config.json` instead of the preset.
    pub config: Option<PathBuf>,
    /// Start from this checkpoint directory (packed ternary or full-precision HF BitNet): QAT
    /// or fine-tuning. Its config is used; its vocabulary must match the data's tokenizer.
    pub init: Option<PathBuf>,
    /// Standard deviation of the random initialisation. Default 0.02.
    pub init_std: f32,
    /// Override the preset's hidden size (0 keeps it). Default 0.
    pub hidden_size: usize,
    /// Override the preset's layer count (0 keeps it; a hybrid preset's layer pattern repeats).
    /// Default 0.
    pub num_layers: usize,
    /// Override the preset's MLP width (0 keeps it). Default 0.
    pub intermediate_size: usize,
}

impl ModelSection {
    /// The preset's config with this section's size overrides (hidden size, with the head
    /// width following it; layers; MLP width).
    pub fn preset_config(&self) -> Result<Config, TrainError> {
        let mut c = Config::preset(&self.preset)?;
        if self.hidden_size > 0 {
            c.hidden_size = self.hidden_size;
            c.head_dim = self.hidden_size / c.num_heads;
        }
        if self.num_layers > 0 {
            // A hybrid preset's pattern repeats over the new depth (9:1 stays 9:1).
            let pattern = c.hybrid.layer_types.clone();
            if !pattern.is_empty() {
                c.hybrid.layer_types = (0..self.num_layers)
                    .map(|l| {
                        pattern
                            .get(l % pattern.len().max(1))
                            .copied()
                            .unwrap_or(crate::config::LayerKind::Attention)
                    })
                    .collect();
            }
            c.num_layers = self.num_layers;
        }
        if self.intermediate_size > 0 {
            c.intermediate_size = self.intermediate_size;
        }
        Ok(c)
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            preset: "tritter-tiny".into(),
            config: None,
            init: None,
            init_std: 0.02,
            hidden_size: 0,
            num_layers: 0,
            intermediate_size: 0,
        }
    }
}

/// `[train]`: batch geometry, length of the run, device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimiser steps. Default 1000.
    pub steps: u64,
    /// Token budget: when set, the run stops after this many training tokens (whichever of
    /// `steps` and `tokens` comes first). Default unset.
    pub tokens: Option<u64>,
    /// Sequences per micro-batch. Default 8.
    pub batch_size: usize,
    /// Tokens per training sequence: the first `seq_len` tokens of each packed data sequence
    /// (0 = the data's `seq_len`). Default 0.
    pub seq_len: usize,
    /// Micro-batches per optimiser step. Default 1.
    pub grad_accum: usize,
    /// Clip the global gradient norm to this (0 = off). Default 1.0.
    pub grad_clip: f64,
    /// `cpu` or `cuda` / `cuda:N` (the binary's `--device` overrides it). Default `cpu`.
    pub device: String,
    /// Compute dtype of the forward/backward pass: `f32`, or `bf16` mixed precision (f32 master
    /// weights and AdamW state; matmuls in bf16; RMSNorm statistics, softmax and the loss in
    /// f32). Default `f32`.
    pub dtype: String,
    /// Attend only within each document of a packed sequence (the shard's document ids) and
    /// leave padding out of the loss; `false` is the plain causal mask over the whole packed
    /// window, padding included. Default true.
    pub document_mask: bool,
    /// How a packed example attends: `causal`, or `prefix_lm` — each chat example's prompt (up
    /// to and including the last `<|assistant|>\n`) attends bidirectionally, its reply causally,
    /// and the exported model's `attention_mode` is `prefix_lm`, so inference prefills the
    /// prompt the same way. Unset: the model config's `attention_mode` (`causal` for presets).
    /// `prefix_lm` needs `document_mask`.
    pub attention: Option<String>,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            steps: 1000,
            tokens: None,
            batch_size: 8,
            seq_len: 0,
            grad_accum: 1,
            grad_clip: 1.0,
            device: "cpu".into(),
            dtype: "f32".into(),
            document_mask: true,
            attention: None,
        }
    }
}

/// `[optim]`: AdamW (torch's decoupled weight decay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    /// Peak learning rate. Default 1.5e-3 (BitNet b1.58 uses higher rates than fp models).
    pub lr: f64,
    /// Adam betas. Default [0.9, 0.95].
    pub betas: [f64; 2],
    /// Adam epsilon. Default 1e-8.
    pub eps: f64,
    /// Decoupled weight decay, never applied to norms or embeddings. Default 0.1.
    pub weight_decay: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            lr: 1.5e-3,
            betas: [0.9, 0.95],
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// Learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayKind {
    /// Cosine from the peak to `min_lr_ratio` × peak.
    Cosine,
    /// Linear from the peak to `min_lr_ratio` × peak.
    Linear,
    /// Constant peak.
    Constant,
    /// BitNet b1.58's two stages: linear decay from the peak; at `stage2_at` × steps the rate
    /// drops to `stage2_ratio` × peak and decays linearly to `min_lr_ratio` × peak, and weight
    /// decay is switched off.
    TwoStage,
}

/// `[schedule]`: warm-up then decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSection {
    /// Linear warm-up steps from 0. Default 100.
    pub warmup: u64,
    /// `cosine`, `linear`, `constant` or `two_stage`. Default `cosine`.
    pub decay: DecayKind,
    /// Final rate as a fraction of the peak. Default 0.1.
    pub min_lr_ratio: f64,
    /// Two-stage only: where stage 2 starts, as a fraction of the steps. Default 0.5.
    pub stage2_at: f64,
    /// Two-stage only: stage 2's starting rate as a fraction of the peak. Default 0.4.
    pub stage2_ratio: f64,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        ScheduleSection {
            warmup: 100,
            decay: DecayKind::Cosine,
            min_lr_ratio: 0.1,
            stage2_at: 0.5,
            stage2_ratio: 0.4,
        }
    }
}

/// How the BitLinear weights are treated during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QatMode {
    /// Ternary weights / int8 activations with the straight-through estimator from step 0.
    Ternary,
    /// Full-precision linear layers throughout (the baseline of the ternary-vs-fp comparison;
    /// `final/` is still exported ternary).
    FullPrecision,
    /// Full precision until `qat.switch_step`, ternary STE after.
    FpThenTernary,
}

/// `[qat]`: quantisation-aware training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QatSection {
    /// `ternary`, `full_precision` or `fp_then_ternary`. Default `ternary`.
    pub mode: QatMode,
    /// `fp_then_ternary`: the first ternary step. Default 0.
    pub switch_step: u64,
}

impl Default for QatSection {
    fn default() -> Self {
        QatSection {
            mode: QatMode::Ternary,
            switch_step: 0,
        }
    }
}

/// `[eval]`: validation loss on the held-out split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluate every this many steps (0 = only at the end). Default 100.
    pub every: u64,
    /// Validation micro-batches per evaluation (the first ones of the split). Default 8.
    pub batches: usize,
    /// Prompts completed greedily by the exported model at the end (`samples.txt`). Default none.
    pub samples: Vec<String>,
    /// Tokens generated per sample. Default 48.
    pub sample_tokens: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            every: 100,
            batches: 8,
            samples: Vec::new(),
            sample_tokens: 48,
        }
    }
}

/// `[checkpoint]`: resumable training state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Write a checkpoint every this many steps (0 = only at the end / on Ctrl-C). Default 100.
    pub every: u64,
    /// Keep the newest this many checkpoints. Default 3.
    pub keep: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            every: 100,
            keep: 3,
        }
    }
}

/// The whole training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `text` (this trainer's task); `image_text` and `vqvae` configs have their own readers.
    #[serde(default = "text_task")]
    pub task: String,
    #[serde(default)]
    pub run: RunSection,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub schedule: ScheduleSection,
    #[serde(default)]
    pub qat: QatSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    /// The data pipeline's section (see [`DataConfig`]).
    pub data: DataConfig,
}

fn text_task() -> String {
    "text".into()
}

fn bad(msg: impl Into<String>) -> TrainError {
    TrainError::Config(msg.into())
}

/// Set `key` (dotted, e.g. `train.steps`) to `value` in a TOML table. The value is read as a
/// TOML value (`3`, `1e-3`, `true`, `[0.9, 0.95]`, `"x"`) or, failing that, as a bare string.
pub fn apply_override(table: &mut toml::Table, key: &str, value: &str) -> Result<(), TrainError> {
    let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.into())),
        Err(_) => toml::Value::String(value.into()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad(format!("--set {key}: empty key segment")));
    }
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| bad(format!("--set {key}: `{p}` is not a table")))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), parsed);
    Ok(())
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl TrainConfig {
    /// `train.attention` into the model config; the mode must be one training runs.
    pub fn apply_attention(&self, c: &mut crate::config::Config) -> Result<(), TrainError> {
        let cfg = self;
        use crate::attn::AttentionMode;
        match cfg.train.attention.as_deref() {
            None => {}
            Some(name) => match AttentionMode::parse(name) {
                Some(m @ (AttentionMode::Causal | AttentionMode::PrefixLm)) => c.attention_mode = m,
                _ => {
                    return Err(TrainError::Config(format!(
                        "train.attention = {name:?}: expected \"causal\" or \"prefix_lm\""
                    )))
                }
            },
        }
        match c.attention_mode {
            AttentionMode::Causal => Ok(()),
            AttentionMode::PrefixLm if cfg.train.document_mask => Ok(()),
            AttentionMode::PrefixLm => Err(TrainError::Config(
                "attention prefix_lm needs [train] document_mask = true (the prefix is per example)"
                    .into(),
            )),
            m => Err(TrainError::Config(format!(
                "the model's attention_mode is {}: training runs causal or prefix_lm models",
                m.name()
            ))),
        }
    }

    /// Parse TOML text with `KEY=VALUE` overrides applied; relative paths are resolved against
    /// `base` (the config file's directory).
    pub fn from_toml_str(
        text: &str,
        overrides: &[String],
        base: &Path,
    ) -> Result<Self, TrainError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(format!("TOML: {e}")))?;
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| bad(format!("--set `{o}`: expected KEY=VALUE")))?;
            apply_override(&mut table, k.trim(), v.trim())?;
        }
        let mut cfg: TrainConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string().trim().replace('\n', " ")))?;
        cfg.run.dir = resolve(base, &cfg.run.dir);
        cfg.model.config = cfg.model.config.map(|p| resolve(base, &p));
        cfg.model.init = cfg.model.init.map(|p| resolve(base, &p));
        for s in &mut cfg.data.sources {
            s.path = resolve(base, &s.path);
        }
        if let Some(p) = &cfg.data.tokenizer.path {
            cfg.data.tokenizer.path = Some(resolve(base, p));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read a config file with overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io {
            path: path.to_path_buf(),
            cause: e,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml_str(&text, overrides, base)
            .map_err(|e| bad(format!("{}: {e}", path.display())))
    }

    /// Check ranges and combinations; the first problem is returned.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.task != "text" {
            return Err(bad(format!(
                "task = \"{}\" is not the text trainer's (run it with `tritter --train`)",
                self.task
            )));
        }
        self.data
            .validate()
            .map_err(|e| bad(format!("[data]: {e}")))?;
        let t = &self.train;
        if t.steps == 0 {
            return Err(bad("train.steps must be at least 1"));
        }
        if t.batch_size == 0 || t.grad_accum == 0 {
            return Err(bad(
                "train.batch_size and train.grad_accum must be at least 1",
            ));
        }
        if t.seq_len == 1 || t.seq_len > self.data.seq_len {
            return Err(bad(format!(
                "train.seq_len must be 0 or in 2..={} (data.seq_len), got {}",
                self.data.seq_len, t.seq_len
            )));
        }
        if t.grad_clip.is_nan() || t.grad_clip < 0.0 {
            return Err(bad("train.grad_clip must be >= 0"));
        }
        self.compute_dtype()?;
        let o = &self.optim;
        if o.lr.is_nan()
            || o.lr <= 0.0
            || o.eps.is_nan()
            || o.eps <= 0.0
            || o.weight_decay.is_nan()
            || o.weight_decay < 0.0
        {
            return Err(bad(
                "optim.lr and optim.eps must be > 0, optim.weight_decay >= 0",
            ));
        }
        if o.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(bad("optim.betas must be in [0, 1)"));
        }
        let s = &self.schedule;
        if !(0.0..=1.0).contains(&s.min_lr_ratio)
            || !(0.0..=1.0).contains(&s.stage2_at)
            || !(0.0..=1.0).contains(&s.stage2_ratio)
        {
            return Err(bad(
                "schedule.min_lr_ratio, stage2_at and stage2_ratio must be in [0, 1]",
            ));
        }
        if self.checkpoint.keep == 0 {
            return Err(bad("checkpoint.keep must be at least 1"));
        }
        if self.model.init_std.is_nan() || self.model.init_std <= 0.0 {
            return Err(bad("model.init_std must be > 0"));
        }
        Ok(())
    }

    /// The compute dtype `train.dtype` names.
    pub fn compute_dtype(&self) -> Result<candle_core::DType, TrainError> {
        match self.train.dtype.as_str() {
            "f32" => Ok(candle_core::DType::F32),
            "bf16" => Ok(candle_core::DType::BF16),
            other => Err(bad(format!(
                "train.dtype must be \"f32\" or \"bf16\", got \"{other}\""
            ))),
        }
    }

    /// Tokens per training sequence.
    pub fn seq_len(&self) -> usize {
        if self.train.seq_len == 0 {
            self.data.seq_len
        } else {
            self.train.seq_len
        }
    }

    /// Whether the BitLinear layers run ternary at `step`.
    pub fn ternary_at(&self, step: u64) -> bool {
        match self.qat.mode {
            QatMode::Ternary => true,
            QatMode::FullPrecision => false,
            QatMode::FpThenTernary => step >= self.qat.switch_step,
        }
    }
}
