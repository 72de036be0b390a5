//! The tensors of an HF BitNet export, in either form transformers loads:
//!
//! - packed (`bitlinear` / `offline`): each BitLinear weight as uint8 `[ceil(out/4), in]`
//!   (four output rows per byte, code = value + 1) plus `weight_scale` `[1]` in the divide
//!   convention `y = acc / (s_x · weight_scale)`; the other tensors in their source dtype.
//! - bf16 (`autobitlinear` / `online`): master weights `[out, in]` that transformers' `WeightQuant`
//!   (absmean, round half to even, clamp to ±1) turns into the model's ternary weights at run
//!   time; every tensor bf16.
//!
//! A packed source has no master weights. Its bf16 form is built so that the online quantiser
//! gives back the same codes and, to about 1e-6, the same scale ([`master_from_codes`]).

use super::HfForm;
use crate::bitlinear::PackedLinear;
use crate::config::{Config, WeightFormat};
use crate::error::{Error, Result};
use crate::weights::{check_shape, param_shapes, scalar_f32, unpack_hf, TensorStore};
use candle_core::{DType, Device, Tensor};
use half::bf16;
use std::collections::BTreeMap;
use tritter_kernels::TernaryMatrix;

/// Whether `name` is the weight of a BitLinear layer.
pub(crate) fn is_bitlinear_weight(name: &str) -> bool {
    name.starts_with("model.layers.")
        && name.ends_with("_proj.weight")
        && (name.contains(".self_attn.") || name.contains(".mlp."))
}

/// A BitLinear weight as the source holds it.
enum Linear {
    /// Packed codes and the divide-convention scale.
    Ternary(TernaryMatrix, f32),
    /// Full-precision master weights (f32).
    Latent(Tensor),
}

fn read_linear(cfg: &Config, store: &TensorStore, name: &str, shape: &[usize]) -> Result<Linear> {
    let (n, k) = (shape[0], shape[1]);
    let w = store.get(name)?;
    if w.dtype() == DType::U8 {
        let m = unpack_hf(name, w, n, k)?;
        let sname = format!("{}.weight_scale", name.trim_end_matches(".weight"));
        let s = scalar_f32(&sname, store.get(&sname)?)?;
        let d = match cfg.weight_format {
            WeightFormat::PackedAutoBitLinear => 1.0 / s,
            _ => s,
        };
        if !(d.is_finite() && d > 0.0) {
            return Err(Error::Invalid(format!(
                "checkpoint: `{sname}` is {s}, not a positive finite scale"
            )));
        }
        return Ok(Linear::Ternary(m, d));
    }
    Ok(Linear::Latent(store.float(name, shape)?))
}

/// Master weights whose absmean quantisation gives `codes` with a dequantised magnitude of
/// `target` (= mean|W|): zeros stay 0, every non-zero code gets one of two neighbouring bf16
/// magnitudes around `target · len / nnz`, as many of the larger as brings the mean closest to
/// `target`. Each non-zero entry is then at least about `target`, so it rounds to ±1.
pub fn master_from_codes(codes: &[i8], target: f32) -> Result<Vec<bf16>> {
    if !(target.is_finite() && target > 0.0) {
        return Err(Error::Invalid(format!(
            "weight scale magnitude {target} is not a positive finite number"
        )));
    }
    let nnz = codes.iter().filter(|&&c| c != 0).count();
    if nnz == 0 {
        return Ok(vec![bf16::ZERO; codes.len()]);
    }
    let total = f64::from(target) * codes.len() as f64;
    let want = total / nnz as f64;
    let mut lo = bf16::from_f64(want);
    if lo.to_f64() > want {
        lo = bf16::from_bits(lo.to_bits() - 1);
    }
    let hi = bf16::from_bits(lo.to_bits() + 1);
    if !(lo.to_f64() > 0.0 && hi.is_finite()) {
        return Err(Error::Invalid(format!(
            "weight scale magnitude {target} is outside bf16's range"
        )));
    }
    let step = hi.to_f64() - lo.to_f64();
    let n_hi = ((total - nnz as f64 * lo.to_f64()) / step)
        .round()
        .clamp(0.0, nnz as f64) as usize;
    let mut seen = 0usize;
    Ok(codes
        .iter()
        .map(|&c| {
            if c == 0 {
                return bf16::ZERO;
            }
            let mag = if seen < n_hi { hi } else { lo };
            seen += 1;
            if c > 0 {
                mag
            } else {
                -mag
            }
        })
        .collect())
}

