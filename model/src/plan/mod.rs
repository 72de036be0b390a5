//! Memory planner behind `tritter plan --preset NAME --context N --budget 16GiB`: pure arithmetic
//! over a model's dimensions giving weights, vision encoder, KV cache (by cache kind and window),
//! activations, overhead and total, and the longest context that fits a budget. In a hybrid
//! model only the attention layers hold a KV cache; Mamba-2 and Gated DeltaNet layers hold a
//! fixed state, planned beside it (`dims.rs`). The KV figure
//! follows the allocation of [`crate::attn::KvCache`] block for block (tests compare it with the
//! bytes a real cache holds); for `tritter-7b` [`roadmap_comparison`] sets the result beside the
//! RTX 5080 table of the prototype's ROADMAP.md and explains the differences.

use serde::Serialize;

use crate::attn::kv::FLOAT_BLOCK;
use crate::attn::KvKind;

/// Errors of the planner, each naming the bad input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// No preset of that name.
    #[error(
        "unknown preset {name:?} (known: tritter-tiny, tritter-small, tritter-hybrid-tiny, \
         tritter-depth-tiny, tritter-7b, bitnet-b1.58-2b4t)"
    )]
    UnknownPreset {
        /// The name given.
        name: String,
    },
    /// A byte size that does not parse.
    #[error("cannot read byte size {input:?} (examples: 16GiB, 8GB, 512MiB, 1000000)")]
    BadBytes {
        /// The text given.
        input: String,
    },
    /// Options that contradict each other.
    #[error("invalid plan option {what}: {why}")]
    Option {
        /// Which option.
        what: &'static str,
        /// Why.
        why: String,
    },
}

mod dims;

pub use dims::ModelDims;

/// What to plan for.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    /// Tokens of context.
    pub context: usize,
    /// Rolling window in tokens (sinks included); 0 = full attention.
    pub window: usize,
    /// Attention sinks (with a window).
    pub sinks: usize,
    /// KV cache kind.
    pub kv: KvKind,
    /// Memory budget in bytes.
    pub budget: u64,
    /// Prefill chunk: tokens whose activations are alive at once.
    pub prefill_chunk: usize,
    /// Runtime overhead: allocator slack, tokenizer, thread stacks, a GPU context.
    pub overhead: u64,
}

impl PlanOptions {
    /// Defaults: f16 cache, full attention, 16 GiB, chunk 512, 512 MiB overhead.
    pub fn new(context: usize) -> Self {
        PlanOptions {
            context,
            window: 0,
            sinks: 0,
            kv: KvKind::F16,
            budget: 16 << 30,
            prefill_chunk: 512,
            overhead: 512 << 20,
        }
    }
}

/// The planner's answer; all sizes in bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// Preset name.
    pub preset: String,
    /// Context planned for.
    pub context: usize,
    /// Window (0 = full).
    pub window: usize,
    /// KV kind name.
    pub kv_kind: String,
    /// Model weights.
    pub weights: u64,
    /// Vision encoder weights.
    pub vision: u64,
    /// KV cache of all attention layers.
    pub kv_cache: u64,
    /// Layers holding a KV cache.
    pub kv_layers: usize,
    /// Recurrent states of the Mamba-2 / Gated DeltaNet layers (constant in the context).
    pub recurrent_state: u64,
    /// Bytes of each layer's recurrent state (0: an attention layer); empty when all are
    /// attention.
    pub state_bytes_per_layer: Vec<u64>,
    /// KV bytes per cached token per layer (the cache holds `min(context, window)` tokens).
    pub kv_bytes_per_token_per_layer: f64,
    /// Activations of one prefill chunk plus logits.
    pub activations: u64,
    /// Fixed overhead.
    pub overhead: u64,
    /// Sum of the above.
    pub total: u64,
    /// Budget.
    pub budget: u64,
    /// Whether `total <= budget`.
    pub fits: bool,
    /// Longest context that fits; `None` when the rolling window keeps the cache constant and it
    /// fits (any context), `Some(0)` when not even the weights fit.
    pub max_context: Option<usize>,
}

