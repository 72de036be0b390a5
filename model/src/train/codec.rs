//! Training an EnCodec-architecture codec (`task = "codec"`), for users who want their own:
//! random segments of clips through the differentiable forward
//! ([`crate::audio::encodec::Encodec::forward_train`]), with
//!
//! `loss = time · L1(x, x̂) + spectral · multi-scale STFT loss(x, x̂; spectral_log) + commitment · ‖z − sg(q)‖²
//!         + codebook · ‖sg(z) − q‖²`
//!
//! (EnCodec's reconstruction terms and the VQ-VAE quantiser terms), plus, when `[loss] semantic`
//! is set, `semantic · ` the distillation of codebook 0 ([`super::codec_distill`]). (HF's EMA codebook updates and
//! the adversarial losses are not used). Before the first step each codebook is initialised from
//! encoder frames of a batch — codebook `q` from what codebooks `0..q` leave over — so no entry
//! starts dead; every `refresh_dead_every` steps the entries no frame chose meanwhile are
//! replaced the same way (without it the first codebook of the demo codec collapsed onto one
//! entry for 7 of the 10 DTMF keys). Clips are mono at the codec's rate; the binary decodes and resamples them.

use super::codec_distill;
use super::config::{OptimSection, RunSection, ScheduleSection};
use super::optim::{self, AdamW, AdamWParams};
use super::TrainError;
use crate::audio::encodec::{Encodec, EncodecConfig, EncodecPath};
use crate::audio::spectral::{multi_scale_spectral_loss, spectral_loss_weighted};
use crate::weights::Params;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// `[train]` of a codec run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodecTrainSection {
    pub steps: u64,
    pub batch_size: usize,
    /// Length of each training segment, seconds.
    pub segment_seconds: f64,
    pub grad_clip: f64,
    pub log_every: u64,
    /// Every this many steps, codebook entries no frame chose since the last refresh are
    /// replaced by encoder frames (EnCodec's dead-code expiry; 0 = never). Default 50.
    pub refresh_dead_every: u64,
}

impl Default for CodecTrainSection {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 8,
            segment_seconds: 0.5,
            grad_clip: 1.0,
            log_every: 50,
            refresh_dead_every: 50,
        }
    }
}

/// `[loss]`: weights of the terms and the STFT window sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodecLossSection {
    pub time: f64,
    pub spectral: f64,
    pub commitment: f64,
    pub codebook: f64,
    /// STFT windows (samples) of the spectral term.
    pub scales: Vec<usize>,
    /// Weight of the log-magnitude L2 inside the spectral term (1: EnCodec-style; lower it
    /// where the clips' noise floor would dominate the log term).
    pub spectral_log: f64,
    /// Weight of the semantic distillation of codebook 0 (see [`super::codec_distill`]; 0 = off).
    pub semantic: f64,
    /// The distillation teacher's range: its log spectrum is floored this many dB below each
    /// frame's peak. Default 30.
    pub semantic_top_db: f64,
}

impl Default for CodecLossSection {
    fn default() -> Self {
        Self {
            time: 0.1,
            spectral: 1.0,
            commitment: 0.25,
            codebook: 1.0,
            scales: vec![32, 64, 128, 256, 512, 1024],
            spectral_log: 1.0,
            semantic: 0.0,
            semantic_top_db: 30.0,
        }
    }
}

/// `[data]` of a codec run: clips (a JSONL of `{"audio": PATH, ...}` records, or a folder of
/// audio files); `test` for the reconstruction figures at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodecDataSection {
    pub train: PathBuf,
    pub test: Option<PathBuf>,
}

impl Default for CodecDataSection {
    fn default() -> Self {
        Self {
            train: PathBuf::from("train.jsonl"),
            test: None,
        }
    }
}

/// The whole `task = "codec"` config; `[codec]` is an HF `EncodecConfig` (its keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecRunConfig {
    pub task: String,
    #[serde(default)]
    pub run: RunSection,
    #[serde(default)]
    pub codec: EncodecConfig,
    #[serde(default)]
    pub train: CodecTrainSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub schedule: ScheduleSection,
    #[serde(default)]
    pub loss: CodecLossSection,
    #[serde(default)]
    pub data: CodecDataSection,
}