fn packed_pair(
    base: &str,
    m: &TernaryMatrix,
    d: f32,
    out: &mut BTreeMap<String, Tensor>,
) -> Result<()> {
    let packed = Tensor::from_vec(m.to_hf_packed(), (m.n().div_ceil(4), m.k()), &Device::Cpu)?;
    out.insert(format!("{base}.weight"), packed);
    out.insert(
        format!("{base}.weight_scale"),
        Tensor::new(&[d], &Device::Cpu)?,
    );
    Ok(())
}

fn export_linear(
    base: &str,
    lin: Linear,
    form: HfForm,
    out: &mut BTreeMap<String, Tensor>,
) -> Result<()> {
    match (form, lin) {
        (HfForm::Packed, Linear::Ternary(m, d)) => packed_pair(base, &m, d, out),
        (HfForm::Packed, Linear::Latent(t)) => {
            let p = PackedLinear::from_latent(&t)?;
            packed_pair(base, p.matrix(), p.weight_scale(), out)
        }
        (HfForm::Bf16, Linear::Latent(t)) => {
            out.insert(format!("{base}.weight"), t.to_dtype(DType::BF16)?);
            Ok(())
        }
        (HfForm::Bf16, Linear::Ternary(m, d)) => {
            let vals = master_from_codes(&m.to_ternary(), 1.0 / d)?;
            let t = Tensor::from_vec(vals, (m.n(), m.k()), &Device::Cpu)?;
            out.insert(format!("{base}.weight"), t);
            Ok(())
        }
    }
}

/// Every tensor of the export under its HF name, and whether any float tensor is f32 (the
/// config's `dtype` then says float32, so transformers keeps them so).
pub fn hf_tensors(
    cfg: &Config,
    store: &TensorStore,
    form: HfForm,
) -> Result<(BTreeMap<String, Tensor>, bool)> {
    let mut out = BTreeMap::new();
    let mut any_f32 = false;
    for (name, shape) in param_shapes(cfg) {
        if is_bitlinear_weight(&name) {
            let lin = read_linear(cfg, store, &name, &shape)?;
            export_linear(name.trim_end_matches(".weight"), lin, form, &mut out)?;
            continue;
        }
        let t = store.get(&name)?;
        check_shape(&name, t, &shape)?;
        let t = match (form, t.dtype()) {
            (HfForm::Bf16, _) => store.float(&name, &shape)?.to_dtype(DType::BF16)?,
            (HfForm::Packed, DType::BF16 | DType::F32) => {
                store.float(&name, &shape)?;
                t.to_device(&Device::Cpu)?
            }
            (HfForm::Packed, _) => store.float(&name, &shape)?,
        };
        any_f32 |= t.dtype() == DType::F32;
        out.insert(name, t);
    }
    if form == HfForm::Packed {
        any_f32 |= out
            .iter()
            .any(|(k, t)| k.ends_with(".weight_scale") && t.dtype() == DType::F32);
    }
    Ok((out, any_f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_abs(v: &[bf16]) -> f64 {
        v.iter().map(|x| f64::from(x.to_f32().abs())).sum::<f64>() / v.len() as f64
    }

    #[test]
    fn master_weights_quantise_back_to_codes_and_scale() {
        let mut seed = 7u32;
        for (len, target) in [(4096usize, 0.0213f32), (64 * 41, 1.7), (12, 3e-3), (1, 0.5)] {
            let codes: Vec<i8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((seed >> 16) % 3) as i8 - 1
                })
                .collect();
            let w = master_from_codes(&codes, target).unwrap();
            let f: Vec<f32> = w.iter().map(|x| x.to_f32()).collect();
            let (m, s) = TernaryMatrix::from_f32_absmean(&f, 1, len).unwrap();
            if codes.iter().all(|&c| c == 0) {
                continue;
            }
            assert_eq!(m.to_ternary(), codes, "len {len}");
            let rel = ((1.0 / s) as f64 - target as f64).abs() / target as f64;
            // Two neighbouring bf16 magnitudes (2^-7 apart at most, relative) mixed over nnz
            // entries: the mean lands within 2^-8 / nnz of the target, plus f32 rounding.
            let nnz = codes.iter().filter(|&&c| c != 0).count() as f64;
            let bound = 1e-6 + 1.0 / (256.0 * nnz);
            assert!(rel < bound, "len {len}: scale off by {rel} > {bound}");
            assert!((mean_abs(&w) - target as f64).abs() / (target as f64) < bound);
        }
    }

    #[test]
    fn all_zero_codes_give_zeros_and_bad_scale_is_an_error() {
        assert!(master_from_codes(&[0, 0, 0], 0.1)
            .unwrap()
            .iter()
            .all(|x| x.to_f32() == 0.0));
        assert!(master_from_codes(&[1, -1], f32::NAN).is_err());
        assert!(master_from_codes(&[1, -1], 0.0).is_err());
    }
}
