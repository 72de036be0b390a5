//! Launches of Tritter's CUDA kernels (feature `cuda`): the PTX that `build.rs` compiles from
//! `kernels/cuda/*.cu` is loaded through cudarc's driver API on one stream. Each kernel has a
//! host statement it must match (tests: `kernels/tests/cuda.rs`):
//! - `act_quant_i8` → [`crate::quantize_row_i8_scalar`] (bit-exact codes, scales, sums);
//! - `ternary_gemv`/`ternary_gemm` → [`crate::ternary_matmul`] (bit-exact f32 outputs);
//! - `kv_store` (INT4) → [`crate::gpu_ref::quant_group_i4`] (bit-exact codes and scales);
//! - `attn_partial_*` + `attn_combine` → [`crate::gpu_ref::attention_ref`] (f32 tolerance);
//! - `rmsnorm`, `rope`, heads → the slice code of the model's inference path (f32 tolerance).
//!
//! Device buffers are `CudaSlice`s; kernels write through shared references (device memory is
//! not Rust memory, and every launch is ordered on the one stream). Lengths are checked before
//! each launch so a kernel never reads or writes out of bounds.

use crate::gpu_ref::{g2_k_pad, int4_group, G2Matrix};
use crate::KernelError;
use cudarc::driver::sys::CUevent_flags;
pub use cudarc::driver::CudaSlice;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use half::f16;
use std::sync::Arc;

const PTX_TERNARY: &str = include_str!(concat!(env!("OUT_DIR"), "/ternary.ptx"));
const PTX_ATTENTION: &str = include_str!(concat!(env!("OUT_DIR"), "/attention.ptx"));
const PTX_OPS: &str = include_str!(concat!(env!("OUT_DIR"), "/ops.ptx"));

/// Slots per attention block (`SPLIT` in attention.cu).
const SPLIT: usize = 256;
/// Largest head dimension the attention kernel takes (its shared arrays).
pub const MAX_HEAD_DIM: usize = 256;

fn cu(e: impl std::fmt::Display) -> KernelError {
    KernelError::Cuda(e.to_string())
}

fn bad(what: &str, need: usize, have: usize) -> KernelError {
    KernelError::Cuda(format!("{what}: needs {need} elements, buffer has {have}"))
}

fn check<T>(what: &str, s: &CudaSlice<T>, need: usize) -> Result<(), KernelError> {
    if s.len() < need {
        Err(bad(what, need, s.len()))
    } else {
        Ok(())
    }
}

fn int(v: usize, what: &str) -> Result<i32, KernelError> {
    i32::try_from(v).map_err(|_| KernelError::Cuda(format!("{what} = {v} exceeds i32")))
}

struct Kernels {
    act_quant: CudaFunction,
    gemv: CudaFunction,
    gemm: CudaFunction,
    kv_store: CudaFunction,
    kv_dequant: CudaFunction,
    attn: [CudaFunction; 3],
    combine: CudaFunction,
    rmsnorm: CudaFunction,
    rope: CudaFunction,
    add: CudaFunction,
    gated: CudaFunction,
    act: CudaFunction,
    head_f16: CudaFunction,
    head_f32: CudaFunction,
    copy_cols: CudaFunction,
    rms_act_quant: CudaFunction,
    qkv_rope_split: CudaFunction,
}

fn load(m: &Arc<CudaModule>, name: &str) -> Result<CudaFunction, KernelError> {
    m.load_function(name)
        .map_err(|e| KernelError::Cuda(format!("kernel {name}: {e}")))
}

/// One GPU, its stream and the loaded kernels.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    k: Kernels,
    ordinal: usize,
}

/// Storage of the GPU KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuKvKind {
    F32 = 0,
    F16 = 1,
    Int4 = 2,
}

