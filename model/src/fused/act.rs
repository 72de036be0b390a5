//! The MLP's squared ReLU as single-pass CPU ops, bit for bit with the composed candle ops they
//! replace (`x.relu()?.sqr()?` and `(g.relu()?.sqr()? * u)?`), forward and backward: candle's
//! `sqr` backward is `(r·dy)·2 + 0` and `relu`'s multiplies by the mask `x ≥ 0`; the ops here do
//! the same f32 operations in the same order.

use super::{block_len, check, cpu_slice, op_slice};
use crate::error::{Error, Result};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `relu(v)` as candle's (`v.max(0)`).
#[inline(always)]
fn relu(v: f32) -> f32 {
    v.max(0.0)
}

/// candle's relu gradient mask `x ≥ 0` as f32.
#[inline(always)]
fn mask(v: f32) -> f32 {
    if v >= 0.0 {
        1.0
    } else {
        0.0
    }
}

/// `relu(x)²`.
struct Relu2;

impl CustomOp1 for Relu2 {
    fn name(&self) -> &'static str {
        "fused-relu2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = op_slice(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        let b = block_len(1);
        out.par_chunks_mut(b)
            .zip(x.par_chunks(b))
            .for_each(|(o, x)| {
                for (o, &v) in o.iter_mut().zip(x) {
                    let r = relu(v);
                    *o = r * r;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        let dx = {
            let (sx, lx) = x.storage_and_layout();
            let (sd, ld) = dy.storage_and_layout();
            let xs = cpu_slice(&sx, lx, self.name())?;
            let ds = cpu_slice(&sd, ld, self.name())?;
            let mut dx = vec![0f32; xs.len()];
            let b = block_len(1);
            dx.par_chunks_mut(b)
                .zip(xs.par_chunks(b))
                .zip(ds.par_chunks(b))
                .for_each(|((o, x), d)| {
                    for ((o, &v), &d) in o.iter_mut().zip(x).zip(d) {
                        *o = ((relu(v) * d) * 2.0 + 0.0) * mask(v);
                    }
                });
            dx
        };
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `relu(g)² · u`.
struct GatedRelu2;

impl CustomOp2 for GatedRelu2 {
    fn name(&self) -> &'static str {
        "fused-gated-relu2"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = op_slice(s1, l1, self.name())?;
        let u = op_slice(s2, l2, self.name())?;
        if g.len() != u.len() {
            candle_core::bail!(
                "fused-gated-relu2: gate of {} and up of {}",
                g.len(),
                u.len()
            );
        }
        let mut out = vec![0f32; g.len()];
        let b = block_len(1);
        out.par_chunks_mut(b)
            .zip(g.par_chunks(b))
            .zip(u.par_chunks(b))
            .for_each(|((o, g), u)| {
                for ((o, &gv), &uv) in o.iter_mut().zip(g).zip(u) {
                    let r = relu(gv);
                    *o = (r * r) * uv;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (dg, du) = {
            let (sg, lg) = g.storage_and_layout();
            let (su, lu) = u.storage_and_layout();
            let (sd, ld) = dy.storage_and_layout();
            let gs = cpu_slice(&sg, lg, self.name())?;
            let us = cpu_slice(&su, lu, self.name())?;
            let ds = cpu_slice(&sd, ld, self.name())?;
            let n = gs.len();
            if us.len() != n || ds.len() != n {
                candle_core::bail!("fused-gated-relu2: operands of different sizes");
            }
            let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
            let b = block_len(1);
            dg.par_chunks_mut(b)
                .zip(du.par_chunks_mut(b))
                .zip(gs.par_chunks(b).zip(us.par_chunks(b)).zip(ds.par_chunks(b)))
                .for_each(|((dg, du), ((g, u), d))| {
                    let it = dg.iter_mut().zip(du.iter_mut()).zip(g).zip(u).zip(d);
                    for ((((og, ou), &gv), &uv), &dv) in it {
                        let r = relu(gv);
                        *og = ((r * (dv * uv)) * 2.0 + 0.0) * mask(gv);
                        *ou = dv * (r * r);
                    }
                });
            (dg, du)
        };
        Ok((
            Some(Tensor::from_vec(dg, g.shape(), g.device())?),
            Some(Tensor::from_vec(du, u.shape(), u.device())?),
        ))
    }
}

/// `x.relu()?.sqr()?` in one pass (`x` must satisfy [`super::applies`]).
pub fn relu2(x: &Tensor) -> Result<Tensor> {
    check(x, "relu2")?;
    Ok(x.apply_op1(Relu2)?)
}

/// `(g.relu()?.sqr()? * u)?` in one pass (`g` and `u` of one shape, both satisfying
/// [`super::applies`]).
pub fn gated_relu2(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    check(g, "gated_relu2")?;
    check(u, "gated_relu2")?;
    if g.dims() != u.dims() {
        return Err(Error::Invalid(format!(
            "fused gated_relu2: gate {:?} and up {:?} differ",
            g.dims(),
            u.dims()
        )));
    }
    Ok(g.apply_op2(u, GatedRelu2)?)
}

/// `relu(x)²`: [`relu2`] when [`super::applies`] accepts `x`, the composed candle ops (the
/// specification; CUDA, bf16, strided) otherwise.
pub fn relu2_or_composed(x: &Tensor) -> Result<Tensor> {
    match super::applies(x) {
        true => relu2(x),
        false => Ok(x.relu()?.sqr()?),
    }
}

/// `relu(g)² · u`: [`gated_relu2`] when [`super::applies`] accepts both, the composed candle ops
/// otherwise.
pub fn gated_relu2_or_composed(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    match super::applies(g) && super::applies(u) && g.dims() == u.dims() {
        true => gated_relu2(g, u),
        false => Ok((g.relu()?.sqr()? * u)?),
    }
}
