//! `tritter bench repomap`: how long the repo map takes to build and how large it is, on the
//! current folder and on a synthetic 1,000-file tree generated into a temporary folder (removed
//! afterwards): a cold build, a rebuild with nothing changed, a rebuild after one file changed,
//! and ranking + rendering at the default budget. Tokens are estimated as bytes / 4 here (the
//! app counts them with the model's tokenizer).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::repomap::{build::build, render::snippet, synth};

/// The budget measured, the config's default.
const BUDGET: usize = 1024;

fn estimate(t: &str) -> usize {
    t.len().div_ceil(4)
}

/// Builds, rebuilds and renders the map of `dir`; `edit` changes one file between rebuilds.
fn measure(dir: &Path, edit: Option<&dyn Fn() -> std::io::Result<()>>) -> Result<Value> {
    let (tags, cold) = build(dir, None)?;
    let (tags, warm) = build(dir, Some(&tags))?;
    let edited = match edit {
        Some(f) => {
            f().context("editing a file of the synthetic tree")?;
            let (_, s) = build(dir, Some(&tags))?;
            json!({"ms": s.total_ms, "parsed": s.parsed})
        }
        None => Value::Null,
    };
    let t = Instant::now();
    let map = snippet(&tags, "", &estimate, BUDGET);
    let render_ms = t.elapsed().as_secs_f64() * 1e3;
    let text = map.as_ref().map_or("", |m| m.text.as_str());
    Ok(json!({
        "files": cold.files,
        "skipped": cold.skipped,
        "too_large": cold.too_large,
        "definitions": cold.defs,
        "references": cold.refs,
        "cold_build_ms": cold.total_ms,
        "cold_walk_ms": cold.walk_ms,
        "cold_parse_ms": cold.parse_ms,
        "unchanged_rebuild_ms": warm.total_ms,
        "unchanged_rebuild_parsed": warm.parsed,
        "one_file_changed_rebuild": edited,
        "rank_render_ms": render_ms,
        "map_budget_tokens": BUDGET,
        "map_bytes": text.len(),
        "map_tokens_estimate": estimate(text),
        "map_rows": text.lines().filter(|l| l.starts_with("  ")).count(),
    }))
}

/// The report: this folder and a synthetic tree of `files` files.
pub fn repomap_report(files: usize) -> Result<Value> {
    let cwd = std::env::current_dir().context("the current folder")?;
    let here = measure(&cwd, None)?;
    let tmp = std::env::temp_dir().join(format!("tritter-repomap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| {
        synth::repo(&tmp, files).context("writing the synthetic tree")?;
        let target = tmp.join("pkg_0/mod_1.rs");
        let edit = || {
            let mut s = std::fs::read_to_string(&target)?;
            s.push_str("\npub fn edited_here() -> u64 { item_0(1) }\n");
            std::fs::write(&target, s)
        };
        measure(&tmp, Some(&edit))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(
        json!({"threads": cpu, "this_folder": here, "synthetic": {"files_generated": files, "map": result?}}),
    )
}
