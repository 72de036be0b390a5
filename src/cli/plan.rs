//! `tritter plan --preset NAME --context N [--budget 16GiB] [--window W] [--kv KIND] [--json]
//! [--gpu]`: the memory planner (`tritter_model::plan`, or `plan_gpu` for the CUDA build's GPU
//! memory with `--gpu`) on the command line. With a window, 4 attention sinks are planned
//! (StreamingLLM's choice, as the inference caches use). `--gpu` also shows the cache
//! `--device cuda` would choose on a card with the budget's memory (`plan_gpu::fit`).

use anyhow::{Context, Result};
use tritter_model::attn::KvKind;
use tritter_model::plan::{parse_bytes, plan_json, plan_report, ModelDims, PlanOptions};
use tritter_model::plan_gpu::{
    fit, gpu_plan, FitError, GpuFit, GpuFitRequest, GpuKvKind, GpuPlanOptions, GPU_CONTEXT_BYTES,
    GPU_HEADROOM_BYTES,
};

/// Options of `tritter plan` as given on the command line.
#[derive(Debug, Clone)]
pub struct PlanArgs {
    /// A preset name; `None` plans the checkpoint `model`.
    pub preset: Option<String>,
    pub model: Option<std::path::PathBuf>,
    /// `siglip-b16`: add that tower (and its connector) to the plan.
    pub vision: Option<String>,
    pub context: usize,
    pub budget: String,
    pub window: usize,
    pub kv: String,
    pub json: bool,
    pub gpu: bool,
}

/// The planner's options for these arguments.
pub fn options(a: &PlanArgs) -> Result<PlanOptions> {
    let mut o = PlanOptions::new(a.context);
    o.budget = parse_bytes(&a.budget).with_context(|| format!("--budget {}", a.budget))?;
    o.window = a.window;
    o.sinks = if a.window > tritter_model::infer::DEFAULT_SINKS {
        tritter_model::infer::DEFAULT_SINKS
    } else {
        0
    };
    o.kv = KvKind::parse(&a.kv).with_context(|| format!("--kv {}", a.kv))?;
    Ok(o)
}

/// The cache `--device cuda` would choose on a card with `budget` bytes (less the CUDA
/// context): `plan_gpu::fit` at this kind, window and context.
fn gpu_choice(
    dims: &ModelDims,
    budget: u64,
    kv: GpuKvKind,
    a: &PlanArgs,
) -> Result<GpuFit, FitError> {
    let req = GpuFitRequest {
        kv,
        window: a.window,
        context: a.context,
        chunk: 512,
        head_f16: true,
    };
    fit(dims, budget.saturating_sub(GPU_CONTEXT_BYTES), &req)
}