/// One logged step: the total and its terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecStep {
    pub step: u64,
    pub loss: f64,
    pub time: f64,
    pub spectral: f64,
    pub commitment: f64,
    pub codebook: f64,
    /// The semantic distillation term (0 when it is off).
    pub semantic: f64,
    pub lr: f64,
}

/// A trainable codec: the model and the variables behind it.
pub struct CodecTrainer {
    pub model: Encodec,
    vars: VarMap,
}

impl CodecTrainer {
    /// A randomly initialised codec of `cfg` on `device`. The initial weights come from
    /// candle's generator, which takes `seed` on a GPU but cannot be seeded on the CPU (as for
    /// the other VarMap-built models); the codebooks and the data order follow `seed`.
    pub fn new(cfg: &EncodecConfig, seed: u64, device: &Device) -> Result<Self, TrainError> {
        if !device.is_cpu() {
            device.set_seed(seed)?;
        }
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
        let model = Encodec::new(cfg, vb)?;
        Ok(Self { model, vars })
    }

    /// The trainable variables by name.
    pub fn params(&self) -> Params {
        let mut p = Params::new();
        if let Ok(m) = self.vars.data().lock() {
            for (k, v) in m.iter() {
                p.insert_var(k, v.clone());
            }
        }
        p
    }

    /// Sets every codebook from encoder frames of `x` `[B, 1, S]`: codebook `q` gets
    /// `codebook_size` frames (drawn with `rng`) of what codebooks `0..q` leave over.
    pub fn init_codebooks(&self, x: &Tensor, rng: &mut impl Rng) -> Result<(), TrainError> {
        self.refresh_codebooks(x, None, rng)
    }

    /// Like [`CodecTrainer::init_codebooks`], but only the entries `dead[q][e]` of each
    /// codebook are replaced (with frames of what the live codebooks `0..q` leave over); every
    /// entry when `dead` is `None`. Returns nothing; the codebooks' variables change in place.
    pub fn refresh_codebooks(
        &self,
        x: &Tensor,
        dead: Option<&[Vec<bool>]>,
        rng: &mut impl Rng,
    ) -> Result<(), TrainError> {
        let z = self.model.embeddings(x, EncodecPath::Fast)?;
        let (b, d, t) = z.dims3()?;
        let mut r = z.transpose(1, 2)?.reshape((b * t, d))?.contiguous()?;
        let n = b * t;
        let size = self.model.codebook_size();
        let params = self.params();
        for q in 0..self.model.num_quantizers() {
            let name = format!("quantizer.layers.{q}.codebook.embed");
            let var = params
                .get(&name)
                .ok_or_else(|| TrainError::Config(format!("the codec has no `{name}`")))?;
            let pick: Vec<u32> = (0..size).map(|_| rng.random_range(0..n) as u32).collect();
            let idx = Tensor::from_vec(pick, size, r.device())?;
            let noise = (Tensor::randn(0f32, 1.0, (size, d), r.device())? * 1e-3)?;
            let fresh = (r.index_select(&idx, 0)? + noise)?;
            let embed = match dead.and_then(|dd| dd.get(q)) {
                None => fresh,
                Some(mask) => {
                    let m: Vec<f32> = mask.iter().map(|&x| f32::from(u8::from(x))).collect();
                    let m = Tensor::from_vec(m, (size, 1), r.device())?;
                    let old = var.as_tensor().detach();
                    (fresh.broadcast_mul(&m)? + old.broadcast_mul(&(1.0 - &m)?)?)?
                }
            };
            var.set(&embed)?;
            // Nearest entry of every frame, then the residual for the next codebook.
            let dist = (r
                .sqr()?
                .sum_keepdim(1)?
                .broadcast_sub(&(r.matmul(&embed.t()?)? * 2.0)?)?)
            .broadcast_add(&embed.sqr()?.sum(1)?.unsqueeze(0)?)?;
            let near = dist.argmin(D::Minus1)?;
            r = (&r - embed.index_select(&near, 0)?)?;
        }
        Ok(())
    }

