//! Semantic distillation of a codec's first codebook (SpeechTokenizer's idea, Zhang et al. 2023:
//! teach RVQ level 1 what a teacher hears, so the codes a language model reads first carry
//! content rather than waveform phase and loudness). No pretrained speech model is available
//! offline, so the teacher is the clip's own short-time spectrum made gain-free: for codec frame
//! `t`, the log-magnitude STFT (Hann, 4 hops long, so the STFT's quarter-window hop is the
//! codec's hop) of the window that ends where frame `t` ends, floored at `top_db` below the
//! frame's peak (librosa's `top_db`: the noise floor becomes one constant, so what is left is
//! where the peaks are), minus its mean over the bins (a gain change adds a constant to a log
//! spectrum, so it cancels). A learned linear map `P` (`[F, D]`, F = window/2 + 1) of the
//! first level's straight-through vector `q₀` (value: the chosen entry of codebook 0;
//! gradient: to the encoder) is pulled toward it by cosine:
//!
//! `loss = 1 − mean over items and frames of cos(P·q₀[:, t], teacher[:, t])`
//!
//! `P` is training-only (`distill.proj` in the run's variables) and is not saved with the codec,
//! whose checkpoint stays an HF `EncodecModel`. Must match a naive per-frame statement (tested).

use super::TrainError;
use crate::audio::spectral::stft_magnitude;
use candle_core::{Tensor, D};
use candle_nn::{Init, VarBuilder};

/// The variable name of the projection.
pub const PROJ: &str = "distill.proj";

/// Hops per teacher window.
pub const WINDOW_HOPS: usize = 4;

/// The teacher `[B, F, T − 3]` for samples `x` `[B, 1, S]` (S = T·hop, F = 2·hop + 1): the
/// gain-free log spectrum of the window of 4 hops ending where codec frame `j + 3` ends,
/// floored `top_db` decibels below each frame's peak.
pub fn teacher(x: &Tensor, hop: usize, top_db: f64) -> Result<Tensor, TrainError> {
    if hop < 1 {
        return Err(TrainError::Config("semantic distillation: hop 0".into()));
    }
    if !(top_db.is_finite() && top_db > 0.0) {
        return Err(TrainError::Config(format!(
            "[loss] semantic_top_db must be > 0, not {top_db}"
        )));
    }
    let log = stft_magnitude(x, WINDOW_HOPS * hop)?.log()?;
    // top_db dB of magnitude = top_db/20 · ln 10 in natural log.
    let floor = (log.max_keepdim(1)? - top_db / 20.0 * std::f64::consts::LN_10)?;
    let log = log.broadcast_maximum(&floor)?;
    let mean = log.mean_keepdim(1)?;
    Ok(log.broadcast_sub(&mean)?)
}

/// The projection `P` `[F, D]` from `vb` (created on first use, N(0, 1/D)).
pub fn projection(vb: &VarBuilder, bins: usize, dim: usize) -> Result<Tensor, TrainError> {
    let std = 1.0 / (dim.max(1) as f64).sqrt();
    Ok(vb.get_with_hints(
        (bins, dim),
        PROJ,
        Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    )?)
}

