//! Device memory of the CUDA build (`gpu::GpuModel`) for a model shape: packed ternary weights
//! in the G2 layout (columns padded to 64, one f32 scale per row, q|k|v and gate|up stacked),
//! the LM head (f16 or f32), norms, the KV cache (f32/f16/INT4 with f16 scale and min per group
//! of channels, `window + chunk` slots with a window, else `context`), and the scratch of one
//! prefill chunk. The embedding stays on the host. The CUDA context itself is not included
//! (`tritter plan --gpu` adds it as overhead). The decode benchmark compares this with the
//! memory the driver reports as used (`bench_cuda`).
//!
//! [`fit`] sizes the cache to a card: from the device's free bytes it keeps the KV kind asked
//! for (INT4 by default) and the config's window, and picks the longest context up to the
//! model's own that fits, or refuses when not even the weights do. `--device cuda` runs it on
//! the free memory the driver reports; `tritter plan --gpu` on a budget less the CUDA context.

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

/// CUDA context and module images: planned on top of the model's own allocations by
/// `tritter plan --gpu` (a running process reads its free memory after the context exists).
pub const GPU_CONTEXT_BYTES: u64 = 512 << 20;

/// Device memory [`fit`] leaves free beside the plan: cuBLAS's workspace, the allocator's
/// rounding, a captured decode graph.
pub const GPU_HEADROOM_BYTES: u64 = 256 << 20;

/// Contexts [`fit`] shortens to are multiples of this (the attention kernel's split).
pub const FIT_CONTEXT_STEP: usize = 256;

/// A context shorter than this is not worth running: [`fit`] refuses instead.
pub const FIT_MIN_CONTEXT: usize = 2048;

/// What [`fit`] sizes: the cache kind, the config's window and context, the pass length.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuFitRequest {
    /// KV cache storage (INT4 unless asked otherwise).
    pub kv: GpuKvKind,
    /// The config's rolling window (0: full attention).
    pub window: usize,
    /// The longest context wanted (the config's `max_position_embeddings`).
    pub context: usize,
    /// Tokens per pass.
    pub chunk: usize,
    pub head_f16: bool,
}

impl GpuFitRequest {
    /// The chat settings for `cfg`: INT4 cache, the config's window and context, 512-token
    /// passes, f16 head (what `GpuOptions::fast` runs).
    pub fn chat(cfg: &Config) -> Self {
        Self {
            kv: GpuKvKind::Int4,
            window: cfg.sliding_window_size,
            context: cfg.max_position_embeddings,
            chunk: 512,
            head_f16: true,
        }
    }
}

/// What [`fit`] chose for a device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuFit {
    /// KV cache storage: `F32`, `F16` or `Int4`.
    pub kv: String,
    /// Rolling window (0: full attention).
    pub window: usize,
    /// The longest context the cache holds (with a window: the context asked for; the cache
    /// rolls).
    pub context: usize,
    /// Whether `context` is shorter than the one asked for, to fit.
    pub shortened: bool,
    /// Free device bytes the choice was made against.
    pub free: u64,
    /// The plan at the chosen context.
    pub plan: GpuPlan,
}

impl GpuFit {
    /// The kind and what was shortened, for a status bar: `int4 KV`, `int4 KV, window 4096`,
    /// `int4 KV, ctx shortened to fit`.
    pub fn short(&self) -> String {
        let mut s = format!("{} KV", self.kv.to_lowercase());
        if self.window > 0 {
            s.push_str(&format!(", window {}", self.window));
        }
        if self.shortened {
            s.push_str(", ctx shortened to fit");
        }
        s
    }

    /// One line for a status bar: `int4 KV, 131072 ctx (of 24.1 GiB free)`.
    pub fn summary(&self) -> String {
        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
        let window = if self.window > 0 {
            format!(", window {}", self.window)
        } else {
            String::new()
        };
        format!(
            "{} KV{window}, {} ctx{}, {:.1} of {:.1} GiB free",
            self.kv.to_lowercase(),
            self.context,
            if self.shortened {
                " (shortened to fit)"
            } else {
                ""
            },
            gib(self.plan.total),
            gib(self.free)
        )
    }
}

