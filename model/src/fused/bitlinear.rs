//! BitLinear's training product as one CPU op: `act_quant_ste(x) · weight_quant_ste(w)ᵀ` with
//! the forward taken in integers by the inference kernels (`tritter_kernels::ternary_matmul`:
//! the same per-token int8 activations times the same absmean ternary codes, exact i32 sums,
//! one f32 rounding per output) instead of an f32 matmul of the fake-quantised values, and the
//! straight-through backward of the composed ops: `dx = dy · W_q`, `dw = dyᵀ · X_q`, candle
//! matmuls of the fake-quantised values (the forward values of the fused quantisers).
//!
//! Must match `quant::act_quant_ste(x).broadcast_matmul(&quant::weight_quant_ste(w).t())` — the
//! forward within the f32 rounding of the composed sums (the integer sum is the exact one), the
//! gradients within the rounding of the matmuls' summation order (`fused::tests`).

use super::{check, last_dim, op_slice};
use crate::error::{Error, Result};
use crate::quant::absmean_scale_of;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, D};
use tritter_kernels::{ternary_matmul, TernaryMatrix};

/// `y = X_q · W_qᵀ` for `x` `[.., k]` and latent weights `w` `[n, k]`; STE gradients.
struct BitLinearOp;

impl CustomOp2 for BitLinearOp {
    fn name(&self) -> &'static str {
        "fused-bitlinear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = op_slice(xs, xl, self.name())?;
        let w = op_slice(ws, wl, self.name())?;
        let k = last_dim(xl);
        let (n, wk) = wl.shape().dims2()?;
        if wk != k {
            candle_core::bail!(
                "{}: input has {k} features, weights expect {wk}",
                self.name()
            );
        }
        let m = x.len().checked_div(k).unwrap_or(0);
        let mut dims = xl.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        let mut out = vec![0f32; m * n];
        if m > 0 && n > 0 && k > 0 {
            let scale = absmean_scale_of(w);
            let kernel = |e: tritter_kernels::KernelError| {
                candle_core::Error::Msg(format!("{}: {e}", self.name()))
            };
            let tm = TernaryMatrix::from_f32_scaled(w, n, k, scale).map_err(kernel)?;
            ternary_matmul(&tm, scale, x, m, &mut out).map_err(kernel)?;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let k = x.dim(D::Minus1)?;
        let n = w.dim(0)?;
        let m = x.elem_count() / k.max(1);
        let err = |e: Error| candle_core::Error::Msg(format!("{}: {e}", self.name()));
        let xq = super::act_quant_ste(&x.detach()).map_err(err)?;
        let wq = super::weight_quant_ste(&w.detach()).map_err(err)?;
        let g = grad.reshape((m, n))?;
        let dx = g.matmul(&wq)?.reshape(x.shape())?;
        let dw = g.t()?.matmul(&xq.reshape((m, k))?)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// BitLinear's latent-weight product `act_quant_ste(x) · weight_quant_ste(w)ᵀ` in one op (both
/// tensors must satisfy [`super::applies`]; `w` is `[n, k]`, `x` `[.., k]`).
pub fn bitlinear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    check(x, "bitlinear input")?;
    check(w, "bitlinear weights")?;
    if w.rank() != 2 || x.rank() == 0 {
        return Err(Error::Invalid(format!(
            "fused bitlinear: weights {:?} and input {:?} (need [n, k] and [.., k])",
            w.dims(),
            x.dims()
        )));
    }
    Ok(x.apply_op2(w, BitLinearOp)?)
}