impl GpuKvKind {
    /// Bytes per token per KV head for keys plus values with head dimension `d`.
    pub fn bytes_per_head(self, d: usize) -> usize {
        match self {
            GpuKvKind::F32 => 2 * 4 * d,
            GpuKvKind::F16 => 2 * 2 * d,
            GpuKvKind::Int4 => 2 * (d / 2 + 4 * (d / int4_group(d).unwrap_or(d))),
        }
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

/// Host copy of a KV cache: keys, values (f32, `[cap][kv_heads][d]`) and slot positions.
pub type KvHost = (Vec<f32>, Vec<f32>, Vec<i32>);

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

/// One layer's KV cache on the GPU (see `attention.cu` for slots, window and sinks).
pub struct DevKv {
    pub kind: GpuKvKind,
    pub cap: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub group: usize,
    pub window: usize,
    pub sinks: usize,
    /// RoPE base for the StreamingLLM shift of sink keys (0: no shift).
    pub theta: f32,
    kd: CudaSlice<u8>,
    ks: CudaSlice<u32>,
    vd: CudaSlice<u8>,
    vs: CudaSlice<u32>,
    pos: CudaSlice<i32>,
}

impl DevKv {
    /// Device bytes of keys, values, scales and positions.
    pub fn bytes(&self) -> usize {
        self.kd.len() + self.vd.len() + 4 * (self.ks.len() + self.vs.len() + self.pos.len())
    }
}

/// Scratch of the split attention (partials for up to `max_rows` = tokens × heads).
pub struct AttnScratch {
    max_rows: usize,
    splits: usize,
    d: usize,
    pm: CudaSlice<f32>,
    pl: CudaSlice<f32>,
    pacc: CudaSlice<f32>,
}

fn cfg(grid: (u32, u32, u32), block: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem,
    }
}

fn blocks(n: usize, per: usize) -> Result<u32, KernelError> {
    u32::try_from(n.div_ceil(per)).map_err(|_| KernelError::Cuda(format!("grid of {n} too large")))
}

impl Gpu {
    /// Opens GPU `ordinal` and loads the kernels.
    pub fn new(ordinal: usize) -> Result<Self, KernelError> {
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| KernelError::Cuda(format!("opening CUDA device {ordinal}: {e}")))?;
        // One stream, so per-buffer event tracking is not needed (and would break capture).
        // SAFETY: every buffer of this context is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        // A created stream, not the legacy default stream: graphs cannot be captured on that.
        let stream = ctx.new_stream().map_err(cu)?;
        let t = ctx.load_module(Ptx::from_src(PTX_TERNARY)).map_err(cu)?;
        let a = ctx.load_module(Ptx::from_src(PTX_ATTENTION)).map_err(cu)?;
        let o = ctx.load_module(Ptx::from_src(PTX_OPS)).map_err(cu)?;
        let k = Kernels {
            act_quant: load(&t, "act_quant_i8")?,
            gemv: load(&t, "ternary_gemv")?,
            gemm: load(&t, "ternary_gemm")?,
            kv_store: load(&a, "kv_store")?,
            kv_dequant: load(&a, "kv_dequant_i4")?,
            attn: [
                load(&a, "attn_partial_f32")?,
                load(&a, "attn_partial_f16")?,
                load(&a, "attn_partial_i4")?,
            ],
            combine: load(&a, "attn_combine")?,
            rmsnorm: load(&o, "rmsnorm")?,
            rope: load(&o, "rope")?,
            add: load(&o, "add_inplace")?,
            gated: load(&o, "gated_act")?,
            act: load(&o, "act_inplace")?,
            head_f16: load(&o, "head_gemv_f16")?,
            head_f32: load(&o, "head_gemv_f32")?,
            copy_cols: load(&o, "copy_cols")?,
            rms_act_quant: load(&t, "rms_act_quant_i8")?,
            qkv_rope_split: load(&o, "qkv_rope_split")?,
        };
        Ok(Self {
            ctx,
            stream,
            k,
            ordinal,
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device's name.
    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "CUDA device".into())
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize), KernelError> {
        self.ctx.mem_get_info().map_err(cu)
    }

    /// Waits for all queued work; surfaces errors of earlier launches.
    pub fn sync(&self) -> Result<(), KernelError> {
        self.stream.synchronize().map_err(cu)
    }

    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, KernelError> {
        self.stream.clone_htod(host).map_err(cu)
    }

    /// Copies `host` into the start of `dst`.
    pub fn write<T: DeviceRepr>(
        &self,
        host: &[T],
        dst: &mut CudaSlice<T>,
    ) -> Result<(), KernelError> {
        check("write", dst, host.len())?;
        let mut view = dst.slice_mut(0..host.len());
        self.stream.memcpy_htod(host, &mut view).map_err(cu)
    }