    /// The semantic distillation's projection (created on first use; see
    /// [`super::codec_distill`]).
    pub fn distill_projection(&self) -> Result<Tensor, TrainError> {
        let vb = VarBuilder::from_varmap(&self.vars, DType::F32, self.model.device());
        let bins = codec_distill::WINDOW_HOPS * self.model.hop_length() / 2 + 1;
        codec_distill::projection(&vb, bins, self.model.config().hidden_size)
    }

    /// The weighted loss of a batch `[B, 1, S]`, its terms `(time, spectral, commitment,
    /// codebook, semantic)` and the codes `[B, n_q, T]` the frames chose.
    pub fn loss(
        &self,
        x: &Tensor,
        w: &CodecLossSection,
    ) -> Result<(Tensor, [f64; 5], Tensor), TrainError> {
        let f = self.model.forward_train_levels(x)?;
        let s = x.dim(D::Minus1)?;
        let recon = f.recon.narrow(D::Minus1, 0, s)?;
        let time = (&recon - x)?.abs()?.mean_all()?;
        let spectral = spectral_loss_weighted(x, &recon, &w.scales, w.spectral_log)?;
        let mut total = ((((&time * w.time)? + (&spectral * w.spectral)?)?
            + (&f.commitment * w.commitment)?)?
            + (&f.codebook * w.codebook)?)?;
        let v = |t: &Tensor| -> Result<f64, TrainError> { Ok(t.to_scalar::<f32>()? as f64) };
        let mut semantic = 0.0;
        if w.semantic > 0.0 {
            let teacher = codec_distill::teacher(x, self.model.hop_length(), w.semantic_top_db)?;
            let l = codec_distill::loss(&f.first, &self.distill_projection()?, &teacher)?;
            semantic = v(&l)?;
            total = (total + (l * w.semantic)?)?;
        }
        let terms = [
            v(&time)?,
            v(&spectral)?,
            v(&f.commitment)?,
            v(&f.codebook)?,
            semantic,
        ];
        Ok((total, terms, f.codes))
    }
}

/// Adds each code of `codes` `[B, n_q, T]` to `usage[q][code]`.
fn count_codes(usage: &mut [Vec<u64>], codes: &Tensor) -> Result<(), TrainError> {
    for item in codes.to_vec3::<i64>()? {
        for (q, book) in item.iter().enumerate() {
            for &c in book {
                if let Some(n) = usage.get_mut(q).and_then(|u| u.get_mut(c as usize)) {
                    *n += 1;
                }
            }
        }
    }
    Ok(())
}

/// A batch of `batch` random segments of `len` samples from `clips` (a clip shorter than `len`
/// is zero-padded), `[batch, 1, len]`.
pub fn random_segments(
    clips: &[Vec<f32>],
    batch: usize,
    len: usize,
    rng: &mut impl Rng,
    device: &Device,
) -> Result<Tensor, TrainError> {
    if clips.is_empty() || len == 0 {
        return Err(TrainError::Config("[data] train: no clips".into()));
    }
    let mut data = vec![0f32; batch * len];
    for row in data.chunks_mut(len) {
        let clip = &clips[rng.random_range(0..clips.len())];
        let start = if clip.len() > len {
            rng.random_range(0..=clip.len() - len)
        } else {
            0
        };
        let take = (clip.len() - start).min(len);
        row[..take].copy_from_slice(&clip[start..start + take]);
    }
    Ok(Tensor::from_vec(data, (batch, 1, len), device)?)
}

