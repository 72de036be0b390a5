//! The training loop. Read top to bottom: per step the learning rate, then evaluation and
//! checkpointing when due, the micro-steps (forward, loss, backward, accumulate), clipping, the
//! AdamW step and the log record. `Trainer::run` is that loop; one optimiser step is
//! `Trainer::step`, the rows it logs are `metrics.rs`'s.
//!
//! Exactness of resume rests on three things: the data stream is a pure function of (seed,
//! position) — epoch `e` visits the training split in a permutation seeded by `seed` and `e` —
//! the checkpoint holds every tensor the update reads (weights and both moments), and nothing
//! else draws random numbers.

use super::config::TrainConfig;
use super::metrics::MetricsLog;
pub use super::metrics::{EvalRecord, StepRecord};
use super::optim::{self, AdamW, AdamWParams};
use super::state::{self, TrainState};
use super::{FullPrecision, TrainError};
use crate::checkpoint::save_checkpoint;
use crate::config::{Config, WeightFormat};
use crate::data::{ShardSet, Split, SplitReader};
use crate::transformer::Transformer;
use crate::weights::Params;
use candle_core::{DType, Device};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What the loop reports.
pub enum Event<'a> {
    /// The loop starts at `step` of `total`.
    Start {
        step: u64,
        total: u64,
        params: usize,
    },
    Step(&'a StepRecord),
    Eval(&'a EvalRecord),
    Checkpoint {
        step: u64,
        dir: &'a Path,
    },
    /// Free-form note (resume, interruption, export).
    Note(String),
}

/// Receives the loop's events (the binary's progress bar; tests record losses).
pub trait Observer {
    fn event(&mut self, e: &Event);
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Steps completed in total (including before a resume).
    pub step: u64,
    /// Losses of the steps run in this invocation.
    pub losses: Vec<f64>,
    /// The last validation loss.
    pub val_loss: Option<f64>,
    /// Stopped early by the stop flag (Ctrl-C); the state was checkpointed.
    pub interrupted: bool,
    /// The exported inference checkpoint, when the run finished.
    pub final_dir: Option<PathBuf>,
    /// Mean training throughput of this invocation.
    pub tokens_per_s: f64,
}

/// Vocabulary size and special ids from the prepared data's manifest.
fn data_vocab(data_dir: &Path) -> Result<(usize, serde_json::Value), TrainError> {
    let p = data_dir.join("manifest.json");
    let text = fs::read(&p).map_err(|e| TrainError::io(&p, e))?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?;
    let vocab = v["tokenizer"]["vocab_size"]
        .as_u64()
        .ok_or_else(|| TrainError::Config(format!("{}: no tokenizer.vocab_size", p.display())))?;
    Ok((vocab as usize, v["tokenizer"]["special_tokens"].clone()))
}

/// The model config of a run: from `model.init`'s or `model.config`'s `config.json`, or the
/// preset with the overrides, and the data's vocabulary.
pub fn model_config(cfg: &TrainConfig, data_dir: &Path) -> Result<Config, TrainError> {
    let (vocab, specials) = data_vocab(data_dir)?;
    let mut c = if let Some(init) = &cfg.model.init {
        Config::from_json_file(&init.join("config.json"))?
    } else if let Some(path) = &cfg.model.config {
        Config::from_json_file(path)?
    } else {
        let mut c = cfg.model.preset_config()?;
        c.vocab_size = vocab;
        let id = |k: &str| specials[k].as_u64().map(|v| v as u32);
        c.bos_token_id = id("<|bos|>");
        c.eos_token_ids = id("<|eos|>").into_iter().collect();
        c.pad_token_id = id("<|pad|>");
        c
    };
    if c.vocab_size != vocab {
        return Err(TrainError::Config(format!(
            "the model's vocabulary has {} ids but the data's tokenizer has {vocab}: use the \
             checkpoint's tokenizer (data.tokenizer.path)",
            c.vocab_size
        )));
    }
    c.max_position_embeddings = c.max_position_embeddings.max(cfg.seq_len());
    c.weight_format = WeightFormat::PackedBitLinear;
    cfg.apply_attention(&mut c)?;
    if c.has_recurrent_layers() && cfg.train.document_mask {
        return Err(TrainError::Config(format!(
            "the model has {}: a recurrent layer's state would cross packed documents, which \
             the document mask cannot stop; set [train] document_mask = false",
            crate::transformer::candle_only_features(&c)
        )));
    }
    Ok(c)
}

/// Open `cpu`, `cuda`, `cuda:N` as `train.device` names it.
pub fn device(name: &str) -> Result<Device, TrainError> {
    open_device(name, &format!("train.device = \"{name}\""))
}

/// Open `cpu`, `cuda`, `cuda:N`; errors start with `setting` (the config key or the command-line
/// flag that named the device) and say why in one line: no CUDA support in this build, no such
/// GPU, a bad ordinal or an unknown name (the model crate's one device parser,
/// [`crate::device::Compute`]).
pub fn open_device(name: &str, setting: &str) -> Result<Device, TrainError> {
    crate::device::Compute::parse(name)
        .and_then(crate::device::Compute::device)
        .map_err(|e| TrainError::Device {
            setting: setting.to_string(),
            msg: e.to_string(),
        })
}

/// A training run over prepared data (`run.dir/data/`).
pub struct Trainer {
    cfg: TrainConfig,
    model_cfg: Config,
    params: Params,
    opt: AdamW,
    state: TrainState,
    device: Device,
    /// Compute dtype of the forward/backward pass (`train.dtype`).
    dtype: DType,
    /// The training stream on its loader thread (`prefetch.rs`).
    train: super::prefetch::Prefetch,
    val: SplitReader,
    data_dir: PathBuf,
    /// The step of the newest checkpoint this run wrote or resumed from: a second save of the
    /// same step (Ctrl-C right after a periodic checkpoint, the end of a run resumed at its end)
    /// is skipped instead of replacing a complete checkpoint.
    saved_step: Option<u64>,
}

impl Trainer {
    /// Set up the run: resume from the newest checkpoint when `resume` and one exists, else
    /// initialise (randomly, or from `model.init`). Requires the data pipeline's output.
    pub fn new(cfg: TrainConfig, resume: bool) -> Result<Self, TrainError> {
        let device = device(&cfg.train.device)?;
        Self::new_on(cfg, resume, device)
    }

    /// [`Trainer::new`] on an already opened device (the binary's `--device`), which replaces
    /// `train.device`. Parameters, optimiser state, batches and checkpoints live on it.
    pub fn new_on(cfg: TrainConfig, resume: bool, device: Device) -> Result<Self, TrainError> {
        let dtype = cfg.compute_dtype()?;
        let data_dir = cfg.run.dir.join("data");
        let shards = ShardSet::open(&data_dir)?;
        let train = shards.split(Split::Train);
        if train.is_empty() {
            return Err(TrainError::Config(
                "the training split has no sequences".into(),
            ));
        }
        let val = shards.split(Split::Val);
        if shards.index().version == crate::data::shard::VERSION_FLAGS && !cfg.train.document_mask {
            return Err(TrainError::Config(
                "the data has chat examples: their loss mask needs [train] document_mask = true"
                    .into(),
            ));
        }
        let model_cfg = model_config(&cfg, &data_dir)?;
        let hp = AdamWParams {
            beta1: cfg.optim.betas[0],
            beta2: cfg.optim.betas[1],
            eps: cfg.optim.eps,
            weight_decay: cfg.optim.weight_decay,
        };
        let ckpts = cfg.run.dir.join("checkpoints");
        let found = if resume { state::latest(&ckpts)? } else { None };
        let saved_step = found.as_ref().map(|(step, _)| *step);
        let (params, opt, st) = match found {
            Some((_, dir)) => {
                let l = state::load(&dir, &model_cfg, &device)?;
                if l.state.seed != cfg.run.seed {
                    return Err(TrainError::Checkpoint(format!(
                        "{} was written with seed {}, the config says {}",
                        dir.display(),
                        l.state.seed,
                        cfg.run.seed
                    )));
                }
                let mut opt = AdamW::new(&l.params, hp, optim::default_decay)?;
                opt.restore(l.state.step, l.moments)?;
                (l.params, opt, l.state)
            }
            None => {
                let params = match &cfg.model.init {
                    Some(dir) => {
                        let store = crate::TensorStore::load_dir(dir, &device)?;
                        Params::from_store(&model_cfg, &store)?
                    }
                    None => Params::init(&model_cfg, cfg.run.seed, cfg.model.init_std, &device)?,
                };
                let opt = AdamW::new(&params, hp, optim::default_decay)?;
                let st = TrainState {
                    step: 0,
                    data_pos: 0,
                    tokens: 0,
                    seed: cfg.run.seed,
                };
                (params, opt, st)
            }
        };
        let stream = super::prefetch::Stream::new(train, cfg.run.seed);
        let (b, t) = (cfg.train.batch_size, cfg.seq_len());
        Ok(Trainer {
            train: super::prefetch::Prefetch::start(stream, st.data_pos, b, t)?,
            cfg,
            model_cfg,
            params,
            opt,
            state: st,
            device,
            dtype,
            val,
            data_dir,
            saved_step,
        })
    }

    /// The model config.
    pub fn model_config(&self) -> &Config {
        &self.model_cfg
    }

    /// The trainable parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Counters (step, data position, tokens).
    pub fn state(&self) -> TrainState {
        self.state
    }

    fn total_steps(&self) -> u64 {
        let per_step =
            (self.cfg.train.batch_size * self.cfg.train.grad_accum * self.cfg.seq_len()) as u64;
        match self.cfg.train.tokens {
            Some(t) => self.cfg.train.steps.min(t.div_ceil(per_step).max(1)),
            None => self.cfg.train.steps,
        }
    }

    /// The device the run computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model over the current parameters, computing in `train.dtype` (bf16: the f32
    /// parameters are cast where used, so gradients come back to them in f32).
    fn model(&self, ternary: bool) -> Result<Transformer, TrainError> {
        let m = if ternary {
            Transformer::load(&self.model_cfg, &mut &self.params, &self.device)?
        } else {
            Transformer::load(
                &self.model_cfg,
                &mut FullPrecision(&self.params),
                &self.device,
            )?
        };
        Ok(m.with_compute_dtype(self.dtype)?)
    }

    /// Mean validation loss over the first `eval.batches` micro-batches of the held-out split.
    pub fn evaluate(&mut self) -> Result<Option<EvalRecord>, TrainError> {
        let len = self.val.len();
        if len == 0 || self.cfg.eval.batches == 0 {
            return Ok(None);
        }
        let model = self.model(self.cfg.ternary_at(self.state.step))?;
        let (b, t) = (self.cfg.train.batch_size as u64, self.cfg.seq_len());
        let val_loss = self.val_loss(&model)?;
        let val_loss_by_iterations = match self.model_cfg.hybrid.depth {
            None => None,
            Some(_) => Some(
                (1..=8)
                    .map(|r| self.val_loss(&model.clone().with_iterations(r)?))
                    .collect::<Result<Vec<_>, TrainError>>()?,
            ),
        };
        Ok(Some(EvalRecord {
            step: self.state.step,
            val_loss,
            val_ppl: val_loss.exp(),
            val_tokens: self.cfg.eval.batches as u64 * b * (t as u64 - 1),
            val_loss_by_iterations,
        }))
    }

    /// Mean loss of `model` over the first `eval.batches` held-out micro-batches.
    fn val_loss(&mut self, model: &Transformer) -> Result<f64, TrainError> {
        let len = self.val.len();
        let (b, t) = (self.cfg.train.batch_size as u64, self.cfg.seq_len());
        let mut sum = 0f64;
        for k in 0..self.cfg.eval.batches as u64 {
            let idx: Vec<u64> = (0..b).map(|j| (k * b + j) % len).collect();
            let batch = super::batch::batch_tensor(&mut self.val, &idx, t, &self.device)?;
            let loss = super::batch::batch_loss(model, &batch, self.cfg.train.document_mask)?;
            sum += loss.to_scalar::<f32>()? as f64;
        }
        Ok(sum / self.cfg.eval.batches as f64)
    }

    /// Write the checkpoint of the current step (unless this run already has it) and prune.
    /// A failed write (a full disk) names the checkpoint that is still the newest complete one.
    fn checkpoint(&mut self, obs: &mut dyn Observer) -> Result<(), TrainError> {
        if self.saved_step == Some(self.state.step) {
            return Ok(());
        }
        let root = self.cfg.run.dir.join("checkpoints");
        let dir = state::step_dir(&root, self.state.step);
        if let Err(e) = state::save(&dir, &self.state, &self.params, self.opt.moments()) {
            let kept = state::latest(&root)?
                .map_or("none was written yet".to_string(), |(_, p)| {
                    format!("{} is kept", p.display())
                });
            return Err(TrainError::Checkpoint(format!(
                "saving step {} failed ({e}); the newest complete checkpoint {kept}",
                self.state.step
            )));
        }
        self.saved_step = Some(self.state.step);
        state::prune(&root, self.cfg.checkpoint.keep)?;
        obs.event(&Event::Checkpoint {
            step: self.state.step,
            dir: &dir,
        });
        Ok(())
    }

    /// Export the packed ternary inference checkpoint (with the data's tokenizer) to `dir`.
    pub fn export(&self, dir: &Path) -> Result<(), TrainError> {
        save_checkpoint(dir, &self.model_cfg, &self.params, Some(&self.data_dir))?;
        Ok(())
    }

    /// Run until `train.steps` (or the token budget), the stop flag, or — for tests that
    /// simulate a kill — `max_new_steps` steps of this invocation (then no final export).
    pub fn run(
        &mut self,
        obs: &mut dyn Observer,
        stop: &AtomicBool,
        max_new_steps: Option<u64>,
    ) -> Result<Outcome, TrainError> {
        // Setup: the step budget, `metrics.jsonl` without rows past this step, the start event.
        let total = self.total_steps();
        let mut metrics =
            MetricsLog::open(&self.cfg.run.dir.join("metrics.jsonl"), self.state.step)?;
        obs.event(&Event::Start {
            step: self.state.step,
            total,
            params: self.params.len(),
        });
        let (start_step, start_tokens) = (self.state.step, self.state.tokens);
        let mut losses = Vec::new();
        let mut val_loss = None;
        let mut interrupted = false;
        let run_start = Instant::now();
        while self.state.step < total {
            // 1. Learning rate (and weight decay, off in stage 2 of the two-stage schedule).
            let (lr, decay_on) = optim::lr_at(
                &self.cfg.schedule,
                self.cfg.optim.lr,
                self.state.step,
                total,
            );
            // 2. Evaluation and checkpoint when due (not again right after a resume).
            if self.state.step != start_step {
                val_loss = self.evaluate_if_due(&mut metrics, obs)?.or(val_loss);
                let every = self.cfg.checkpoint.every;
                if every > 0 && self.state.step.is_multiple_of(every) {
                    self.checkpoint(obs)?;
                }
            }
            if self.stopped(stop, max_new_steps, start_step, obs)? {
                interrupted = true;
                break;
            }
            // 3–5. Micro-steps, clipping and the AdamW step.
            let rec = self.step(lr, decay_on)?;
            // 6. Log.
            metrics.write(&rec)?;
            losses.push(rec.loss);
            obs.event(&Event::Step(&rec));
        }
        let run_tokens = self.state.tokens - start_tokens;
        let tokens_per_s = run_tokens as f64 / run_start.elapsed().as_secs_f64().max(1e-9);
        // The end of the run: final evaluation, checkpoint, export and samples, then the plot.
        let mut final_dir = None;
        if !interrupted {
            // Resumed from the end-of-run checkpoint: its evaluation is in the log already.
            if self.saved_step != Some(self.state.step) {
                val_loss = self.log_evaluation(&mut metrics, obs)?.or(val_loss);
            }
            final_dir = Some(self.finish(obs)?);
        }
        if super::plot::plot_run(&self.cfg.run.dir)? {
            obs.event(&Event::Note(format!(
                "plotted {}",
                self.cfg.run.dir.join("loss.png").display()
            )));
        }
        Ok(Outcome {
            step: self.state.step,
            losses,
            val_loss,
            interrupted,
            final_dir,
            tokens_per_s,
        })
    }

    /// Evaluate when `eval.every` says so at this step; returns the validation loss if it ran.
    fn evaluate_if_due(
        &mut self,
        metrics: &mut MetricsLog,
        obs: &mut dyn Observer,
    ) -> Result<Option<f64>, TrainError> {
        let every = self.cfg.eval.every;
        if every > 0 && self.state.step.is_multiple_of(every) {
            return self.log_evaluation(metrics, obs);
        }
        Ok(None)
    }

    /// Evaluate, and write and report the record; returns the validation loss (none without a
    /// validation split or with `eval.batches = 0`).
    fn log_evaluation(
        &mut self,
        metrics: &mut MetricsLog,
        obs: &mut dyn Observer,
    ) -> Result<Option<f64>, TrainError> {
        let Some(r) = self.evaluate()? else {
            return Ok(None);
        };
        metrics.write(&r)?;
        obs.event(&Event::Eval(&r));
        Ok(Some(r.val_loss))
    }

    /// Whether the loop stops before the next step: on the stop flag (after a checkpoint, unless
    /// nothing was done yet) or after `max_new_steps` steps of this invocation.
    fn stopped(
        &mut self,
        stop: &AtomicBool,
        max_new_steps: Option<u64>,
        start_step: u64,
        obs: &mut dyn Observer,
    ) -> Result<bool, TrainError> {
        if stop.load(Ordering::SeqCst) {
            if self.state.step != start_step {
                self.checkpoint(obs)?;
            }
            obs.event(&Event::Note(format!(
                "interrupted: checkpointed at step {}",
                self.state.step
            )));
            return Ok(true);
        }
        Ok(max_new_steps.is_some_and(|m| self.state.step - start_step >= m))
    }

    /// One optimiser step: the micro-steps (forward, loss, backward, accumulate), clipping and
    /// the AdamW step. Advances the step, data position and token counters; returns the record.
    fn step(&mut self, lr: f64, decay_on: bool) -> Result<StepRecord, TrainError> {
        let (b, accum, t) = (
            self.cfg.train.batch_size,
            self.cfg.train.grad_accum,
            self.cfg.seq_len(),
        );
        // 3. Micro-steps: forward, loss, backward, accumulate.
        let t0 = Instant::now();
        let ternary = self.cfg.ternary_at(self.state.step);
        let model = self.model(ternary)?;
        let model = match self.model_cfg.hybrid.depth {
            None => model,
            Some(d) => model.with_iterations(super::batch::sampled_iterations(
                self.cfg.run.seed,
                self.state.step,
                d.train_max,
            ))?,
        };
        let mut grads = std::collections::BTreeMap::new();
        let mut loss_sum = 0f64;
        for _ in 0..accum {
            // Built on the loader thread while the previous micro-step ran.
            let batch = self
                .train
                .next(self.state.data_pos)?
                .into_device(&self.device)?;
            self.state.data_pos += b as u64;
            let loss = super::batch::batch_loss(&model, &batch, self.cfg.train.document_mask)?;
            let lv = loss.to_scalar::<f32>()?;
            if !lv.is_finite() {
                let last = state::latest(&self.cfg.run.dir.join("checkpoints"))?
                    .map_or("none written yet".to_string(), |(_, p)| {
                        p.display().to_string()
                    });
                return Err(TrainError::NonFinite {
                    step: self.state.step + 1,
                    loss: lv,
                    last,
                });
            }
            loss_sum += lv as f64;
            let g = (loss / accum as f64)?.backward()?;
            optim::accumulate(&mut grads, optim::collect_grads(&self.params, &g)?)?;
        }
        // 4. Clip.
        let grad_norm = optim::clip_grad_norm(&mut grads, self.cfg.train.grad_clip)?;
        // 5. Step.
        self.opt.step(&self.params, &grads, lr, decay_on)?;
        drop(model);
        self.state.step += 1;
        let step_tokens = (b * accum * t) as u64;
        self.state.tokens += step_tokens;
        Ok(StepRecord {
            step: self.state.step,
            loss: loss_sum / accum as f64,
            lr,
            grad_norm,
            tokens_per_s: step_tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            tokens: self.state.tokens,
            ternary,
        })
    }

    /// After the last step (and its evaluation): checkpoint, export `final/`, and complete the
    /// `eval.samples` prompts into `samples.txt`. Returns the export directory.
    fn finish(&mut self, obs: &mut dyn Observer) -> Result<PathBuf, TrainError> {
        self.checkpoint(obs)?;
        let dir = self.cfg.run.dir.join("final");
        self.export(&dir)?;
        obs.event(&Event::Note(format!("exported {}", dir.display())));
        if !self.cfg.eval.samples.is_empty() {
            let samples = super::sample::complete(
                &dir,
                &self.cfg.eval.samples,
                self.cfg.eval.sample_tokens,
                &self.device,
            )?;
            let mut text = String::new();
            for (p, c) in &samples {
                text.push_str(&format!("=== prompt: {p:?}\n{p}{c}\n\n"));
            }
            let sp = self.cfg.run.dir.join("samples.txt");
            fs::write(&sp, &text).map_err(|e| TrainError::io(&sp, e))?;
            obs.event(&Event::Note(format!("samples:\n{text}")));
        }
        Ok(dir)
    }
}
