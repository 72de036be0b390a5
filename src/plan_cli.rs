//! `tritter plan --preset NAME --context N [--budget 16GiB] [--window W] [--kv KIND] [--json]`:
//! the memory planner (`tritter_model::plan`) on the command line. With a window, 4 attention
//! sinks are planned (StreamingLLM's choice, as the inference cache uses).

use anyhow::{Context, Result};
use tritter_model::attn::KvKind;
use tritter_model::plan::{parse_bytes, plan_json, plan_report, ModelDims, PlanOptions};

/// Options of `tritter plan` as given on the command line.
#[derive(Debug, Clone)]
pub struct PlanArgs {
    pub preset: String,
    pub context: usize,
    pub budget: String,
    pub window: usize,
    pub kv: String,
    pub json: bool,
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

/// The plan as text or one JSON object.
pub fn render(a: &PlanArgs) -> Result<String> {
    let dims = ModelDims::preset(&a.preset).with_context(|| format!("--preset {}", a.preset))?;
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
            preset: preset.into(),
            context: 131_072,
            budget: "16GiB".into(),
            window,
            kv: kv.into(),
            json: true,
        }
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
}