/// Trains the codec on `clips` (mono, at the codec's rate) for `cfg.train.steps` steps;
/// `on_step` sees every step; `stop` ends the run early. Returns the total losses.
pub fn train_codec(
    trainer: &CodecTrainer,
    cfg: &CodecRunConfig,
    clips: &[Vec<f32>],
    stop: &AtomicBool,
    mut on_step: impl FnMut(&CodecStep),
) -> Result<Vec<f64>, TrainError> {
    let device = trainer.model.device().clone();
    let len = (cfg.train.segment_seconds * f64::from(cfg.codec.sampling_rate)).round() as usize;
    let hop = trainer.model.hop_length();
    let len = len.div_ceil(hop.max(1)) * hop;
    if len == 0 {
        return Err(TrainError::Config(
            "[train] segment_seconds must be > 0".into(),
        ));
    }
    let l = &cfg.loss;
    let weights = [
        l.time,
        l.spectral,
        l.commitment,
        l.codebook,
        l.spectral_log,
        l.semantic,
    ];
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(TrainError::Config(format!(
            "[loss] weights must be finite and ≥ 0 (time, spectral, commitment, codebook, spectral_log, semantic = {weights:?})"
        )));
    }
    let bs = cfg.train.batch_size.max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.run.seed);
    if l.semantic > 0.0 {
        trainer.distill_projection()?; // a variable before the optimiser sees them
    }
    let params = trainer.params();
    trainer.init_codebooks(
        &random_segments(clips, bs * 4, len, &mut rng, &device)?,
        &mut rng,
    )?;
    let hp = AdamWParams {
        beta1: cfg.optim.betas[0],
        beta2: cfg.optim.betas[1],
        eps: cfg.optim.eps,
        weight_decay: cfg.optim.weight_decay,
    };
    // Codebooks, norms' gains and biases are not decayed.
    let mut adam = AdamW::new(&params, hp, |n| {
        !(n.contains("codebook")
            || n.ends_with(".bias")
            || n.ends_with("original0")
            || n.ends_with("weight_g"))
    })?;
    let mut losses = vec![];
    let mut usage = vec![vec![0u64; trainer.model.codebook_size()]; trainer.model.num_quantizers()];
    for step in 0..cfg.train.steps {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let x = random_segments(clips, bs, len, &mut rng, &device)?;
        let (lr, decay_on) = optim::lr_at(&cfg.schedule, cfg.optim.lr, step, cfg.train.steps);
        let (loss, terms, codes) = trainer.loss(&x, &cfg.loss)?;
        count_codes(&mut usage, &codes)?;
        let refresh = cfg.train.refresh_dead_every;
        if refresh > 0 && (step + 1) % refresh == 0 && step + 1 < cfg.train.steps {
            let dead: Vec<Vec<bool>> = usage
                .iter()
                .map(|u| u.iter().map(|&c| c == 0).collect())
                .collect();
            let more = random_segments(clips, bs * 4, len, &mut rng, &device)?;
            trainer.refresh_codebooks(&more, Some(&dead), &mut rng)?;
            for u in usage.iter_mut() {
                u.iter_mut().for_each(|c| *c = 0);
            }
        }
        let lv = loss.to_scalar::<f32>()? as f64;
        if !lv.is_finite() {
            return Err(TrainError::Config(format!(
                "loss became {lv} at step {step}"
            )));
        }
        let grads = loss.backward()?;
        let mut g = optim::collect_grads(&params, &grads)?;
        optim::clip_grad_norm(&mut g, cfg.train.grad_clip)?;
        adam.step(&params, &g, lr, decay_on)?;
        losses.push(lv);
        on_step(&CodecStep {
            step: step + 1,
            loss: lv,
            time: terms[0],
            spectral: terms[1],
            commitment: terms[2],
            codebook: terms[3],
            semantic: terms[4],
            lr,
        });
    }
    Ok(losses)
}

