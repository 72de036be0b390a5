//! RMSNorm `y = (x · inv) · g`, `inv = 1 / sqrt(mean(x²) + eps)` over the last dim, as
//! `norm::RmsNorm::forward` computes it in f32 (candle's `mean` is the sum times `(1/C) as f32`,
//! `+ eps` adds `eps as f32`), in one pass per row; the row sums of squares are accumulated in
//! 8 lanes, so values agree with the composed ops to rounding (≈1e-7 relative), not bit for bit.
//! The backward is one pass per row giving both gradients:
//! `dx = inv·(dy·g) − x·inv³·Σ(dy·g·x)/C` and `dg = Σ_rows dy·(x·inv)`.

use super::{block_len, check, cpu_slice, last_dim, op_slice, par_rows};
use crate::error::{Error, Result};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `Σ a·b` over a row, in 8 lanes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((l, p), q) in lanes.iter_mut().zip(x).zip(y) {
            *l += p * q;
        }
    }
    let mut s: f32 = lanes.iter().sum();
    for (p, q) in ca.remainder().iter().zip(cb.remainder()) {
        s += p * q;
    }
    s
}

/// `1 / sqrt(Σx² · (1/C) + eps)` of one row, as the composed ops' f32 steps.
fn inv_rms(x: &[f32], inv_c: f32, eps: f32) -> f32 {
    let ms = dot(x, x) * inv_c + 0.0;
    1.0 / (ms + eps).sqrt()
}

struct RmsNormOp {
    eps: f32,
}

impl RmsNormOp {
    /// `(1/C) as f32` as candle's `mean_keepdim` scales the sum.
    fn inv_c(cols: usize) -> f32 {
        (1.0 / cols.max(1) as f64) as f32
    }
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = op_slice(s1, l1, self.name())?;
        let g = op_slice(s2, l2, self.name())?;
        let cols = last_dim(l1);
        if g.len() != cols {
            candle_core::bail!("fused-rms-norm: weight of {} for rows of {cols}", g.len());
        }
        let (inv_c, eps) = (Self::inv_c(cols), self.eps);
        let mut out = vec![0f32; x.len()];
        par_rows(x, &mut out, cols, |xb, ob| {
            for (xr, or) in xb.chunks(cols).zip(ob.chunks_mut(cols)) {
                let inv = inv_rms(xr, inv_c, eps);
                for ((o, &v), &w) in or.iter_mut().zip(xr).zip(g) {
                    *o = (v * inv) * w;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (dx, dg) = {
            let (sx, lx) = x.storage_and_layout();
            let (sg, lg) = g.storage_and_layout();
            let (sd, ld) = dy.storage_and_layout();
            let xs = cpu_slice(&sx, lx, self.name())?;
            let gs = cpu_slice(&sg, lg, self.name())?;
            let ds = cpu_slice(&sd, ld, self.name())?;
            if xs.len() != ds.len() {
                candle_core::bail!("fused-rms-norm: gradient of {} for {}", ds.len(), xs.len());
            }
            rms_bwd(xs, gs, ds, Self::inv_c(gs.len()), self.eps)
        };
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dg, g.shape(), g.device())?),
        ))
    }
}

/// `dx` and `dg` of RMSNorm for rows `x` of `g.len()` values and their output gradients `dy`.
/// Blocks of rows run in parallel, each with its own partial `dg`, summed in block order.
fn rms_bwd(x: &[f32], g: &[f32], dy: &[f32], inv_c: f32, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let cols = g.len().max(1);
    let block = block_len(cols);
    let mut dx = vec![0f32; x.len()];
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .zip(dy.par_chunks(block))
        .map(|((dxb, xb), db)| {
            let mut dg = vec![0f32; cols];
            let mut u = vec![0f32; cols];
            for ((dxr, xr), dr) in dxb
                .chunks_mut(cols)
                .zip(xb.chunks(cols))
                .zip(db.chunks(cols))
            {
                let inv = inv_rms(xr, inv_c, eps);
                for ((u, &d), &w) in u.iter_mut().zip(dr).zip(g) {
                    *u = d * w;
                }
                let c = inv * inv * inv * dot(&u, xr) * inv_c;
                for ((((o, &ui), &v), &d), a) in dxr.iter_mut().zip(&u).zip(xr).zip(dr).zip(&mut dg)
                {
                    *o = inv * ui - v * c;
                    *a += d * (v * inv);
                }
            }
            dg
        })
        .collect();
    let mut dg = vec![0f32; cols];
    for p in &partials {
        for (a, b) in dg.iter_mut().zip(p) {
            *a += b;
        }
    }
    dg.truncate(g.len());
    (dx, dg)
}

/// `norm::RmsNorm::forward` for f32 with weight `g` `[C]` over `x` `[.., C]` (both must
/// satisfy [`super::applies`]).
pub fn rms_norm(x: &Tensor, g: &Tensor, eps: f64) -> Result<Tensor> {
    check(x, "rms_norm")?;
    check(g, "rms_norm")?;
    let c = x.dims().last().copied().unwrap_or(1);
    if g.elem_count() != c {
        return Err(Error::Invalid(format!(
            "fused rms_norm: weight {:?} for rows of {c}",
            g.dims()
        )));
    }
    Ok(x.apply_op2(g, RmsNormOp { eps: eps as f32 })?)
}
