//! The BitNet quantisers' straight-through forms as single-pass CPU ops: the forward value is
//! `quant::act_quant_ste` / `quant::weight_quant_ste`'s bit for bit — the same f32 operations in
//! the same order as the composed candle ops (candle's scalar `affine` is `v·mul + add`, its
//! `clamp` is `maximum` then `minimum`, `t / s` by a scalar multiplies by `(1/s as f64) as f32`) —
//! and the gradient is the identity.

use super::{check, last_dim, op_slice, par_rows};
use crate::error::Result;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

/// 1.5 · 2^23 (as `quant::round_ties_even`): `(v + M) − M` rounds half to even for |v| < 2^22.
const MAGIC: f32 = 12_582_912.0;

/// `quant::act_quant_ste`'s forward on one row `x` into `out`.
fn act_quant_row(x: &[f32], out: &mut [f32]) {
    // max|x| in 8 lanes (max is exact in any order), as candle's `max_keepdim` of `abs`.
    let first = x.first().map_or(0.0, |v| v.abs());
    let mut lanes = [first; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    let mut m = lanes.iter().fold(first, |a, &b| a.max(b));
    for v in chunks.remainder() {
        m = m.max(v.abs());
    }
    // clamp(1e-5, f32::MAX) as candle's maximum then minimum.
    let m = if m < 1e-5 { 1e-5 } else { m };
    let m = if m > f32::MAX { f32::MAX } else { m };
    let scale = 127f32 / m;
    for (o, &v) in out.iter_mut().zip(x) {
        let r = (v * scale + MAGIC) - MAGIC;
        let q = if r < -128.0 { -128.0 } else { r };
        let q = if q > 127.0 { 127.0 } else { q };
        *o = v + (q / scale - v);
    }
}

/// Per-token absmax int8 fake quantisation along the last dim; gradient identity.
struct ActQuantSte;

impl CustomOp1 for ActQuantSte {
    fn name(&self) -> &'static str {
        "fused-act-quant-ste"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = op_slice(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        let cols = last_dim(l);
        par_rows(x, &mut out, cols, |xb, ob| {
            for (xr, or) in xb.chunks(cols).zip(ob.chunks_mut(cols)) {
                act_quant_row(xr, or);
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.clone()))
    }
}

/// Absmean ternary fake quantisation of the whole tensor with the scale `s`; gradient identity.
struct WeightQuantSte;

impl CustomOp1 for WeightQuantSte {
    fn name(&self) -> &'static str {
        "fused-weight-quant-ste"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = op_slice(s, l, self.name())?;
        let s = crate::quant::absmean_scale_of(w);
        // `q / s as f64` is candle's `affine(1 / s, 0)`: the reciprocal in f64, then f32.
        let inv = (1.0 / s as f64) as f32;
        let mut out = vec![0f32; w.len()];
        par_rows(w, &mut out, 1, |wb, ob| {
            for (o, &v) in ob.iter_mut().zip(wb) {
                let r = ((v * s + 0.0) + MAGIC) - MAGIC;
                let q = if r < -1.0 { -1.0 } else { r };
                let q = if q > 1.0 { 1.0 } else { q };
                *o = v + ((q * inv + 0.0) - v);
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        _w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.clone()))
    }
}

/// `quant::act_quant_ste` in one pass (the tensor must satisfy [`applies`]).
pub fn act_quant_ste(x: &Tensor) -> Result<Tensor> {
    check(x, "act_quant_ste")?;
    Ok(x.apply_op1(ActQuantSte)?)
}

/// `quant::weight_quant_ste` in one pass after the (sequential, f64) absmean (the tensor must
/// satisfy [`applies`]).
pub fn weight_quant_ste(w: &Tensor) -> Result<Tensor> {
    check(w, "weight_quant_ste")?;
    Ok(w.apply_op1(WeightQuantSte)?)
}
