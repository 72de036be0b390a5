//! What the CUDA inference path (`gpu::GpuModel`, feature `cuda`) runs, decided from the config
//! alone so that every build can test it: models it cannot run are refused with one line that
//! names what they have, before a device is opened, instead of being run some other way.
//!
//! Refused today: Chameleon's per-head q/k LayerNorm, dense (unquantised) linears, and every
//! `attention_mode` but `causal`: the GPU attention kernels mask causally only, so a
//! bidirectional, prefix-LM or embedding model would get causal logits there. Such models run
//! on the CPU inference path (`--device cpu`); `tritter embed --device cuda` runs the candle
//! path, which honours the mode.

use crate::attn::AttentionMode;
use crate::config::{Config, QkNormKind, WeightFormat};
use crate::error::{Error, Result};

/// `Ok` when the CUDA path computes what the CPU inference path computes for `cfg`; otherwise
/// an error naming the feature and the way out (`--device cpu`).
pub fn check(cfg: &Config) -> Result<()> {
    if cfg.qk_norm == Some(QkNormKind::Layernorm) {
        return Err(Error::Invalid(
            "the CUDA path does not support the per-head LayerNorm QK-Norm (qk_norm \"layernorm\", \
             Chameleon); run this model on the CPU (--device cpu)"
                .into(),
        ));
    }
    if cfg.weight_format == WeightFormat::Dense {
        return Err(Error::Invalid(
            "the CUDA path runs ternary models only; this one has dense (unquantised) linears; \
             run it on the CPU (--device cpu)"
                .into(),
        ));
    }
    if cfg.attention_mode != AttentionMode::Causal {
        return Err(Error::Invalid(format!(
            "attention_mode {} is not supported by the CUDA path yet (its attention kernels mask \
             causally only); run this model on the CPU (--device cpu)",
            cfg.attention_mode.name()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_causal_attention_runs_on_cuda_and_the_refusal_names_the_mode() {
        let mut cfg = Config::tritter_tiny();
        for mode in AttentionMode::ALL {
            cfg.attention_mode = mode;
            match (mode, check(&cfg)) {
                (AttentionMode::Causal, r) => r.unwrap(),
                (_, Err(e)) => {
                    let e = e.to_string();
                    assert!(
                        e.contains(&format!("attention_mode {} ", mode.name())),
                        "{e}"
                    );
                    assert!(e.contains("--device cpu") && !e.contains('\n'), "{e}");
                }
                (_, Ok(())) => panic!("{mode:?} accepted on CUDA"),
            }
        }
    }

    #[test]
    fn layernorm_qk_norm_and_dense_linears_are_refused() {
        let mut cfg = Config::tritter_tiny();
        cfg.qk_norm = Some(QkNormKind::Layernorm);
        assert!(check(&cfg).unwrap_err().to_string().contains("layernorm"));
        let mut cfg = Config::tritter_tiny();
        cfg.weight_format = WeightFormat::Dense;
        assert!(check(&cfg).unwrap_err().to_string().contains("dense"));
    }
}
