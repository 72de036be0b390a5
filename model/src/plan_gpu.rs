//! Device memory of the CUDA build (`gpu::GpuModel`) for a model shape: packed ternary weights
//! in the G2 layout (columns padded to 64, one f32 scale per row, q|k|v and gate|up stacked),
//! the LM head (f16 or f32), norms, the KV cache (f32/f16/INT4 with f16 scale and min per group
//! of channels, `window + chunk` slots with a window, else `context`), and the scratch of one
//! prefill chunk. The embedding stays on the host. The CUDA context itself is not included
//! (`tritter plan --gpu` adds it as overhead). The decode benchmark compares this with the
//! memory the driver reports as used (`bench_cuda`).

use crate::config::Config;
use crate::plan::ModelDims;
use serde::Serialize;
use tritter_kernels::gpu_ref::g2_k_pad;
/// The GPU cache's storage kind (not `attn::KvKind`: see `attn/kv/kind.rs` for why).
pub use tritter_kernels::gpu_ref::GpuKvKind;

/// What to plan.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuPlanOptions {
    pub kv: GpuKvKind,
    /// Rolling window (0: full attention up to `context`).
    pub window: usize,
    /// Tokens per pass (prefill chunk).
    pub chunk: usize,
    /// Context limit without a window.
    pub context: usize,
    pub head_f16: bool,
}

/// Device bytes by part.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuPlan {
    pub weights: u64,
    pub head: u64,
    pub kv_cache: u64,
    pub scratch: u64,
    pub total: u64,
}

fn g2(n: usize, k: usize) -> u64 {
    (n * g2_k_pad(k) / 4 + 4 * n) as u64
}

/// The plan for a model shape.
pub fn gpu_plan(d: &ModelDims, o: &GpuPlanOptions) -> GpuPlan {
    let (c, f) = (d.hidden, d.intermediate);
    let (nq, nk) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let gu = if d.gated_ffn { 2 * f } else { f };
    let per_layer = g2(nq + 2 * nk, c) + g2(c, nq) + g2(gu, c) + g2(c, f) + (8 * c) as u64;
    let weights = d.layers as u64 * per_layer + 4 * c as u64;
    let head = (d.vocab * c * if o.head_f16 { 2 } else { 4 }) as u64;
    let cap = if o.window > 0 {
        o.window + o.chunk
    } else {
        o.context
    };
    let kv = d.layers as u64 * (cap * (d.kv_heads * o.kv.bytes_per_head(d.head_dim) + 4)) as u64;
    let t = o.chunk;
    let splits = cap.div_ceil(256);
    let floats = t * (2 * c + 2 * (nq + 2 * nk) + nq + c.max(nq) + gu + f + d.vocab)
        + t * d.heads * splits * (d.head_dim + 2);
    let act = t * (g2_k_pad(c) + g2_k_pad(nq) + g2_k_pad(f)) + 3 * 8 * t;
    let scratch = (4 * floats + act) as u64;
    GpuPlan {
        weights,
        head,
        kv_cache: kv,
        scratch,
        total: weights + head + kv + scratch,
    }
}

/// The plan for a model config.
pub fn gpu_memory(cfg: &Config, o: &GpuPlanOptions) -> GpuPlan {
    let d = ModelDims {
        name: "config",
        ..ModelDims::from_config(cfg)
    };
    gpu_plan(&d, o)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand count for a small shape: every term written out.
    #[test]
    fn small_shape_by_hand() {
        let d = ModelDims {
            name: "t",
            layers: 2,
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            intermediate: 128,
            vocab: 256,
            tied: true,
            gated_ffn: true,
            vision_params: 0,
            state_bytes: vec![],
            ternary: None,
            extra_kv_runs: 0,
        };
        let o = GpuPlanOptions {
            kv: GpuKvKind::Int4,
            window: 0,
            chunk: 8,
            context: 100,
            head_f16: true,
        };
        let p = gpu_plan(&d, &o);
        // qkv 128 rows, o 64, gate|up 256, down 64 (k 128): rows·k_pad/4 + 4·rows, + norms 8·64.
        let layer = (128 * 16 + 512) + (64 * 16 + 256) + (256 * 16 + 1024) + (64 * 32 + 256) + 512;
        assert_eq!(p.weights, 2 * layer + 256);
        assert_eq!(p.head, 256 * 64 * 2);
        // INT4, d 16 (group 16): 2 · (8 + 4) bytes per head; 2 kv heads; + 4 bytes position.
        assert_eq!(p.kv_cache, 2 * 100 * (2 * 24 + 4));
        assert_eq!(p.total, p.weights + p.head + p.kv_cache + p.scratch);
    }

    #[test]
    fn window_bounds_the_cache() {
        let d = ModelDims::bitnet_2b4t();
        let mut o = GpuPlanOptions {
            kv: GpuKvKind::Int4,
            window: 4096,
            chunk: 512,
            context: 131_072,
            head_f16: true,
        };
        let a = gpu_plan(&d, &o).kv_cache;
        o.context = 1 << 20;
        assert_eq!(gpu_plan(&d, &o).kv_cache, a);
        o.kv = GpuKvKind::F16;
        assert!(gpu_plan(&d, &o).kv_cache > 3 * a);
    }
}
