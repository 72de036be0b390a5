//! Launches of `kernels/cuda/ops.cu`: the small f32 kernels (RMSNorm, RoPE, the q|k|v split,
//! column copies, residual add, activations) and the LM heads. Each matches the slice code of
//! the model's CPU inference path up to float summation order.

use super::{blocks, cfg, check, cu, int, launch, load, load_module, Gpu};
use crate::KernelError;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice};
use half::f16;
use std::sync::Arc;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ops.ptx"));

/// The kernels of `ops.cu`.
pub(super) struct OpsKernels {
    rmsnorm: CudaFunction,
    rope: CudaFunction,
    add: CudaFunction,
    gated: CudaFunction,
    act: CudaFunction,
    head_f16: CudaFunction,
    head_f32: CudaFunction,
    copy_cols: CudaFunction,
    qkv_rope_split: CudaFunction,
}

impl OpsKernels {
    pub(super) fn load(ctx: &Arc<CudaContext>) -> Result<Self, KernelError> {
        let o = load_module(ctx, PTX)?;
        Ok(Self {
            rmsnorm: load(&o, "rmsnorm")?,
            rope: load(&o, "rope")?,
            add: load(&o, "add_inplace")?,
            gated: load(&o, "gated_act")?,
            act: load(&o, "act_inplace")?,
            head_f16: load(&o, "head_gemv_f16")?,
            head_f32: load(&o, "head_gemv_f32")?,
            copy_cols: load(&o, "copy_cols")?,
            qkv_rope_split: load(&o, "qkv_rope_split")?,
        })
    }
}

/// An LM head on the GPU: `[V][C]` in f16 or f32.
pub enum DevHead {
    F16 {
        w: CudaSlice<f16>,
        v: usize,
        c: usize,
    },
    F32 {
        w: CudaSlice<f32>,
        v: usize,
        c: usize,
    },
}

impl DevHead {
    pub fn bytes(&self) -> usize {
        match self {
            DevHead::F16 { w, .. } => w.len() * 2,
            DevHead::F32 { w, .. } => w.len() * 4,
        }
    }
}

impl Gpu {
    /// Splits stacked `qkv` rows `[t][(heads + 2·kv_heads)·d]` into rotated `q` `[t][heads][d]`,
    /// rotated `k` `[t][kv_heads][d]` (positions `*base + i`) and `v`: the same values as
    /// [`Gpu::copy_cols`] ×3 + [`Gpu::rope`] ×2, in one launch.
    #[allow(clippy::too_many_arguments)]
    pub fn qkv_rope_split(
        &self,
        qkv: &CudaSlice<f32>,
        t: usize,
        heads: usize,
        kv_heads: usize,
        d: usize,
        theta: f32,
        base: &CudaSlice<i32>,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
    ) -> Result<(), KernelError> {
        check("qkv_rope_split input", qkv, t * (heads + 2 * kv_heads) * d)?;
        check("qkv_rope_split q", q, t * heads * d)?;
        check("qkv_rope_split k", k, t * kv_heads * d)?;
        check("qkv_rope_split v", v, t * kv_heads * d)?;
        let n = t * ((heads + kv_heads) * (d / 2) + kv_heads * d);
        if n == 0 {
            return Ok(());
        }
        let (sp, bp, qp, kp, vp) = (
            self.ptr(qkv, 0),
            self.ptr(base, 0),
            self.ptr(q, 0),
            self.ptr(k, 0),
            self.ptr(v, 0),
        );
        let (ti, hi, hk, di) = (
            int(t, "t")?,
            int(heads, "heads")?,
            int(kv_heads, "kv_heads")?,
            int(d, "d")?,
        );
        // SAFETY: bounds checked above; base holds one int.
        unsafe {
            launch!(self, &self.k.ops.qkv_rope_split, cfg((blocks(n, 256)?, 1, 1), 256, 0);
                sp, ti, hi, hk, di, theta, bp, qp, kp, vp)
        }?;
        Ok(())
    }

    /// RMSNorm of `rows` rows of `dim` (x and y may be the same buffer).
    pub fn rmsnorm(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        dim: usize,
        w: &CudaSlice<f32>,
        eps: f32,
        y: &CudaSlice<f32>,
    ) -> Result<(), KernelError> {
        check("rmsnorm input", x, rows * dim)?;
        check("rmsnorm output", y, rows * dim)?;
        check("rmsnorm weight", w, dim)?;
        if rows == 0 {
            return Ok(());
        }
        let (xp, wp, yp, d) = (
            self.ptr(x, 0),
            self.ptr(w, 0),
            self.ptr(y, 0),
            int(dim, "dim")?,
        );
        // SAFETY: bounds checked above.
        unsafe {
            launch!(self, &self.k.ops.rmsnorm, cfg((int(rows, "rows")? as u32, 1, 1), 256, 0);
                xp, wp, d, eps, yp)
        }?;
        Ok(())
    }

