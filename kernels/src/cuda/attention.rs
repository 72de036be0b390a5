//! Launches of `kernels/cuda/attention.cu`: the GPU KV cache (f32 / f16 / INT4 with f16 scale
//! and min per group of channels, rolling window + sinks) and decode/prefill attention over it
//! (split partials + combine, or grouped-query blocks per [`Tuning`](super::Tuning)). Must match
//! [`crate::gpu_ref`]: INT4 codes and scales bit for bit, attention within f32 rounding of
//! [`crate::gpu_ref::attention_ref`].

use super::{blocks, cfg, check, int, launch, load, load_module, Gpu};
use crate::gpu_ref::int4_group;
use crate::KernelError;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice};
use half::f16;
use std::sync::Arc;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/attention.ptx"));

/// The kernels of `attention.cu`.
pub(super) struct AttentionKernels {
    kv_store: CudaFunction,
    kv_dequant: CudaFunction,
    /// `attn_partial_{f32,f16,i4}`.
    attn: [CudaFunction; 3],
    /// `attn_group_{f32,f16,i4}`.
    attn_group: [CudaFunction; 3],
    combine: CudaFunction,
}

impl AttentionKernels {
    pub(super) fn load(ctx: &Arc<CudaContext>) -> Result<Self, KernelError> {
        let a = load_module(ctx, PTX)?;
        Ok(Self {
            kv_store: load(&a, "kv_store")?,
            kv_dequant: load(&a, "kv_dequant_i4")?,
            attn: [
                load(&a, "attn_partial_f32")?,
                load(&a, "attn_partial_f16")?,
                load(&a, "attn_partial_i4")?,
            ],
            attn_group: [
                load(&a, "attn_group_f32")?,
                load(&a, "attn_group_f16")?,
                load(&a, "attn_group_i4")?,
            ],
            combine: load(&a, "attn_combine")?,
        })
    }
}

/// Slots per attention block (`SPLIT` in attention.cu).
const SPLIT: usize = 256;
/// Largest head dimension the attention kernel takes (its shared arrays).
pub const MAX_HEAD_DIM: usize = 256;

pub use crate::gpu_ref::GpuKvKind;

/// Host copy of a KV cache: keys, values (f32, `[cap][kv_heads][d]`) and slot positions.
pub type KvHost = (Vec<f32>, Vec<f32>, Vec<i32>);

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

impl Gpu {
    /// Device pointers of a cache's key data, key scales, value data, value scales, positions.
    fn kv_ptrs(&self, kv: &DevKv) -> [u64; 5] {
        [
            self.ptr(&kv.kd, 0),
            self.ptr(&kv.ks, 0),
            self.ptr(&kv.vd, 0),
            self.ptr(&kv.vs, 0),
            self.ptr(&kv.pos, 0),
        ]
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
        let [kdp, ksp, vdp, vsp, pp] = self.kv_ptrs(kv);
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
        // SAFETY: inputs checked; slots computed in-kernel stay below cap (window > 0) or are
        // positions the caller keeps below cap.
        unsafe {
            launch!(self, &self.k.attention.kv_store, cfg((ti as u32, hi as u32, 1), 64, 0);
                kp, vp, ti, hi, di, gi, kind, cap, win, sinks, bp, kdp, ksp, vdp, vsp, pp)
        }?;
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
                    let c = cfg((blocks(n, 256)?, 1, 1), 256, 0);
                    // SAFETY: data rows·d/2 bytes, scales rows·d/group, out rows·d.
                    unsafe {
                        launch!(self, &self.k.attention.kv_dequant, c; dp, sp, rows, d, g, op)
                    }?;
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
        let [kdp, ksp, vdp, vsp, pp] = self.kv_ptrs(kv);
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
        let skip = i32::from(self.tuning.attn_skip_empty);
        let group_heads = heads / kv.kv_heads;
        if self.tuning.attn_group && group_heads <= 8 {
            // SAFETY: as below; one block per (KV head, token, split) writes the partial
            // results of its `group_heads` query heads (rows t·heads + kv_head·G + g).
            unsafe {
                launch!(self, &self.k.attention.attn_group[kv.kind as usize],
                    cfg((hkv as u32, ti as u32, si as u32), 128, 0);
                    qp, ti, hi, hkv, di, gi, kdp, ksp, vdp, vsp, pp, cap, bp, win, sinks, kv.theta,
                    scale, skip, pmp, plp, pap)
            }?;
        } else {
            let c = cfg((hi as u32, ti as u32, si as u32), SPLIT as u32, 0);
            // SAFETY: q/out t·heads·d, cache cap slots, scratch t·heads·splits rows (checked).
            unsafe {
                launch!(self, &self.k.attention.attn[kv.kind as usize], c;
                    qp, ti, hi, hkv, di, gi, kdp, ksp, vdp, vsp, pp, cap, bp, win, sinks, kv.theta,
                    scale, skip, pmp, plp, pap)
            }?;
        }
        // SAFETY: same buffers, read back per (head, token).
        unsafe {
            launch!(self, &self.k.attention.combine, cfg((hi as u32, ti as u32, 1), 128, 0);
                pmp, plp, pap, hi, di, si, op)
        }?;
        Ok(())
    }
}

fn bytes_to(b: &[u8], f: impl Fn(&[u8]) -> f32, w: usize) -> Vec<f32> {
    b.chunks_exact(w).map(f).collect()
}
