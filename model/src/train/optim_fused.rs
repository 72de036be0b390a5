//! AdamW's update as one pass per parameter on the CPU: the weights and both moments are
//! rewritten in place (candle in-place ops, nested so that all three are held at once), in
//! chunks on rayon, with no tensor allocated per step.
//!
//! Must match `AdamW::step`'s composed candle ops bit for bit: every scalar is rounded to f32 as
//! candle's `affine` rounds it, and each element is computed in the same order of f32
//! operations (`affine` is `x · mul + add`, so the `+ 0.0` and `· 1.0` below are kept: they
//! turn −0 into +0 as the composed ops do). Rust never contracts `a · b + c` into an FMA, so the
//! vectorised loop rounds as the scalar one. Tested against the composed update.

use std::cell::RefCell;

use candle_core::{bail, CpuStorage, DType, InplaceOp1, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

/// The scalars of one update, rounded to f32 as the composed ops round them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Coeffs {
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `1 − lr · wd` when this parameter is decayed at this step.
    pub decay: Option<f32>,
    /// `1 / sqrt(1 − β2^t)`.
    pub inv_sqrt_bc2: f32,
    pub eps: f32,
    /// `lr / (1 − β1^t)`.
    pub step: f32,
}

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// Update `p`, `m`, `v` in place from gradient `g`; `Ok(false)` (nothing done) unless all four
/// are distinct, contiguous f32 CPU tensors of one size, which the caller then updates with
/// the composed ops.
pub(crate) fn update(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, k: &Coeffs) -> Result<bool> {
    let n = p.elem_count();
    let all = [p, m, v, g];
    if n == 0
        || all
            .iter()
            .any(|t| t.elem_count() != n || !t.is_contiguous())
    {
        return Ok(false);
    }
    let mut ptrs = Vec::with_capacity(4);
    for t in all {
        match cpu_f32_ptr(t) {
            Some(a) if !ptrs.contains(&a) => ptrs.push(a),
            // Not CPU f32, or two of them share storage (fresh moments were one zero tensor):
            // nested write locks on one storage would deadlock.
            _ => return Ok(false),
        }
    }
    with_mut(p, |ps| {
        with_mut(m, |ms| {
            with_mut(v, |vs| {
                let (gs, gl) = g.storage_and_layout();
                let gs = match (&*gs, gl.contiguous_offsets()) {
                    (Storage::Cpu(CpuStorage::F32(x)), Some((a, b))) => &x[a..b],
                    _ => bail!("adamw: the gradient is not contiguous f32"),
                };
                let arch = pulp::Arch::new();
                ps.par_chunks_mut(CHUNK)
                    .zip(ms.par_chunks_mut(CHUNK))
                    .zip(vs.par_chunks_mut(CHUNK))
                    .zip(gs.par_chunks(CHUNK))
                    .for_each(|(((p, m), v), g)| arch.dispatch(|| chunk(p, m, v, g, k)));
                Ok(())
            })
        })
    })?;
    Ok(true)
}

/// The update of one chunk (see the module header for why each operation is as it is).
#[inline(always)]
fn chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: &Coeffs) {
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        let m1 = (*m * k.beta1 + 0.0) + (g * k.one_minus_beta1 + 0.0);
        let v1 = (*v * k.beta2 + 0.0) + ((g * g) * k.one_minus_beta2 + 0.0);
        let p1 = match k.decay {
            Some(d) => *p * d + 0.0,
            None => *p,
        };
        let denom = (v1.sqrt() * k.inv_sqrt_bc2 + 0.0) * 1.0 + k.eps;
        let upd = (m1 / denom) * k.step + 0.0;
        *p = p1 - upd;
        *m = m1;
        *v = v1;
    }
}

/// The address of a CPU f32 tensor's storage (equal addresses: shared storage).
fn cpu_f32_ptr(t: &Tensor) -> Option<usize> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let (s, _) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(CpuStorage::F32(x)) => Some(x.as_ptr() as usize),
        _ => None,
    }
}

/// Run `f` on the contiguous f32 elements of `t`, mutably (an in-place op holding `t`'s write
/// lock while `f` runs).
fn with_mut<F: FnOnce(&mut [f32]) -> Result<()>>(t: &Tensor, f: F) -> Result<()> {
    t.inplace_op1(&WithMut(RefCell::new(Some(f))))
}