/// Bytes one layer's [`crate::attn::KvCache`] allocates after `tokens` appended tokens, at the
/// peak of the rolling cycle (oldest block fully dead, one spare block kept).
pub fn kv_layer_bytes(
    kv_heads: usize,
    head_dim: usize,
    kind: KvKind,
    window: usize,
    sinks: usize,
    tokens: usize,
) -> u64 {
    let (h, d) = (kv_heads as u64, head_dim as u64);
    let sinks = if window > 0 { sinks.min(tokens) } else { 0 };
    let sink_bytes = if window > 0 {
        2 * 4 * h * d * sinks as u64
    } else {
        0
    };
    let recent_seen = tokens - sinks;
    let cap = if window > 0 {
        window - sinks.min(window)
    } else {
        usize::MAX
    };
    let rolled = recent_seen > cap;
    let recent = recent_seen.min(cap);
    let blocks_for = |n: usize, b: usize| {
        // +1 block for the dead prefix and +1 spare once the window has rolled.
        n.div_ceil(b) as u64 + if rolled { 2 } else { 0 }
    };
    let recent_bytes = match kind {
        KvKind::F32 | KvKind::F16 | KvKind::Bf16 => {
            let es = if kind == KvKind::F32 { 4 } else { 2 };
            blocks_for(recent, FLOAT_BLOCK) * 2 * es * h * d * FLOAT_BLOCK as u64
        }
        KvKind::Int4 { group, residual } => {
            let g = group as u64;
            let vg = group.min(head_dim) as u64;
            let block = h * (g * d + 4 * d + 4 * g * (d / vg));
            let tail = 2 * 4 * h * d * residual as u64;
            let quantised = if rolled {
                // The tail holds at least residual - group + 1 tokens.
                blocks_for(recent.saturating_sub(residual - group + 1), group)
            } else if recent_seen > residual {
                (recent_seen - residual).div_ceil(group) as u64
            } else {
                0
            };
            quantised * block + tail
        }
    };
    sink_bytes + recent_bytes
}

/// Plans `dims` for `opts`.
pub fn plan(dims: &ModelDims, opts: &PlanOptions) -> Result<Plan, PlanError> {
    if opts.window > 0 && opts.sinks >= opts.window {
        return Err(PlanError::Option {
            what: "sinks",
            why: format!(
                "{} sinks need a window above that, got {}",
                opts.sinks, opts.window
            ),
        });
    }
    let kv_at = |ctx: usize| {
        dims.kv_layers() as u64
            * kv_layer_bytes(
                dims.kv_heads,
                dims.head_dim,
                opts.kv,
                opts.window,
                opts.sinks,
                ctx,
            )
    };
    let weights = dims.weight_bytes();
    let vision = 4 * dims.vision_params;
    let activations = activation_bytes(dims, opts.prefill_chunk.min(opts.context.max(1)));
    let recurrent_state = dims.total_state_bytes();
    let fixed = weights + vision + activations + recurrent_state + opts.overhead;
    let kv_cache = kv_at(opts.context);
    let total = fixed + kv_cache;
    let fits = total <= opts.budget;
    let max_context =
        if opts.window > 0 && fixed + kv_at(opts.window.max(opts.context)) <= opts.budget {
            None
        } else if fixed + kv_at(1) > opts.budget {
            Some(0)
        } else {
            // Largest c with fixed + kv(c) <= budget (kv is non-decreasing in c).
            let (mut lo, mut hi) = (1usize, 1usize << 40);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if fixed + kv_at(mid) <= opts.budget {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            Some(lo)
        };
    Ok(Plan {
        preset: dims.name.into(),
        context: opts.context,
        window: opts.window,
        kv_kind: opts.kv.name(),
        weights,
        vision,
        kv_cache,
        kv_layers: dims.kv_layers(),
        recurrent_state,
        state_bytes_per_layer: dims.state_bytes.clone(),
        kv_bytes_per_token_per_layer: kv_cache as f64
            / (dims.kv_layers().max(1) as f64 * cached_tokens(opts).max(1) as f64),
        activations,
        overhead: opts.overhead,
        total,
        budget: opts.budget,
        fits,
        max_context,
    })
}

fn cached_tokens(opts: &PlanOptions) -> usize {
    match opts.window {
        0 => opts.context,
        w => opts.context.min(w),
    }
}

/// Live activations of one prefill chunk of `chunk` tokens in f32: residual stream, normed input,
/// attention output and FFN output (4 × hidden), q/k/v, gate and up (2 × intermediate), the int8
/// copies of BitLinear inputs (hidden + intermediate bytes), one row of logits, and the attention
/// kernel's per-tile state.
pub fn activation_bytes(dims: &ModelDims, chunk: usize) -> u64 {
    let per_token = 4
        * (4 * dims.hidden
            + (dims.heads + 2 * dims.kv_heads) * dims.head_dim
            + 2 * dims.intermediate)
        + dims.hidden
        + dims.intermediate;
    let attn_tiles = dims.heads * 64 * (dims.head_dim + 64 + 2) * 4;
    (chunk * per_token + 4 * dims.vocab + attn_tiles) as u64
}

/// Parses `16GiB`, `16G`, `8GB`, `512MiB`, `512MB`, `1000000` (bytes); GB is 10⁹, GiB 2³⁰.
pub fn parse_bytes(s: &str) -> Result<u64, PlanError> {
    let bad = || PlanError::BadBytes { input: s.into() };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let x: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024f64.powi(2),
        "mb" => 1e6,
        "g" | "gib" => 1024f64.powi(3),
        "gb" => 1e9,
        "t" | "tib" => 1024f64.powi(4),
        "tb" => 1e12,
        _ => return Err(bad()),
    };
    Ok((x * mult).round() as u64)
}