    pub fn download<T: DeviceRepr>(&self, d: &CudaSlice<T>) -> Result<Vec<T>, KernelError> {
        let v = self.stream.clone_dtoh(d).map_err(cu)?;
        self.sync()?;
        Ok(v)
    }

    /// Copies `n` elements of `src` from `offset` to the host.
    pub fn download_range<T: DeviceRepr>(
        &self,
        src: &CudaSlice<T>,
        offset: usize,
        n: usize,
    ) -> Result<Vec<T>, KernelError> {
        check("download", src, offset + n)?;
        let v = self
            .stream
            .clone_dtoh(&src.slice(offset..offset + n))
            .map_err(cu)?;
        self.sync()?;
        Ok(v)
    }

    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, KernelError> {
        self.stream.alloc_zeros(n.max(1)).map_err(cu)
    }

    /// Device-to-device copy of `n` elements.
    pub fn copy(
        &self,
        src: &CudaSlice<f32>,
        src_off: usize,
        dst: &mut CudaSlice<f32>,
        dst_off: usize,
        n: usize,
    ) -> Result<(), KernelError> {
        check("copy src", src, src_off + n)?;
        check("copy dst", dst, dst_off + n)?;
        let s = src.slice(src_off..src_off + n);
        let mut d = dst.slice_mut(dst_off..dst_off + n);
        self.stream.memcpy_dtod(&s, &mut d).map_err(cu)
    }