/// `1 − mean cos(P·first, teacher)` over items and the frames the teacher covers; `first` is
/// `[B, D, T]`, the teacher `[B, F, T − 3]` (frame `j` ↔ codec frame `j + 3`).
pub fn loss(first: &Tensor, proj: &Tensor, teacher: &Tensor) -> Result<Tensor, TrainError> {
    let (_, _, t) = first.dims3()?;
    let frames = teacher.dim(D::Minus1)?;
    if frames == 0 || frames > t {
        return Err(TrainError::Config(format!(
            "semantic distillation: {frames} teacher frames for {t} codec frames"
        )));
    }
    let q = first.narrow(D::Minus1, t - frames, frames)?;
    let student = proj.broadcast_matmul(&q)?; // [B, F, frames]
    let dot = (&student * teacher)?.sum(1)?;
    // ε inside the roots: the derivative of √ at 0 is infinite.
    let ns = (student.sqr()?.sum(1)? + 1e-12)?.sqrt()?;
    let nt = (teacher.sqr()?.sum(1)? + 1e-12)?.sqrt()?;
    let cos = (dot / (ns * nt)?)?;
    Ok((1.0 - cos.mean_all()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// Naive log-magnitude DFT of samples `a..a+w` (Hann), bin `k`.
    fn naive_log(x: &[f32], a: usize, w: usize, k: usize) -> f64 {
        let (mut re, mut im) = (0f64, 0f64);
        for n in 0..w {
            let h = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / w as f64).cos();
            let ang = 2.0 * std::f64::consts::PI * (k * n) as f64 / w as f64;
            re += h * x[a + n] as f64 * ang.cos();
            im -= h * x[a + n] as f64 * ang.sin();
        }
        (re * re + im * im + 1e-7).sqrt().ln()
    }

    #[test]
    fn teacher_and_loss_match_a_naive_per_frame_statement() {
        let (hop, t, d) = (8usize, 7usize, 3usize);
        // Broadband (an LCG's bits), so no bin sits near the 1e-7 floor.
        let mut state = 12345u32;
        let x: Vec<f32> = (0..hop * t)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        let xt = Tensor::from_slice(&x, (1, 1, hop * t), &Device::Cpu).unwrap();
        let teach = teacher(&xt, hop, 30.0).unwrap();
        let bins = 4 * hop / 2 + 1;
        assert_eq!(teach.dims(), &[1, bins, t - 3]);
        let tv = teach.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        // A gain change leaves the teacher as it was (up to the 1e-7 floor under the magnitude).
        let loud = teacher(&(&xt * 10.0).unwrap(), hop, 30.0).unwrap();
        let diff = (loud - &teach).unwrap().abs().unwrap().max_all().unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert!(diff < 1e-3, "{diff}");
        let first: Vec<f32> = (0..d * t).map(|i| (i as f32 * 0.7).sin()).collect();
        let ft = Tensor::from_slice(&first, (1, d, t), &Device::Cpu).unwrap();
        let p: Vec<f32> = (0..bins * d).map(|i| (i as f32 * 0.31).cos()).collect();
        let pt = Tensor::from_slice(&p, (bins, d), &Device::Cpu).unwrap();
        let got = loss(&ft, &pt, &teach).unwrap().to_scalar::<f32>().unwrap() as f64;
        let mut cos_sum = 0f64;
        for j in 0..t - 3 {
            let a = j * hop;
            let teach_j: Vec<f64> = (0..bins).map(|k| naive_log(&x, a, 4 * hop, k)).collect();
            let floor = teach_j.iter().cloned().fold(f64::MIN, f64::max) - 1.5 * 10f64.ln();
            let teach_j: Vec<f64> = teach_j.iter().map(|v| v.max(floor)).collect();
            let m = teach_j.iter().sum::<f64>() / bins as f64;
            let teach_j: Vec<f64> = teach_j.iter().map(|v| v - m).collect();
            for (k, v) in teach_j.iter().enumerate() {
                assert!((v - tv[k][j] as f64).abs() < 1e-3, "bin {k} frame {j}");
            }
            let stud: Vec<f64> = (0..bins)
                .map(|k| {
                    (0..d)
                        .map(|c| p[k * d + c] as f64 * first[c * t + j + 3] as f64)
                        .sum()
                })
                .collect();
            let dot: f64 = stud.iter().zip(&teach_j).map(|(a, b)| a * b).sum();
            let ns = stud.iter().map(|v| v * v).sum::<f64>().sqrt();
            let nt = teach_j.iter().map(|v| v * v).sum::<f64>().sqrt();
            cos_sum += dot / (ns * nt);
        }
        let want = 1.0 - cos_sum / (t - 3) as f64;
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }

    #[test]
    fn the_projection_is_created_once_and_learns() {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let a = projection(&vb, 5, 3).unwrap();
        let b = projection(&vb, 5, 3).unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        assert_eq!(vars.all_vars().len(), 1);
        // A segment shorter than one teacher window is refused.
        let short = Tensor::zeros((1, 1, 16), DType::F32, &Device::Cpu).unwrap();
        assert!(teacher(&short, 8, 30.0).is_err());
    }
}