fn gb(b: u64) -> String {
    if b < 100_000_000 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else {
        format!("{:.2} GB", b as f64 / 1e9)
    }
}

/// Human-readable plan.
pub fn plan_report(dims: &ModelDims, opts: &PlanOptions) -> Result<String, PlanError> {
    let p = plan(dims, opts)?;
    let window = match p.window {
        0 => "full attention".to_string(),
        w => format!("{w}-token window, {} sinks", opts.sinks),
    };
    let mut s = format!(
        "plan for {} at {} tokens ({window}, {} KV cache)\n",
        p.preset, p.context, p.kv_kind
    );
    let rows = [
        ("weights", p.weights),
        ("vision encoder", p.vision),
        ("KV cache", p.kv_cache),
        ("recurrent state", p.recurrent_state),
        ("activations", p.activations),
        ("overhead", p.overhead),
        ("total", p.total),
        ("budget", p.budget),
    ];
    for (name, b) in rows {
        if name == "recurrent state" && p.state_bytes_per_layer.is_empty() {
            continue;
        }
        s += &format!("  {name:<16} {:>10}\n", gb(b));
    }
    s += &format!(
        "  KV per cached token per layer: {:.0} bytes; budget = {:.2} GiB\n",
        p.kv_bytes_per_token_per_layer,
        p.budget as f64 / (1u64 << 30) as f64
    );
    if !p.state_bytes_per_layer.is_empty() {
        s += &layer_lines(&p);
    }
    s += &match p.max_context {
        None => "  fits: any context (the rolling window keeps the KV cache constant)\n".into(),
        Some(0) => "  fits: nothing, the weights alone exceed the budget\n".into(),
        Some(c) => format!(
            "  fits: {} — longest context within budget: {c} tokens\n",
            if p.fits { "yes" } else { "no" }
        ),
    };
    if dims.name == "tritter-7b" {
        s += &roadmap_comparison();
    }
    Ok(s)
}

/// One line per layer of a hybrid model: its state or its KV cache at the planned context.
fn layer_lines(p: &Plan) -> String {
    let kv_layer = p.kv_cache / p.kv_layers.max(1) as u64;
    let recurrent = p.state_bytes_per_layer.iter().filter(|&&b| b > 0).count();
    let mut s = format!(
        "  per layer ({} with a KV cache, {recurrent} with a fixed state):\n",
        p.state_bytes_per_layer.len() - recurrent
    );
    for (l, &b) in p.state_bytes_per_layer.iter().enumerate() {
        s += &match b {
            0 => format!("    layer {l:>3}  attention   KV {:>10}\n", gb(kv_layer)),
            b => format!("    layer {l:>3}  recurrent   state {:>7}\n", gb(b)),
        };
    }
    s
}

/// [`plan`] as JSON.
pub fn plan_json(dims: &ModelDims, opts: &PlanOptions) -> Result<serde_json::Value, PlanError> {
    let p = plan(dims, opts)?;
    serde_json::to_value(&p).map_err(|e| PlanError::Option {
        what: "json",
        why: e.to_string(),
    })
}