    fn ptr<T>(&self, s: &CudaSlice<T>, offset: usize) -> u64 {
        let (p, _guard) = s.device_ptr(&self.stream);
        p + (offset * std::mem::size_of::<T>()) as u64
    }

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
        if m > act.max_m {
            return Err(bad("rms_act_quant tokens", m, act.max_m));
        }
        check("rms_act_quant input", x, m * act.k)?;
        if let Some(w) = norm {
            check("rms_act_quant weight", w, act.k)?;
        }
        if m == 0 {
            return Ok(());
        }
        let (xp, qp, sp, up) = (
            self.ptr(x, 0),
            self.ptr(&act.q, 0),
            self.ptr(&act.scale, 0),
            self.ptr(&act.sum, 0),
        );
        let wp: u64 = norm.map_or(0, |w| self.ptr(w, 0));
        let (k, kp) = (int(act.k, "k")?, int(act.k_pad, "k_pad")?);
        let mut b = self.stream.launch_builder(&self.k.rms_act_quant);
        b.arg(&xp)
            .arg(&wp)
            .arg(&eps)
            .arg(&k)
            .arg(&kp)
            .arg(&qp)
            .arg(&sp)
            .arg(&up);
        // SAFETY: x holds m·k floats, the norm k (checked), act max_m ≥ m padded rows; a zero
        // weight pointer is the kernel's "no norm".
        unsafe { b.launch(cfg((int(m, "m")? as u32, 1, 1), 256, 0)) }.map_err(cu)?;
        Ok(())
    }

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
        let mut b = self.stream.launch_builder(&self.k.qkv_rope_split);
        b.arg(&sp)
            .arg(&ti)
            .arg(&hi)
            .arg(&hk)
            .arg(&di)
            .arg(&theta)
            .arg(&bp);
        b.arg(&qp).arg(&kp).arg(&vp);
        // SAFETY: bounds checked above; base holds one int.
        unsafe { b.launch(cfg((blocks(n, 256)?, 1, 1), 256, 0)) }.map_err(cu)?;
        Ok(())
    }

    /// Quantises `m` rows of `k` floats of `x` (from element `off`) into `act`.
    pub fn act_quant(
        &self,
        x: &CudaSlice<f32>,
        off: usize,
        m: usize,
        act: &ActBuf,
    ) -> Result<(), KernelError> {
        if m > act.max_m {
            return Err(bad("act_quant tokens", m, act.max_m));
        }
        check("act_quant input", x, off + m * act.k)?;
        if m == 0 {
            return Ok(());
        }
        let (xp, qp, sp, up) = (
            self.ptr(x, off),
            self.ptr(&act.q, 0),
            self.ptr(&act.scale, 0),
            self.ptr(&act.sum, 0),
        );
        let (k, kp) = (int(act.k, "k")?, int(act.k_pad, "k_pad")?);
        let mut b = self.stream.launch_builder(&self.k.act_quant);
        b.arg(&xp).arg(&k).arg(&kp).arg(&qp).arg(&sp).arg(&up);
        // SAFETY: x holds m·k floats from `off`, act holds max_m ≥ m padded rows (checked).
        unsafe { b.launch(cfg((int(m, "m")? as u32, 1, 1), 256, 0)) }.map_err(cu)?;
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
        if m == 1 {
            let smem = u32::try_from(w.k_pad).map_err(cu)?;
            if smem > 48 * 1024 {
                return Err(KernelError::Cuda(format!(
                    "ternary GEMV: {} columns exceed the 48 KiB of shared memory",
                    w.k
                )));
            }
            let mut b = self.stream.launch_builder(&self.k.gemv);
            b.arg(&wp)
                .arg(&sp)
                .arg(&n)
                .arg(&kw)
                .arg(&qp)
                .arg(&xsp)
                .arg(&xup)
                .arg(&op);
            // SAFETY: weights n·kw words, activations one k_pad row, output n floats (checked).
            unsafe { b.launch(cfg((blocks(w.n, 8)?, 1, 1), 256, smem)) }.map_err(cu)?;
        } else {
            let mi = int(m, "m")?;
            let mut b = self.stream.launch_builder(&self.k.gemm);
            b.arg(&wp)
                .arg(&sp)
                .arg(&n)
                .arg(&kw)
                .arg(&qp)
                .arg(&xsp)
                .arg(&xup)
                .arg(&mi)
                .arg(&op);
            // SAFETY: as above with m rows of activations and m·n outputs (checked).
            unsafe { b.launch(cfg((blocks(w.n, 64)?, blocks(m, 32)?, 1), 128, 0)) }.map_err(cu)?;
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
        let mut b = self.stream.launch_builder(&self.k.rmsnorm);
        b.arg(&xp).arg(&wp).arg(&d).arg(&eps).arg(&yp);
        // SAFETY: bounds checked above.
        unsafe { b.launch(cfg((int(rows, "rows")? as u32, 1, 1), 256, 0)) }.map_err(cu)?;
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
        let mut b = self.stream.launch_builder(&self.k.rope);
        b.arg(&xp).arg(&ti).arg(&hi).arg(&di).arg(&theta).arg(&bp);
        // SAFETY: bounds checked above; base holds one int.
        unsafe { b.launch(cfg((blocks(n, 256)?, 1, 1), 256, 0)) }.map_err(cu)?;
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
        let mut b = self.stream.launch_builder(&self.k.copy_cols);
        b.arg(&sp).arg(&st).arg(&c0).arg(&nc).arg(&r).arg(&dp);
        // SAFETY: bounds checked above.
        unsafe { b.launch(cfg((blocks(rows * ncols, 256)?, 1, 1), 256, 0)) }.map_err(cu)?;
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
        let mut b = self.stream.launch_builder(&self.k.add);
        b.arg(&xp).arg(&yp).arg(&ni);
        // SAFETY: bounds checked above.
        unsafe { b.launch(cfg((blocks(n, 256)?, 1, 1), 256, 0)) }.map_err(cu)?;
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
        let mut b = self.stream.launch_builder(&self.k.gated);
        b.arg(&gp).arg(&ti).arg(&fi).arg(&kind).arg(&hp);
        // SAFETY: bounds checked above.
        unsafe { b.launch(cfg((blocks(t * f, 256)?, 1, 1), 256, 0)) }.map_err(cu)?;
        Ok(())
    }

    /// `x = act(x)` on `n` elements (`kind` as in [`Gpu::gated_act`]).
    pub fn act_inplace(&self, x: &CudaSlice<f32>, n: usize, kind: i32) -> Result<(), KernelError> {
        check("act", x, n)?;
        if n == 0 {
            return Ok(());
        }
        let (xp, ni) = (self.ptr(x, 0), int(n, "n")?);
        let mut b = self.stream.launch_builder(&self.k.act);
        b.arg(&xp).arg(&ni).arg(&kind);
        // SAFETY: bounds checked above.
        unsafe { b.launch(cfg((blocks(n, 256)?, 1, 1), 256, 0)) }.map_err(cu)?;
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
            DevHead::F16 { w, v, c } => (&self.k.head_f16, self.ptr(w, 0), *v, *c),
            DevHead::F32 { w, v, c } => (&self.k.head_f32, self.ptr(w, 0), *v, *c),
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
        let mut b = self.stream.launch_builder(func);
        b.arg(&wp).arg(&xp).arg(&vi).arg(&ci).arg(&op);
        // SAFETY: weights v·c, input c, output v (checked).
        unsafe { b.launch(cfg((blocks(v, 8)?, 1, 1), 256, smem)) }.map_err(cu)?;
        Ok(())
    }

    /// A KV cache of `cap` slots (see `attention.cu`): with a window, `cap` must exceed it by
    /// the largest number of tokens appended at once. `theta` is the RoPE base used to shift
    /// sink keys to their StreamingLLM positions once the window rolls (0: no shift).
    #[allow(clippy::too_many_arguments)]
    pub fn kv_cache(
        &self,
        kind: GpuKvKind,
        cap: usize,
        kv_heads: usize,
        head_dim: usize,
        window: usize,
        sinks: usize,
        theta: f32,
    ) -> Result<DevKv, KernelError> {
        if head_dim == 0 || !head_dim.is_multiple_of(8) || head_dim > MAX_HEAD_DIM {
            return Err(KernelError::Cuda(format!(
                "GPU attention needs a head dimension that is a multiple of 8 and at most {MAX_HEAD_DIM}, got {head_dim}"
            )));
        }
        if window > 0 && (window <= sinks || cap <= window) {
            return Err(KernelError::Cuda(format!(
                "KV cache: window {window} must exceed sinks {sinks} and be below the capacity {cap}"
            )));
        }
        let group = int4_group(head_dim).unwrap_or(head_dim);
        let rows = cap * kv_heads;
        let (data, scales) = match kind {
            GpuKvKind::F32 => (rows * head_dim * 4, 1),
            GpuKvKind::F16 => (rows * head_dim * 2, 1),
            GpuKvKind::Int4 => (rows * head_dim / 2, rows * (head_dim / group)),
        };
        let pos_init = vec![-1i32; cap];
        Ok(DevKv {
            kind,
            cap,
            kv_heads,
            head_dim,
            group,
            window,
            sinks,
            theta,
            kd: self.zeros(data)?,
            ks: self.zeros(scales)?,
            vd: self.zeros(data)?,
            vs: self.zeros(scales)?,
            pos: self.upload(&pos_init)?,
        })
    }

    /// Forgets every token of `kv`.
    pub fn kv_clear(&self, kv: &mut DevKv) -> Result<(), KernelError> {
        let pos_init = vec![-1i32; kv.cap];
        self.write(&pos_init, &mut kv.pos)
    }

    /// Stores `t` tokens of rotated keys and values (`[t][kv_heads][d]`) at positions
    /// `*base..*base + t`. The caller keeps positions below `cap` without a window.
    pub fn kv_store(
        &self,
        kv: &DevKv,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        t: usize,
        base: &CudaSlice<i32>,
    ) -> Result<(), KernelError> {
        let n = t * kv.kv_heads * kv.head_dim;
        check("kv_store keys", k, n)?;
        check("kv_store values", v, n)?;
        if t == 0 {
            return Ok(());
        }
        let (kp, vp, bp) = (self.ptr(k, 0), self.ptr(v, 0), self.ptr(base, 0));
        let (kdp, ksp, vdp, vsp, pp) = (
            self.ptr(&kv.kd, 0),
            self.ptr(&kv.ks, 0),
            self.ptr(&kv.vd, 0),
            self.ptr(&kv.vs, 0),
            self.ptr(&kv.pos, 0),
        );
        let (ti, hi, di, gi, kind) = (
            int(t, "t")?,
            int(kv.kv_heads, "kv_heads")?,
            int(kv.head_dim, "d")?,
            int(kv.group, "group")?,
            kv.kind as i32,
        );
        let (cap, win, sinks) = (
            int(kv.cap, "cap")?,
            int(kv.window, "window")?,
            int(kv.sinks, "sinks")?,
        );
        let mut b = self.stream.launch_builder(&self.k.kv_store);
        b.arg(&kp)
            .arg(&vp)
            .arg(&ti)
            .arg(&hi)
            .arg(&di)
            .arg(&gi)
            .arg(&kind)
            .arg(&cap);
        b.arg(&win)
            .arg(&sinks)
            .arg(&bp)
            .arg(&kdp)
            .arg(&ksp)
            .arg(&vdp)
            .arg(&vsp)
            .arg(&pp);
        // SAFETY: inputs checked; slots computed in-kernel stay below cap (window > 0) or are
        // positions the caller keeps below cap.
        unsafe { b.launch(cfg((ti as u32, hi as u32, 1), 64, 0)) }.map_err(cu)?;
        Ok(())
    }

    /// The INT4 cache's keys and values read back as f32 (`[cap][kv_heads][d]` each) and the
    /// position of every slot, for tests.
    pub fn kv_read(&self, kv: &DevKv) -> Result<KvHost, KernelError> {
        let pos = self.download(&kv.pos)?;
        let n = kv.cap * kv.kv_heads * kv.head_dim;
        let (k, v) = match kv.kind {
            GpuKvKind::Int4 => {
                let out_k: CudaSlice<f32> = self.zeros(n)?;
                let out_v: CudaSlice<f32> = self.zeros(n)?;
                for (data, sc, out) in [(&kv.kd, &kv.ks, &out_k), (&kv.vd, &kv.vs, &out_v)] {
                    let (dp, sp, op) = (self.ptr(data, 0), self.ptr(sc, 0), self.ptr(out, 0));
                    let (rows, d, g) = (
                        int(kv.cap * kv.kv_heads, "rows")?,
                        int(kv.head_dim, "d")?,
                        int(kv.group, "group")?,
                    );
                    let mut b = self.stream.launch_builder(&self.k.kv_dequant);
                    b.arg(&dp).arg(&sp).arg(&rows).arg(&d).arg(&g).arg(&op);
                    // SAFETY: data rows·d/2 bytes, scales rows·d/group, out rows·d.
                    unsafe { b.launch(cfg((blocks(n, 256)?, 1, 1), 256, 0)) }.map_err(cu)?;
                }
                (self.download(&out_k)?, self.download(&out_v)?)
            }
            GpuKvKind::F32 => {
                let k: Vec<f32> = bytes_to(
                    &self.download(&kv.kd)?,
                    |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    4,
                );
                let v: Vec<f32> = bytes_to(
                    &self.download(&kv.vd)?,
                    |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    4,
                );
                (k, v)
            }
            GpuKvKind::F16 => {
                let f = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
                (
                    bytes_to(&self.download(&kv.kd)?, f, 2),
                    bytes_to(&self.download(&kv.vd)?, f, 2),
                )
            }
        };
        Ok((k, v, pos))
    }

    /// Raw INT4 codes and (scale, min) bit patterns of keys and values, for tests.
    #[allow(clippy::type_complexity)]
    pub fn kv_raw(
        &self,
        kv: &DevKv,
    ) -> Result<(Vec<u8>, Vec<u32>, Vec<u8>, Vec<u32>), KernelError> {
        Ok((
            self.download(&kv.kd)?,
            self.download(&kv.ks)?,
            self.download(&kv.vd)?,
            self.download(&kv.vs)?,
        ))
    }

    /// Scratch for attention of up to `max_rows` (tokens × heads) rows over caches of `cap`.
    pub fn attn_scratch(
        &self,
        max_rows: usize,
        cap: usize,
        d: usize,
    ) -> Result<AttnScratch, KernelError> {
        let splits = cap.div_ceil(SPLIT);
        Ok(AttnScratch {
            max_rows,
            splits,
            d,
            pm: self.zeros(max_rows * splits)?,
            pl: self.zeros(max_rows * splits)?,
            pacc: self.zeros(max_rows * splits * d)?,
        })
    }

    /// Attention of `t` queries `q` `[t][heads][d]` (rotated, at positions `*base + i`) over
    /// `kv` into `out` `[t][heads][d]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &CudaSlice<f32>,
        t: usize,
        heads: usize,
        kv: &DevKv,
        base: &CudaSlice<i32>,
        scale: f32,
        s: &AttnScratch,
        out: &CudaSlice<f32>,
    ) -> Result<(), KernelError> {
        let d = kv.head_dim;
        if !heads.is_multiple_of(kv.kv_heads) {
            return Err(KernelError::Cuda(format!(
                "attention: {heads} heads are not a multiple of {} KV heads",
                kv.kv_heads
            )));
        }
        let splits = kv.cap.div_ceil(SPLIT);
        if t * heads > s.max_rows || splits > s.splits || d > s.d {
            return Err(KernelError::Cuda(format!(
                "attention scratch too small for {t} tokens × {heads} heads over {} slots",
                kv.cap
            )));
        }
        check("attention q", q, t * heads * d)?;
        check("attention out", out, t * heads * d)?;
        if t == 0 {
            return Ok(());
        }
        let (qp, bp, op) = (self.ptr(q, 0), self.ptr(base, 0), self.ptr(out, 0));
        let (kdp, ksp, vdp, vsp, pp) = (
            self.ptr(&kv.kd, 0),
            self.ptr(&kv.ks, 0),
            self.ptr(&kv.vd, 0),
            self.ptr(&kv.vs, 0),
            self.ptr(&kv.pos, 0),
        );
        let (pmp, plp, pap) = (self.ptr(&s.pm, 0), self.ptr(&s.pl, 0), self.ptr(&s.pacc, 0));
        let (ti, hi, hkv, di, gi) = (
            int(t, "t")?,
            int(heads, "heads")?,
            int(kv.kv_heads, "kv_heads")?,
            int(d, "d")?,
            int(kv.group, "group")?,
        );
        let (cap, win, sinks) = (
            int(kv.cap, "cap")?,
            int(kv.window, "window")?,
            int(kv.sinks, "sinks")?,
        );
        let si = int(splits, "splits")?;
        let mut b = self.stream.launch_builder(&self.k.attn[kv.kind as usize]);
        b.arg(&qp)
            .arg(&ti)
            .arg(&hi)
            .arg(&hkv)
            .arg(&di)
            .arg(&gi)
            .arg(&kdp)
            .arg(&ksp);
        b.arg(&vdp)
            .arg(&vsp)
            .arg(&pp)
            .arg(&cap)
            .arg(&bp)
            .arg(&win)
            .arg(&sinks)
            .arg(&kv.theta)
            .arg(&scale);
        b.arg(&pmp).arg(&plp).arg(&pap);
        // SAFETY: q/out t·heads·d, cache cap slots, scratch t·heads·splits rows (checked).
        unsafe { b.launch(cfg((hi as u32, ti as u32, si as u32), SPLIT as u32, 0)) }.map_err(cu)?;
        let mut c = self.stream.launch_builder(&self.k.combine);
        c.arg(&pmp)
            .arg(&plp)
            .arg(&pap)
            .arg(&hi)
            .arg(&di)
            .arg(&si)
            .arg(&op);
        // SAFETY: same buffers, read back per (head, token).
        unsafe { c.launch(cfg((hi as u32, ti as u32, 1), 128, 0)) }.map_err(cu)?;
        Ok(())
    }

    /// Times `f` with CUDA events: median milliseconds over `reps` runs after `warm` runs.
    pub fn time_ms(
        &self,
        warm: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<(), KernelError>,
    ) -> Result<f64, KernelError> {
        for _ in 0..warm {
            f()?;
        }
        self.sync()?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let timed = Some(CUevent_flags::CU_EVENT_DEFAULT);
            let a = self.stream.record_event(timed).map_err(cu)?;
            f()?;
            let b = self.stream.record_event(timed).map_err(cu)?;
            times.push(f64::from(a.elapsed_ms(&b).map_err(cu)?));
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}

fn bytes_to(b: &[u8], f: impl Fn(&[u8]) -> f32, w: usize) -> Vec<f32> {
    b.chunks_exact(w).map(f).collect()
}