/// The GPU plan: weights, head, KV cache, scratch, CUDA context, against the budget; and what
/// `--device cuda` would choose on a card of that size.
fn render_gpu(a: &PlanArgs, dims: &ModelDims) -> Result<String> {
    let budget = parse_bytes(&a.budget).with_context(|| format!("--budget {}", a.budget))?;
    let kv = GpuKvKind::parse(&a.kv)
        .with_context(|| format!("--kv {}: the GPU cache is f32, f16 or int4", a.kv))?;
    let o = GpuPlanOptions {
        kv,
        window: a.window,
        chunk: 512,
        context: a.context,
        head_f16: true,
    };
    let p = gpu_plan(dims, &o);
    let total = p.total + GPU_CONTEXT_BYTES;
    let fits = total <= budget;
    let choice = gpu_choice(dims, budget, kv, a);
    if a.json {
        let choice = match &choice {
            Ok(f) => serde_json::to_value(f)?,
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        return Ok(serde_json::to_string(&serde_json::json!({
            "preset": dims.name,
            "device": "cuda",
            "context": a.context,
            "window": a.window,
            "kv_kind": format!("{kv:?}"),
            "weights": p.weights,
            "head": p.head,
            "kv_cache": p.kv_cache,
            "scratch": p.scratch,
            "cuda_context": GPU_CONTEXT_BYTES,
            "headroom": GPU_HEADROOM_BYTES,
            "total": total,
            "budget": budget,
            "fits": fits,
            "choice": choice,
        }))?);
    }
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let choice = match choice {
        Ok(f) => format!(
            "--device cuda on this card: {} (free: after the {:.3} GiB CUDA context; {:.3} GiB \
             kept as headroom)",
            f.summary(),
            gib(GPU_CONTEXT_BYTES),
            gib(GPU_HEADROOM_BYTES)
        ),
        Err(e) => format!("--device cuda on this card: refused: {e}"),
    };
    Ok(format!(
        "{} on a GPU, context {} (window {}), {kv:?} KV cache, f16 head:\n  ternary weights + norms {:>8.3} GiB\n  LM head (f16)           {:>8.3} GiB\n  KV cache                {:>8.3} GiB\n  scratch (512-token pass){:>8.3} GiB\n  CUDA context            {:>8.3} GiB\n  total                   {:>8.3} GiB of {:.3} GiB: {}\n{choice}\n",
        dims.name,
        a.context,
        a.window,
        gib(p.weights),
        gib(p.head),
        gib(p.kv_cache),
        gib(p.scratch),
        gib(GPU_CONTEXT_BYTES),
        gib(total),
        gib(budget),
        if fits { "fits" } else { "does not fit" }
    ))
}

/// The plan as text or one JSON object.
/// The dimensions to plan: a preset, or a checkpoint's config with its image path's size; plus
/// an explicit `--vision` tower.
pub fn dims(a: &PlanArgs) -> Result<ModelDims> {
    let mut d = match (&a.preset, &a.model) {
        (Some(p), _) => ModelDims::preset(p).with_context(|| format!("--preset {p}"))?,
        (None, Some(dir)) => {
            let cfg = tritter_model::Config::from_json_file(&dir.join("config.json"))
                .with_context(|| format!("--model {}", dir.display()))?;
            let vision = tritter_model::multimodal::VisionPart::load(
                dir,
                cfg.hidden_size,
                &candle_core::Device::Cpu,
            )
            .with_context(|| format!("--model {}: its image path", dir.display()))?;
            ModelDims {
                vision_params: vision.map_or(0, |v| v.param_count() as u64),
                ..ModelDims::from_config(&cfg)
            }
        }
        (None, None) => anyhow::bail!("plan: give --preset NAME or --model DIR"),
    };
    match a.vision.as_deref() {
        None => {}
        Some("siglip-b16") => {
            d.vision_params = tritter_model::multimodal::siglip_b16_params(d.hidden);
        }
        Some(other) => anyhow::bail!("--vision {other}: the known tower is siglip-b16"),
    }
    Ok(d)
}

pub fn render(a: &PlanArgs) -> Result<String> {
    let dims = dims(a)?;
    if a.gpu {
        return render_gpu(a, &dims);
    }
    let o = options(a)?;
    Ok(if a.json {
        serde_json::to_string(&plan_json(&dims, &o)?)?
    } else {
        plan_report(&dims, &o)?
    })
}

/// Prints the plan.
pub fn run(a: &PlanArgs) -> Result<()> {
    let s = render(a)?;
    if a.json {
        println!("{s}");
    } else {
        print!("{s}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(preset: &str, window: usize, kv: &str) -> PlanArgs {
        PlanArgs {
            preset: Some(preset.into()),
            model: None,
            vision: None,
            context: 131_072,
            budget: "16GiB".into(),
            window,
            kv: kv.into(),
            json: true,
            gpu: false,
        }
    }

    #[test]
    fn the_image_path_is_counted_only_when_asked_for_or_present() {
        let plain: serde_json::Value =
            serde_json::from_str(&render(&args("tritter-7b", 0, "int4")).unwrap()).unwrap();
        assert_eq!(plain["vision"], 0);
        let mut a = args("tritter-7b", 0, "int4");
        a.vision = Some("siglip-b16".into());
        let v: serde_json::Value = serde_json::from_str(&render(&a).unwrap()).unwrap();
        let want = 4 * tritter_model::multimodal::siglip_b16_params(4096);
        assert_eq!(v["vision"], want);
        assert_eq!(
            v["total"].as_u64().unwrap() - plain["total"].as_u64().unwrap(),
            want
        );
        a.vision = Some("vit-huge".into());
        assert!(render(&a).unwrap_err().to_string().contains("siglip-b16"));
    }

    #[test]
    fn gpu_plan_is_the_library_plan_plus_the_cuda_context() {
        let mut a = args("bitnet-b1.58-2b4t", 4096, "int4");
        a.gpu = true;
        let v: serde_json::Value = serde_json::from_str(&render(&a).unwrap()).unwrap();
        let want = gpu_plan(
            &ModelDims::bitnet_2b4t(),
            &GpuPlanOptions {
                kv: GpuKvKind::Int4,
                window: 4096,
                chunk: 512,
                context: 131_072,
                head_f16: true,
            },
        );
        assert_eq!(v["kv_cache"].as_u64(), Some(want.kv_cache));
        assert_eq!(v["total"].as_u64(), Some(want.total + GPU_CONTEXT_BYTES));
        assert_eq!(v["fits"], true);
        a.kv = "q8".into();
        let e = render(&a).unwrap_err().to_string();
        assert!(e.contains("--kv q8"), "{e}");
    }

    #[test]
    fn json_plan_matches_the_library_planner() {
        let a = args("tritter-7b", 4096, "int4");
        let v: serde_json::Value = serde_json::from_str(&render(&a).unwrap()).unwrap();
        let mut o = PlanOptions::new(131_072);
        o.window = 4096;
        o.sinks = 4;
        o.kv = KvKind::INT4;
        let want = tritter_model::plan::plan(&ModelDims::tritter_7b(), &o).unwrap();
        assert_eq!(v["kv_cache"].as_u64(), Some(want.kv_cache));
        assert_eq!(v["total"].as_u64(), Some(want.total));
        assert_eq!(v["budget"].as_u64(), Some(16 << 30));
        assert_eq!(v["window"].as_u64(), Some(4096));
    }

    #[test]
    fn bad_arguments_name_the_flag() {
        let e = render(&args("nope", 0, "f16")).unwrap_err();
        assert!(format!("{e:#}").contains("--preset nope"), "{e:#}");
        let e = render(&args("tritter-tiny", 0, "int3")).unwrap_err();
        assert!(format!("{e:#}").contains("--kv int3"), "{e:#}");
        let mut a = args("tritter-tiny", 0, "f16");
        a.budget = "lots".into();
        assert!(format!("{:#}", render(&a).unwrap_err()).contains("--budget lots"));
    }

    #[test]
    fn text_plan_names_the_preset() {
        let mut a = args("tritter-tiny", 0, "f16");
        a.json = false;
        assert!(render(&a).unwrap().contains("tritter-tiny"));
    }

    /// Item 4 of issue #19: on a 16 GiB RTX 5080, 2B4T and tritter-7b at 128K get the INT4
    /// cache over the whole context (the figures `plan_gpu`'s tests derive by hand).
    #[test]
    fn gpu_plan_shows_the_choice_for_a_16_gib_card() {
        for (preset, total) in [
            ("bitnet-b1.58-2b4t", 7_102_230_528u64),
            ("tritter-7b", 11_797_884_928),
        ] {
            let mut a = args(preset, 0, "int4");
            a.gpu = true;
            let v: serde_json::Value = serde_json::from_str(&render(&a).unwrap()).unwrap();
            let c = &v["choice"];
            assert_eq!(c["kv"], "Int4", "{preset}: {v}");
            assert_eq!(c["context"], 131_072, "{preset}");
            assert_eq!(c["window"], 0, "{preset}");
            assert_eq!(c["shortened"], false, "{preset}");
            assert_eq!(c["plan"]["total"], total, "{preset}");
            assert_eq!(c["free"], (16u64 << 30) - GPU_CONTEXT_BYTES, "{preset}");
            a.json = false;
            let text = render(&a).unwrap();
            assert!(
                text.contains("--device cuda on this card: int4 KV, 131072 ctx"),
                "{text}"
            );
        }
        let mut a = args("tritter-7b", 0, "int4");
        a.gpu = true;
        a.budget = "2GiB".into();
        let v: serde_json::Value = serde_json::from_str(&render(&a).unwrap()).unwrap();
        let e = v["choice"]["error"].as_str().unwrap();
        assert!(
            e.contains("weights alone") && e.contains("not loaded"),
            "{e}"
        );
    }
}
