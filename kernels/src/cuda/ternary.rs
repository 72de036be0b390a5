//! Launches of `kernels/cuda/ternary.cu`: ternary BitLinear on the GPU. G2-packed weights,
//! int8 activation buffers, the quantiser (`rms_act_quant_i8`, with or without a norm) and the
//! W2A8 GEMV/GEMM (shared-memory or register GEMV, dp4a or tensor-core GEMM, per
//! [`Tuning`](super::Tuning)).
//! Must equal [`crate::quantize_row_i8_scalar`] and [`crate::ternary_matmul`] bit for bit.

use super::{bad, blocks, cfg, check, cu, int, launch, load, load_module, Gpu};
use crate::gpu_ref::{g2_k_pad, G2Matrix};
use crate::KernelError;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice};
use std::sync::Arc;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ternary.ptx"));

/// The kernels of `ternary.cu`.
pub(super) struct TernaryKernels {
    gemv: CudaFunction,
    /// `ternary_gemv_regs{1,2,4,8}`.
    gemv_regs: [CudaFunction; 4],
    gemm: CudaFunction,
    gemm_mma: CudaFunction,
    rms_act_quant: CudaFunction,
}

impl TernaryKernels {
    pub(super) fn load(ctx: &Arc<CudaContext>) -> Result<Self, KernelError> {
        let t = load_module(ctx, PTX)?;
        Ok(Self {
            gemv: load(&t, "ternary_gemv")?,
            gemv_regs: [
                load(&t, "ternary_gemv_regs1")?,
                load(&t, "ternary_gemv_regs2")?,
                load(&t, "ternary_gemv_regs4")?,
                load(&t, "ternary_gemv_regs8")?,
            ],
            gemm: load(&t, "ternary_gemm")?,
            gemm_mma: load(&t, "ternary_gemm_mma")?,
            rms_act_quant: load(&t, "rms_act_quant_i8")?,
        })
    }
}

/// Ternary weights on the GPU (G2 layout, one scale per row).
pub struct DevTernary {
    pub n: usize,
    pub k: usize,
    pub k_pad: usize,
    words: CudaSlice<u32>,
    scales: CudaSlice<f32>,
}

impl DevTernary {
    /// Device bytes of the packed weights.
    pub fn bytes(&self) -> usize {
        self.words.len() * 4 + self.scales.len() * 4
    }
}

/// Host copy of quantised activations: codes (`k_pad` per token), scales, sums.
pub type ActHost = (Vec<i8>, Vec<f32>, Vec<i32>);

/// int8 activations of up to `max_m` tokens of `k` features (padded to `k_pad`).
pub struct ActBuf {
    pub k: usize,
    pub k_pad: usize,
    pub max_m: usize,
    q: CudaSlice<i8>,
    scale: CudaSlice<f32>,
    sum: CudaSlice<i32>,
}

impl ActBuf {
    /// Copies the int8 codes, scales and sums of the first `m` tokens to the host.
    pub fn read(&self, gpu: &Gpu, m: usize) -> Result<ActHost, KernelError> {
        let q = gpu.download(&self.q)?;
        let s = gpu.download(&self.scale)?;
        let u = gpu.download(&self.sum)?;
        Ok((
            q[..m * self.k_pad].to_vec(),
            s[..m].to_vec(),
            u[..m].to_vec(),
        ))
    }
}

impl Gpu {
    /// Uploads a stacked ternary matrix.
    pub fn upload_ternary(&self, m: &G2Matrix) -> Result<DevTernary, KernelError> {
        Ok(DevTernary {
            n: m.n,
            k: m.k,
            k_pad: m.k_pad,
            words: self.upload(&m.words)?,
            scales: self.upload(&m.scales)?,
        })
    }

    /// Activation buffers for up to `max_m` tokens of `k` features.
    pub fn act_buf(&self, k: usize, max_m: usize) -> Result<ActBuf, KernelError> {
        let k_pad = g2_k_pad(k);
        Ok(ActBuf {
            k,
            k_pad,
            max_m,
            q: self.zeros(max_m * k_pad)?,
            scale: self.zeros(max_m)?,
            sum: self.zeros(max_m)?,
        })
    }

    /// RMSNorm (weights `norm`, or none) fused into the quantiser: quantises `norm(x)` for `m`
    /// rows of `x` into `act`, identical to [`Gpu::rmsnorm`] followed by [`Gpu::act_quant`].
    pub fn rms_act_quant(
        &self,
        x: &CudaSlice<f32>,
        m: usize,
        norm: Option<&CudaSlice<f32>>,
        eps: f32,
        act: &ActBuf,
    ) -> Result<(), KernelError> {
        self.quant_rows(x, 0, m, norm, eps, act)
    }

    /// Quantises `m` rows of `k` floats of `x` (from element `off`) into `act` (the fused
    /// kernel without a norm: the same expressions as `quantize_row_i8_scalar`).
    pub fn act_quant(
        &self,
        x: &CudaSlice<f32>,
        off: usize,
        m: usize,
        act: &ActBuf,
    ) -> Result<(), KernelError> {
        self.quant_rows(x, off, m, None, 0.0, act)
    }