/// The in-place op of [`with_mut`]: the closure, taken once.
struct WithMut<F>(RefCell<Option<F>>);

impl<F: FnOnce(&mut [f32]) -> Result<()>> InplaceOp1 for WithMut<F> {
    fn name(&self) -> &'static str {
        "adamw-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let (CpuStorage::F32(x), Some((a, b))) = (s, l.contiguous_offsets()) else {
            bail!("adamw: a parameter or moment is not contiguous f32");
        };
        match self.0.borrow_mut().take() {
            Some(f) => f(&mut x[a..b]),
            None => bail!("adamw: the in-place update ran twice"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::optim::{default_decay, AdamW, AdamWParams};
    use crate::weights::Params;
    use candle_core::{Device, Tensor};
    use std::collections::BTreeMap;

    fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                match i % 97 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => (h as f32 / 16_777_216.0 - 0.5) * scale,
                }
            })
            .collect()
    }

    fn params() -> Params {
        let mut p = Params::new();
        for (name, n) in [("layers.0.w", 40_000), ("norm.weight", 33), ("odd", 1)] {
            p.insert(
                name,
                Tensor::from_vec(values(n, n as u32, 2.0), n, &Device::Cpu).unwrap(),
            )
            .unwrap();
        }
        p
    }

    fn bits(p: &Params) -> Vec<u32> {
        p.iter()
            .flat_map(|(_, v)| v.as_tensor().to_vec1::<f32>().unwrap())
            .map(f32::to_bits)
            .collect()
    }

    /// Fused and composed runs from the same start stay bit-identical over steps with weight
    /// decay on and off (decayed and undecayed parameters), gradients with ±0 and tiny values.
    #[test]
    fn fused_update_is_bit_identical_to_the_composed_ops() {
        let hp = AdamWParams {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let (pa, pb) = (params(), params());
        let mut a = AdamW::new(&pa, hp, default_decay).unwrap();
        let mut b = AdamW::new(&pb, hp, default_decay).unwrap();
        for step in 0..5u32 {
            let grads: BTreeMap<String, Tensor> = pa
                .iter()
                .map(|(name, v)| {
                    let n = v.as_tensor().elem_count();
                    let scale = if step == 3 { 1e-30 } else { 0.1 };
                    let g = values(n, 1000 + step + n as u32, scale);
                    (name.clone(), Tensor::from_vec(g, n, &Device::Cpu).unwrap())
                })
                .collect();
            let (lr, decay_on) = (1e-3 * f64::from(step + 1), step != 2);
            a.step_with(&pa, &grads, lr, decay_on, true).unwrap();
            b.step_with(&pb, &grads, lr, decay_on, false).unwrap();
            assert_eq!(bits(&pa), bits(&pb), "weights after step {step}");
            for (name, ma) in a.moments() {
                let mb = &b.moments()[name];
                for (x, y) in [(&ma.m, &mb.m), (&ma.v, &mb.v)] {
                    let (x, y): (Vec<f32>, Vec<f32>) = (x.to_vec1().unwrap(), y.to_vec1().unwrap());
                    let same = x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "moments of {name} after step {step}");
                }
            }
        }
        assert_ne!(bits(&pa), bits(&params()), "the weights moved");
    }

    /// Moments that share one storage (as a caller might build them) take the composed path
    /// instead of deadlocking on nested write locks.
    #[test]
    fn shared_storage_falls_back_to_the_composed_ops() {
        let p = Tensor::from_vec(values(64, 1, 1.0), 64, &Device::Cpu).unwrap();
        let z = Tensor::zeros(64, candle_core::DType::F32, &Device::Cpu).unwrap();
        let g = Tensor::from_vec(values(64, 2, 1.0), 64, &Device::Cpu).unwrap();
        let k = super::Coeffs {
            beta1: 0.9,
            one_minus_beta1: 0.1,
            beta2: 0.95,
            one_minus_beta2: 0.05,
            decay: None,
            inv_sqrt_bc2: 1.0,
            eps: 1e-8,
            step: 1e-3,
        };
        assert!(!super::update(&p, &z, &z, &g, &k).unwrap());
        let m = z.zeros_like().unwrap();
        assert!(super::update(&p, &m, &z, &g, &k).unwrap());
    }
}