/// Reconstruction figures of a codec on clips (whole clips, every codebook, inference path):
/// mean signal-to-noise ratio (dB) of the decoded clip and the mean multi-scale spectral loss.
pub fn reconstruction_report(
    model: &Encodec,
    clips: &[Vec<f32>],
    scales: &[usize],
) -> Result<(f64, f64), TrainError> {
    let (mut snr, mut spec, mut n) = (0f64, 0f64, 0usize);
    for c in clips.iter().filter(|c| !c.is_empty()) {
        let x = Tensor::from_slice(c, (1, 1, c.len()), model.device())?;
        let codes = model.encode(&x, model.num_quantizers())?;
        let y = model.decode(&codes)?.narrow(D::Minus1, 0, c.len())?;
        let signal = x.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        let noise = (&y - &x)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        snr += 10.0 * (signal.max(1e-12) / noise.max(1e-12)).log10();
        spec += multi_scale_spectral_loss(&x, &y, scales)?.to_scalar::<f32>()? as f64;
        n += 1;
    }
    if n == 0 {
        return Err(TrainError::Config("no clips to measure".into()));
    }
    Ok((snr / n as f64, spec / n as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> CodecTrainer {
        let cfg = EncodecConfig {
            sampling_rate: 8000,
            hidden_size: 8,
            num_filters: 4,
            upsampling_ratios: vec![4, 2],
            num_lstm_layers: 1,
            codebook_size: 4,
            target_bandwidths: vec![4.0],
            ..EncodecConfig::default()
        };
        CodecTrainer::new(&cfg, 0, &Device::Cpu).unwrap()
    }

    fn books(t: &CodecTrainer) -> Vec<Vec<Vec<f32>>> {
        let p = t.params();
        (0..t.model.num_quantizers())
            .map(|q| {
                p.get(&format!("quantizer.layers.{q}.codebook.embed"))
                    .unwrap()
                    .as_tensor()
                    .to_vec2::<f32>()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_refresh_replaces_only_dead_entries_with_encoder_frames() {
        let t = tiny();
        assert_eq!(t.model.num_quantizers(), 2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let x = Tensor::randn(0f32, 1.0, (2, 1, 160), &Device::Cpu).unwrap();
        t.init_codebooks(&x, &mut rng).unwrap();
        let before = books(&t);
        // Codebook 0's entry 2 and codebook 1's entry 0 are dead.
        let dead = vec![
            vec![false, false, true, false],
            vec![true, false, false, false],
        ];
        t.refresh_codebooks(&x, Some(&dead), &mut rng).unwrap();
        let after = books(&t);
        for (q, mask) in dead.iter().enumerate() {
            for (e, &is_dead) in mask.iter().enumerate() {
                assert_eq!(
                    after[q][e] != before[q][e],
                    is_dead,
                    "codebook {q} entry {e}"
                );
            }
        }
        // A replaced entry of codebook 0 is an encoder frame (plus 1e-3 noise).
        let z = t.model.embeddings(&x, EncodecPath::Fast).unwrap();
        let frames = z.transpose(1, 2).unwrap().reshape(((), 8)).unwrap();
        let frames = frames.to_vec2::<f32>().unwrap();
        let near = frames
            .iter()
            .map(|f| {
                f.iter()
                    .zip(&after[0][2])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max)
            })
            .fold(f32::INFINITY, f32::min);
        assert!(near < 1e-2, "{near}");
    }

    #[test]
    fn the_semantic_term_reaches_the_projection_and_the_encoder() {
        let t = tiny();
        t.distill_projection().unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 256), &Device::Cpu).unwrap();
        let w = CodecLossSection {
            time: 0.0,
            spectral: 0.0,
            commitment: 0.0,
            codebook: 0.0,
            scales: vec![32],
            spectral_log: 1.0,
            semantic: 1.0,
            semantic_top_db: 30.0,
        };
        let (loss, terms, _) = t.loss(&x, &w).unwrap();
        // Only the semantic term is weighted: the total is that term, a 1 − cosine.
        let total = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((total - terms[4]).abs() < 1e-6 && (0.0..=2.0).contains(&terms[4]));
        let grads = loss.backward().unwrap();
        let p = t.params();
        for name in [codec_distill::PROJ, "encoder.layers.0.conv.bias"] {
            let g = grads.get(p.get(name).unwrap().as_tensor()).unwrap();
            let n = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0, "{name}");
        }
        // Off, the projection is not needed and the term is 0.
        let off = CodecLossSection {
            semantic: 0.0,
            spectral: 1.0,
            ..w
        };
        assert_eq!(t.loss(&x, &off).unwrap().1[4], 0.0);
    }

    #[test]
    fn codes_are_counted_per_codebook() {
        let codes = Tensor::from_vec(vec![0i64, 0, 3, 1, 1, 1], (1, 2, 3), &Device::Cpu).unwrap();
        let mut usage = vec![vec![0u64; 4]; 2];
        count_codes(&mut usage, &codes).unwrap();
        assert_eq!(usage, vec![vec![2, 0, 0, 1], vec![0, 3, 0, 0]]);
    }
}