    fn quant_rows(
        &self,
        x: &CudaSlice<f32>,
        off: usize,
        m: usize,
        norm: Option<&CudaSlice<f32>>,
        eps: f32,
        act: &ActBuf,
    ) -> Result<(), KernelError> {
        if m > act.max_m {
            return Err(bad("act_quant tokens", m, act.max_m));
        }
        check("act_quant input", x, off + m * act.k)?;
        if let Some(w) = norm {
            check("act_quant norm weight", w, act.k)?;
        }
        if m == 0 {
            return Ok(());
        }
        let (xp, qp, sp, up) = (
            self.ptr(x, off),
            self.ptr(&act.q, 0),
            self.ptr(&act.scale, 0),
            self.ptr(&act.sum, 0),
        );
        let wp: u64 = norm.map_or(0, |w| self.ptr(w, 0));
        let (k, kp) = (int(act.k, "k")?, int(act.k_pad, "k_pad")?);
        // SAFETY: x holds m·k floats from `off`, the norm k (checked), act max_m ≥ m padded
        // rows; a zero weight pointer is the kernel's "no norm".
        unsafe {
            launch!(self, &self.k.ternary.rms_act_quant, cfg((int(m, "m")? as u32, 1, 1), 256, 0);
                xp, wp, eps, k, kp, qp, sp, up)
        }?;
        Ok(())
    }

    /// `out[off + t·n + row] = acc / (x_scale[t] · w_scale[row])` for the `m` quantised tokens
    /// in `act` (GEMV for one token, tiled GEMM otherwise).
    pub fn ternary(
        &self,
        w: &DevTernary,
        act: &ActBuf,
        m: usize,
        out: &CudaSlice<f32>,
        off: usize,
    ) -> Result<(), KernelError> {
        self.ternary_out(w, act, m, out, off, false)
    }

    /// [`Gpu::ternary`] with the result added to `out` instead (`out += W·x`, the residual add
    /// fused into the epilogue: the same values as [`Gpu::ternary`] into a scratch buffer
    /// followed by [`Gpu::add`]).
    pub fn ternary_add(
        &self,
        w: &DevTernary,
        act: &ActBuf,
        m: usize,
        out: &CudaSlice<f32>,
        off: usize,
    ) -> Result<(), KernelError> {
        self.ternary_out(w, act, m, out, off, true)
    }

    fn ternary_out(
        &self,
        w: &DevTernary,
        act: &ActBuf,
        m: usize,
        out: &CudaSlice<f32>,
        off: usize,
        accum: bool,
    ) -> Result<(), KernelError> {
        if w.k_pad != act.k_pad || w.k != act.k {
            return Err(KernelError::Cuda(format!(
                "ternary: weights have {} columns, activations {}",
                w.k, act.k
            )));
        }
        if m > act.max_m {
            return Err(bad("ternary tokens", m, act.max_m));
        }
        check("ternary output", out, off + m * w.n)?;
        if m == 0 {
            return Ok(());
        }
        let (wp, sp, qp, xsp, xup, op) = (
            self.ptr(&w.words, 0),
            self.ptr(&w.scales, 0),
            self.ptr(&act.q, 0),
            self.ptr(&act.scale, 0),
            self.ptr(&act.sum, 0),
            self.ptr(out, off),
        );
        let (n, kw) = (int(w.n, "n")?, int(w.k_pad / 16, "kw")?);
        let acc = i32::from(accum);
        let kt = &self.k.ternary;
        // Register GEMV variant: uint4 (64 columns) per lane and row, rounded up to 1, 2, 4, 8.
        let per_lane = (w.k_pad / 64).div_ceil(32).next_power_of_two();
        if m == 1 && self.tuning.gemv_regs && per_lane <= 8 {
            let f = &kt.gemv_regs[per_lane.trailing_zeros() as usize];
            // 4 warps per block, 2 rows per warp (GR_WARPS, GR_ROWS in ternary.cu).
            // SAFETY: weights n·kw words, activations one k_pad row (k_pad ≤ 64·32·per_lane),
            // output n floats (checked); rows past n are neither read nor written.
            unsafe {
                launch!(self, f, cfg((blocks(w.n, 8)?, 1, 1), 128, 0);
                    wp, sp, n, kw, qp, xsp, xup, op, acc)
            }?;
        } else if m == 1 {
            let smem = u32::try_from(w.k_pad).map_err(cu)?;
            if smem > 48 * 1024 {
                return Err(KernelError::Cuda(format!(
                    "ternary GEMV: {} columns exceed the 48 KiB of shared memory",
                    w.k
                )));
            }
            // SAFETY: weights n·kw words, activations one k_pad row, output n floats (checked).
            unsafe {
                launch!(self, &kt.gemv, cfg((blocks(w.n, 8)?, 1, 1), 256, smem);
                    wp, sp, n, kw, qp, xsp, xup, op, acc)
            }?;
        } else if self.tuning.gemm_mma {
            let mi = int(m, "m")?;
            // SAFETY: weights n·kw words, m rows of k_pad activations, m·n outputs (checked);
            // tiles past n rows or m tokens are zero-filled and not written.
            unsafe {
                launch!(self, &kt.gemm_mma, cfg((blocks(w.n, 64)?, blocks(m, 64)?, 1), 128, 0);
                    wp, sp, n, kw, qp, xsp, xup, mi, op, acc)
            }?;
        } else {
            let mi = int(m, "m")?;
            // SAFETY: as above with m rows of activations and m·n outputs (checked).
            unsafe {
                launch!(self, &kt.gemm, cfg((blocks(w.n, 64)?, blocks(m, 32)?, 1), 128, 0);
                    wp, sp, n, kw, qp, xsp, xup, mi, op, acc)
            }?;
        }
        Ok(())
    }

    /// A BitLinear on `m` rows of `x`: quantise into `act`, then [`Gpu::ternary`].
    #[allow(clippy::too_many_arguments)]
    pub fn bitlinear(
        &self,
        w: &DevTernary,
        x: &CudaSlice<f32>,
        x_off: usize,
        m: usize,
        act: &ActBuf,
        out: &CudaSlice<f32>,
        off: usize,
    ) -> Result<(), KernelError> {
        self.act_quant(x, x_off, m, act)?;
        self.ternary(w, act, m, out, off)
    }
}