/// Why nothing fits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Weights and head alone need more than the device has free.
    #[error(
        "the model needs {need_gib:.2} GiB of device memory for its weights alone ({weights_gib:.2} \
         GiB ternary weights + norms, {head_gib:.2} GiB LM head, {headroom_gib:.2} GiB headroom) \
         and the device has {free_gib:.2} GiB free; not loaded (run it with --device cpu)"
    )]
    Weights {
        need_gib: f64,
        weights_gib: f64,
        head_gib: f64,
        headroom_gib: f64,
        free_gib: f64,
    },
    /// The weights fit, the cache of the shortest useful context does not.
    #[error(
        "the model's weights fit in the device's {free_gib:.2} GiB free, but its {kv} KV cache \
         and scratch for {context} tokens do not ({need_gib:.2} GiB in all); not loaded (run it \
         with --device cpu)"
    )]
    Cache {
        kv: String,
        context: usize,
        need_gib: f64,
        free_gib: f64,
    },
}

fn gib(b: u64) -> f64 {
    b as f64 / f64::from(1u32 << 30)
}

/// The cache sized to `free` device bytes: `req`'s kind and window, and the longest context up
/// to `req.context` whose plan plus [`GPU_HEADROOM_BYTES`] fits (a multiple of
/// [`FIT_CONTEXT_STEP`] when shortened, at least [`FIT_MIN_CONTEXT`]). With a window the cache
/// is bounded by it, so the whole context fits or nothing does.
pub fn fit(d: &ModelDims, free: u64, req: &GpuFitRequest) -> Result<GpuFit, FitError> {
    let at = |context: usize| {
        gpu_plan(
            d,
            &GpuPlanOptions {
                kv: req.kv,
                window: req.window,
                chunk: req.chunk,
                context,
                head_f16: req.head_f16,
            },
        )
    };
    let fits = |p: &GpuPlan| p.total + GPU_HEADROOM_BYTES <= free;
    let full = at(req.context);
    let fixed = full.weights + full.head + GPU_HEADROOM_BYTES;
    if fixed > free {
        return Err(FitError::Weights {
            need_gib: gib(fixed),
            weights_gib: gib(full.weights),
            head_gib: gib(full.head),
            headroom_gib: gib(GPU_HEADROOM_BYTES),
            free_gib: gib(free),
        });
    }
    let choice = |context: usize, plan: GpuPlan| GpuFit {
        kv: format!("{:?}", req.kv),
        window: req.window,
        context,
        shortened: context < req.context,
        free,
        plan,
    };
    if fits(&full) {
        return Ok(choice(req.context, full));
    }
    let least = FIT_MIN_CONTEXT.min(req.context);
    let small = at(least);
    if req.window > 0 || !fits(&small) {
        let context = if req.window > 0 { req.context } else { least };
        return Err(FitError::Cache {
            kv: format!("{:?}", req.kv).to_lowercase(),
            context,
            need_gib: gib((if req.window > 0 { &full } else { &small }).total + GPU_HEADROOM_BYTES),
            free_gib: gib(free),
        });
    }
    // The plan grows with the context: bisect for the longest step multiple that fits.
    let (mut lo, mut hi) = (least / FIT_CONTEXT_STEP, req.context / FIT_CONTEXT_STEP + 1);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(&at(mid * FIT_CONTEXT_STEP)) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let context = (lo * FIT_CONTEXT_STEP).max(least);
    Ok(choice(context, at(context)))
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

    const GIB: u64 = 1 << 30;

    fn card(total: u64) -> u64 {
        total - GPU_CONTEXT_BYTES
    }

    fn chat(context: usize) -> GpuFitRequest {
        GpuFitRequest {
            kv: GpuKvKind::Int4,
            window: 0,
            context,
            chunk: 512,
            head_f16: true,
        }
    }

    /// 2B4T at 128K on a 16 GiB card (an RTX 5080), every term by hand: it all fits, INT4.
    #[test]
    fn bitnet_2b4t_at_128k_fits_a_16_gib_card() {
        let f = fit(&ModelDims::bitnet_2b4t(), card(16 * GIB), &chat(131_072)).unwrap();
        assert_eq!((f.kv.as_str(), f.window, f.context), ("Int4", 0, 131_072));
        assert!(!f.shortened);
        // Per layer: qkv 3840×2560 → 3840·2560/4 + 4·3840; o 2560×2560; gate|up 13824×2560;
        // down 2560×6912; norms 8·2560. 30 layers + the final norm 4·2560.
        let layer = (2_457_600 + 15_360)
            + (1_638_400 + 10_240)
            + (8_847_360 + 55_296)
            + (4_423_680 + 10_240)
            + 20_480;
        assert_eq!(f.plan.weights, 30 * layer + 10_240);
        assert_eq!(f.plan.weights, 524_369_920);
        assert_eq!(f.plan.head, 128_256 * 2560 * 2);
        // INT4 d 128 (groups of 64): 2 · (64 + 4·2) = 144 bytes per head; 5 heads + 4 bytes.
        assert_eq!(f.plan.kv_cache, 30 * 131_072 * (5 * 144 + 4));
        // Scratch: 512 tokens × (2c + 2·qkv + nq + max(c, nq) + gate|up + f + vocab) floats,
        // + the attention partials 512 · 20 heads · 512 splits · 130, as f32; + the int8
        // activations 512 · (2560 + 2560 + 6912) and 3 · 8 bytes of scales per token.
        let floats =
            512 * (5120 + 7680 + 2560 + 2560 + 13_824 + 6912 + 128_256) + 512 * 20 * 512 * 130;
        assert_eq!(f.plan.scratch, 4 * floats + 512 * 12_032 + 24 * 512);
        assert_eq!(f.plan.total, 7_102_230_528);
        assert!(f
            .summary()
            .starts_with("int4 KV, 131072 ctx, 6.6 of 15.5 GiB free"));
    }

    /// tritter-7b at 128K: 11.0 GiB of 15.5 GiB; on an 8 GiB card the context is shortened to
    /// the longest multiple of 256 that fits (73,728: 7.23 GiB + headroom of 7.5 GiB free;
    /// 73,984 would need 1.5 MB more).
    #[test]
    fn tritter_7b_fits_16_gib_at_128k_and_is_shortened_on_8() {
        let d = ModelDims::tritter_7b();
        let f = fit(&d, card(16 * GIB), &chat(131_072)).unwrap();
        assert_eq!((f.context, f.shortened), (131_072, false));
        assert_eq!(f.plan.total, 11_797_884_928);
        let f = fit(&d, card(8 * GIB), &chat(131_072)).unwrap();
        assert_eq!((f.context, f.shortened), (73_728, true));
        assert_eq!(f.plan.total, 7_768_207_360);
        assert!(f.plan.total + GPU_HEADROOM_BYTES <= card(8 * GIB));
        assert!(f.summary().contains("73728 ctx (shortened to fit)"));
    }

    #[test]
    fn weights_that_do_not_fit_are_refused_with_the_figures() {
        let e = fit(&ModelDims::tritter_7b(), card(2 * GIB), &chat(131_072)).unwrap_err();
        let FitError::Weights {
            need_gib, free_gib, ..
        } = e
        else {
            panic!("{e}")
        };
        // 1,423,392,768 + 822,083,584 + 256 MiB = 2.34 GiB against 1.5 GiB.
        assert!((need_gib - 2.3413).abs() < 1e-3 && (free_gib - 1.5).abs() < 1e-9);
        let msg = e.to_string();
        assert!(
            msg.contains("2.34 GiB") && msg.contains("1.50 GiB free"),
            "{msg}"
        );
        assert!(msg.contains("not loaded") && !msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_window_bounds_the_cache_so_the_whole_context_fits_or_nothing() {
        let d = ModelDims::bitnet_2b4t();
        let mut r = chat(1 << 20);
        r.window = 4096;
        let f = fit(&d, card(4 * GIB), &r).unwrap();
        assert_eq!((f.window, f.context, f.shortened), (4096, 1 << 20, false));
        // Weights fit in 1.5 GiB free, the 4,608-slot cache and its scratch do not.
        let e = fit(&d, 1_500_000_000, &r).unwrap_err();
        assert!(matches!(e, FitError::Cache { .. }), "{e}");
        assert!(e.to_string().contains("int4 KV cache"), "{e}");
    }
}