    /// Rotate-half RoPE of `x` `[t][heads][d]` at positions `*base + t`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        x: &CudaSlice<f32>,
        t: usize,
        heads: usize,
        d: usize,
        theta: f32,
        base: &CudaSlice<i32>,
    ) -> Result<(), KernelError> {
        check("rope input", x, t * heads * d)?;
        let n = t * heads * (d / 2);
        if n == 0 {
            return Ok(());
        }
        let (xp, bp) = (self.ptr(x, 0), self.ptr(base, 0));
        let (ti, hi, di) = (int(t, "t")?, int(heads, "heads")?, int(d, "d")?);
        // SAFETY: bounds checked above; base holds one int.
        unsafe {
            launch!(self, &self.k.ops.rope, cfg((blocks(n, 256)?, 1, 1), 256, 0);
                xp, ti, hi, di, theta, bp)
        }?;
        Ok(())
    }

    /// `dst[t][c] = src[t·stride + col0 + c]` for `t < rows`, `c < ncols`.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_cols(
        &self,
        src: &CudaSlice<f32>,
        stride: usize,
        col0: usize,
        ncols: usize,
        rows: usize,
        dst: &CudaSlice<f32>,
    ) -> Result<(), KernelError> {
        if rows == 0 || ncols == 0 {
            return Ok(());
        }
        if col0 + ncols > stride {
            return Err(KernelError::Cuda(format!(
                "copy_cols: columns {col0}+{ncols} exceed the row of {stride}"
            )));
        }
        check("copy_cols src", src, rows * stride)?;
        check("copy_cols dst", dst, rows * ncols)?;
        let (sp, dp) = (self.ptr(src, 0), self.ptr(dst, 0));
        let (st, c0, nc, r) = (
            int(stride, "stride")?,
            int(col0, "col0")?,
            int(ncols, "ncols")?,
            int(rows, "rows")?,
        );
        // SAFETY: bounds checked above.
        unsafe {
            launch!(self, &self.k.ops.copy_cols, cfg((blocks(rows * ncols, 256)?, 1, 1), 256, 0);
                sp, st, c0, nc, r, dp)
        }?;
        Ok(())
    }

    /// `x[..n] += y[..n]`.
    pub fn add(&self, x: &CudaSlice<f32>, y: &CudaSlice<f32>, n: usize) -> Result<(), KernelError> {
        check("add x", x, n)?;
        check("add y", y, n)?;
        if n == 0 {
            return Ok(());
        }
        let (xp, yp, ni) = (self.ptr(x, 0), self.ptr(y, 0), int(n, "n")?);
        // SAFETY: bounds checked above.
        unsafe {
            launch!(self, &self.k.ops.add, cfg((blocks(n, 256)?, 1, 1), 256, 0); xp, yp, ni)
        }?;
        Ok(())
    }

    /// Gated MLP activation: `h[t][i] = up · act(gate)` from `gu` `[t][2f]` = (gate | up).
    /// `kind`: 0 relu², 1 silu.
    pub fn gated_act(
        &self,
        gu: &CudaSlice<f32>,
        t: usize,
        f: usize,
        kind: i32,
        h: &CudaSlice<f32>,
    ) -> Result<(), KernelError> {
        check("gated input", gu, t * 2 * f)?;
        check("gated output", h, t * f)?;
        if t * f == 0 {
            return Ok(());
        }
        let (gp, hp, ti, fi) = (self.ptr(gu, 0), self.ptr(h, 0), int(t, "t")?, int(f, "f")?);
        // SAFETY: bounds checked above.
        unsafe {
            launch!(self, &self.k.ops.gated, cfg((blocks(t * f, 256)?, 1, 1), 256, 0);
                gp, ti, fi, kind, hp)
        }?;
        Ok(())
    }

    /// `x = act(x)` on `n` elements (`kind` as in [`Gpu::gated_act`]).
    pub fn act_inplace(&self, x: &CudaSlice<f32>, n: usize, kind: i32) -> Result<(), KernelError> {
        check("act", x, n)?;
        if n == 0 {
            return Ok(());
        }
        let (xp, ni) = (self.ptr(x, 0), int(n, "n")?);
        // SAFETY: bounds checked above.
        unsafe {
            launch!(self, &self.k.ops.act, cfg((blocks(n, 256)?, 1, 1), 256, 0); xp, ni, kind)
        }?;
        Ok(())
    }

    /// Uploads an LM head (`w` `[v][c]` f32) in f16 or f32.
    pub fn upload_head(
        &self,
        w: &[f32],
        v: usize,
        c: usize,
        f16_weights: bool,
    ) -> Result<DevHead, KernelError> {
        if w.len() != v * c || !c.is_multiple_of(8) {
            return Err(KernelError::Cuda(format!(
                "LM head: {} values for [{v}][{c}] (needs c % 8 == 0)",
                w.len()
            )));
        }
        Ok(if f16_weights {
            let h: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
            DevHead::F16 {
                w: self.upload(&h)?,
                v,
                c,
            }
        } else {
            DevHead::F32 {
                w: self.upload(w)?,
                v,
                c,
            }
        })
    }

    /// Logits of one hidden row `x[x_off..x_off + c]` into `out[off..off + v]`.
    pub fn head(
        &self,
        h: &DevHead,
        x: &CudaSlice<f32>,
        x_off: usize,
        out: &CudaSlice<f32>,
        off: usize,
    ) -> Result<(), KernelError> {
        let (func, wp, v, c) = match h {
            DevHead::F16 { w, v, c } => (&self.k.ops.head_f16, self.ptr(w, 0), *v, *c),
            DevHead::F32 { w, v, c } => (&self.k.ops.head_f32, self.ptr(w, 0), *v, *c),
        };
        check("head input", x, x_off + c)?;
        check("head output", out, off + v)?;
        let (xp, op, vi, ci) = (
            self.ptr(x, x_off),
            self.ptr(out, off),
            int(v, "v")?,
            int(c, "c")?,
        );
        let smem = u32::try_from(c * 4).map_err(cu)?;
        if smem > 48 * 1024 {
            return Err(KernelError::Cuda(format!(
                "LM head: hidden size {c} too large"
            )));
        }
        // SAFETY: weights v·c, input c, output v (checked).
        unsafe { launch!(self, func, cfg((blocks(v, 8)?, 1, 1), 256, smem); wp, xp, vi, ci, op) }?;
        Ok(())
    }
}