/// ROADMAP.md's RTX 5080 table (7B, INT4 KV, 128K context, 4K window) beside this planner's
/// figures for `tritter-7b`, with the reason for every difference.
pub fn roadmap_comparison() -> String {
    let dims = ModelDims {
        vision_params: crate::multimodal::siglip_b16_params(4096),
        ..ModelDims::tritter_7b()
    };
    let mut o = PlanOptions::new(131_072);
    o.kv = KvKind::INT4;
    let full = plan(&dims, &o).ok();
    o.window = 4096;
    o.sinks = 4;
    let win = plan(&dims, &o).ok();
    let (Some(full), Some(win)) = (full, win) else {
        return String::new();
    };
    let ternary = dims.ternary_params() / 4;
    let mut s =
        String::from("\nROADMAP.md RTX 5080 table vs this planner (tritter-7b, INT4 KV):\n");
    s += &format!("  {:<34} {:>9} {:>10}\n", "component", "roadmap", "planner");
    let line =
        |name: &str, road: &str, ours: u64| format!("  {name:<34} {road:>9} {:>10}\n", gb(ours));
    s += &line("7B BitNet weights (ternary layers)", "1.4 GB", ternary);
    s += &line(
        "  + f16 embedding, norms, scales",
        "-",
        full.weights - ternary,
    );
    s += &line("SigLIP-B/16 + connector (f32)", "0.4 GB", full.vision);
    s += &line("INT4 KV, 128K tokens, no window", "~8.4 GB", full.kv_cache);
    s += &line("INT4 KV, 128K, 4K window + 4 sinks", "-", win.kv_cache);
    s += &line(
        "activations + overhead",
        "~2 GB",
        full.activations + full.overhead,
    );
    s += &line("total (full 128K cache)", "~12.2 GB", full.total);
    s += &line("total (4K window)", "-", win.total);
    s += "  differences: the roadmap's 8.4 GB equals 128,000 tokens x 32 layers x 2 (K,V) x 1024\n";
    s += "  channels (8 kv heads x 128) x 1 byte, i.e. 8 bits per element, and it ignores the\n";
    s += "  window; INT4 with f16 group scales costs 4.5 bits per element here, and with a 4K\n";
    s += &format!(
        "  window the cache holds only 4K tokens, so the KV line drops to {}. The roadmap\n",
        gb(win.kv_cache)
    );
    s +=
        "  counts only ternary weights (at log2(3) bits); embeddings stay f16 (BitNet keeps them\n";
    s += "  in high precision). Activations are one 512-token prefill chunk here; the roadmap's\n";
    s += "  2 GB also covers a CUDA context and framework caches, our 0.5 GiB overhead is a CPU one.\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_weights() {
        let d = ModelDims::tritter_7b();
        assert_eq!(d.heads * d.head_dim, d.hidden);
        // ROADMAP's 1.4 GB of ternary weights.
        let t = d.ternary_params() as f64 / 4.0 / 1e9;
        assert!((1.35..1.45).contains(&t), "{t}");
        let b = ModelDims::bitnet_2b4t();
        // BitNet b1.58 2B4T: ~2.08 G non-embedding parameters (its technical report: 2B).
        let p = b.ternary_params() as f64 / 1e9;
        assert!((2.0..2.2).contains(&p), "{p}");
        assert!(ModelDims::preset("nope").is_err());
    }

    #[test]
    fn parse_bytes_units() {
        assert_eq!(parse_bytes("16GiB").unwrap(), 16 << 30);
        assert_eq!(parse_bytes("8GB").unwrap(), 8_000_000_000);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("123").unwrap(), 123);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }

    #[test]
    fn kv_per_token_matches_hand_arithmetic() {
        // f16, full attention, whole blocks: 2 (K,V) × 8 heads × 128 × 2 bytes = 4096 per token.
        assert_eq!(
            kv_layer_bytes(8, 128, KvKind::F16, 0, 0, 64 * 100),
            4096 * 6400
        );
        // INT4 g64 per token: 8 × (128 codes + 4·128/64 key scales + 4·128/64 value scales) = 1152.
        let n = 128 + 64 * 1000;
        let tail = 2 * 4 * 8 * 128 * 128;
        assert_eq!(
            kv_layer_bytes(8, 128, KvKind::INT4, 0, 0, n),
            1152 * 64_000 + tail
        );
    }

    #[test]
    fn window_makes_kv_constant_and_context_unbounded() {
        let d = ModelDims::tritter_7b();
        let mut o = PlanOptions::new(131_072);
        o.kv = KvKind::INT4;
        o.window = 4096;
        o.sinks = 4;
        let a = plan(&d, &o).unwrap();
        o.context = 1 << 20;
        let b = plan(&d, &o).unwrap();
        assert_eq!(a.kv_cache, b.kv_cache);
        assert_eq!(b.max_context, None);
        assert!(b.fits);
        // Full attention f16 on 16 GiB: the longest context is finite and consistent.
        let mut o = PlanOptions::new(8192);
        o.budget = 16 << 30;
        let p = plan(&d, &o).unwrap();
        let c = p.max_context.unwrap();
        assert!(c > 8192 && c < 1 << 20, "{c}");
        o.context = c;
        assert!(plan(&d, &o).unwrap().fits);
        o.context = c + 64;
        assert!(!plan(&d, &o).unwrap().fits);
    }

    #[test]
    fn report_mentions_every_line_and_roadmap() {
        let r = plan_report(&ModelDims::tritter_7b(), &PlanOptions::new(4096)).unwrap();
        for w in [
            "weights",
            "vision encoder",
            "KV cache",
            "activations",
            "total",
            "roadmap",
        ] {
            assert!(r.contains(w), "{w} missing in\n{r}");
        }
        let j = plan_json(&ModelDims::tritter_tiny(), &PlanOptions::new(100)).unwrap();
        assert!(j["total"].as_u64().unwrap() > 0);
    }
}
