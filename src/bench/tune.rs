//! `tritter bench tune [--json] [--threads N]`: measures, on this machine, how far ahead the
//! weight-streaming kernels (the one-token ternary GEMV tiles and the LM-head row dots) should
//! prefetch, and caches the winner in `tuning.json` of the cache folder
//! (`config::cache_dir`), which every later run installs at start ([`apply_cached`]) in place of
//! the CPU's default (`tritter_kernels::tuning`; `TRITTER_PREFETCH_BYTES` still overrides both).
//!
//! The workload is decode's: 2B4T-shaped FFN matrices (6912 × 2560 and 2560 × 6912, several
//! times the last-level cache in copies, each read once per pass) and an f16 head of 32768 ×
//! 2560 on huge pages where the system gives them, as the model's are. Every candidate distance
//! runs in every round, the order rotated round by round; a candidate's figure is the median over
//! rounds of its speed relative to the CPU's default *in the same round* (the machines are
//! shared and noisy: only ratios within a round mean anything). A candidate replaces the default
//! only when that median gain is at least [`MIN_GAIN`]; otherwise the default is cached, so a
//! noisy sweep does not move a measured default. The report's `host.tuning` is what this run
//! started with (an earlier cache, if any); `chosen_prefetch_bytes` is what later runs get.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use half::f16;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tritter_kernels::tuning::{cpu_default_prefetch_bytes, install_tuned, set_sweep_prefetch};
use tritter_kernels::{gemv, HugeBuf, TernaryMatrix};

use crate::bench::host::CpuKey;

/// Distances swept, in bytes (0: no software prefetch).
pub const CANDIDATES: [usize; 6] = [0, 1024, 2048, 4096, 8192, 16384];

/// Smallest median speed gain over the CPU's default for which a measured distance is chosen.
pub const MIN_GAIN: f64 = 1.03;

/// Version of the cache file's format.
const VERSION: u32 = 1;

/// The cache file's name in the cache folder.
const FILE: &str = "tuning.json";

/// What `bench tune` caches: the distance, and the machine it was measured on (a cache shared
/// by several machines, e.g. a home folder on a network drive, applies only where it was made).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunedFile {
    pub version: u32,
    pub cpu: CpuKey,
    pub prefetch_bytes: usize,
    /// Median speed of the chosen distance over the CPU's default in the sweep (1 when the
    /// default was kept).
    pub gain_over_default: f64,
    pub threads: usize,
}

/// The sweep's sizes.
struct TuneConfig {
    /// Bytes of packed FFN matrices read per pass (copies of the two shapes, alternated).
    stream_bytes: usize,
    /// Rows of the f16 head (2560 columns).
    head_rows: usize,
    /// FFN width (2B4T: 6912) and model width (2560).
    ffn: usize,
    width: usize,
    /// Rounds; each candidate's time in a round is its best of `passes` passes.
    rounds: usize,
    passes: usize,
}

impl TuneConfig {
    /// The published sweep: 256 MiB of FFN matrices and a 168 MB head per pass, 15 rounds (a few
    /// seconds).
    fn full() -> Self {
        Self {
            stream_bytes: 256 << 20,
            head_rows: 32_768,
            ffn: 6912,
            width: 2560,
            rounds: 15,
            passes: 3,
        }
    }
}

/// The cache file's path.
pub fn cache_file() -> Result<PathBuf> {
    Ok(crate::config::cache_dir()?.join(FILE))
}

/// Installs the cached distance when the cache was made on this CPU (nothing when there is no
/// cache, when it was made on another CPU, or when `TRITTER_PREFETCH_BYTES` is set, which wins
/// anyway). Returns a one-line warning for a cache that cannot be read; the run goes on with the
/// CPU's default.
pub fn apply_cached() -> Option<String> {
    if std::env::var_os(tritter_kernels::tuning::PREFETCH_VAR).is_some() {
        return None;
    }
    let path = cache_file().ok()?;
    match load(&path) {
        Ok(Some(t)) if t.cpu == CpuKey::current() => {
            install_tuned(t.prefetch_bytes);
            None
        }
        Ok(_) => None,
        Err(e) => Some(format!(
            "ignoring the tuning cache (run `tritter bench tune` to remake it): {e:#}"
        )),
    }
}

/// Reads a cache file: `None` when there is none.
pub fn load(path: &Path) -> Result<Option<TunedFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let t: TunedFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a tuning file", path.display()))?;
    anyhow::ensure!(
        t.version == VERSION,
        "{} has format version {}, this build reads {VERSION}",
        path.display(),
        t.version
    );
    anyhow::ensure!(
        t.prefetch_bytes <= tritter_kernels::tuning::MAX_PREFETCH_BYTES,
        "{}: prefetch_bytes {} is past the largest distance, {}",
        path.display(),
        t.prefetch_bytes,
        tritter_kernels::tuning::MAX_PREFETCH_BYTES
    );
    Ok(Some(t))
}

/// Writes a cache file atomically, creating its folder.
pub fn save(path: &Path, t: &TunedFile) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(t)?;
    crate::files::write_atomic(path, &tmp, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The choice from per-round times (`times[round][candidate]`, seconds): each candidate's median
/// speed relative to candidate `default` in the same round, and the index chosen — the fastest
/// by that median when it gains at least [`MIN_GAIN`], else `default`.
pub fn pick(times: &[Vec<f64>], default: usize) -> (usize, Vec<f64>) {
    let n = times.first().map_or(0, Vec::len);
    let medians: Vec<f64> = (0..n)
        .map(|c| median(times.iter().map(|r| r[default] / r[c]).collect()))
        .collect();
    let best = (0..n)
        .max_by(|&a, &b| medians[a].total_cmp(&medians[b]))
        .unwrap_or(default);
    let chosen = if medians.get(best).is_some_and(|&m| m >= MIN_GAIN) {
        best
    } else {
        default
    };
    (chosen, medians)
}

/// The median of `v` (the mean of the middle two for an even count; NaN when empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The decode-like pass the sweep times: every FFN copy once, then the head; with the pass's
/// activations and outputs made once, so a pass times only the kernels.
struct Workload {
    ffn: Vec<TernaryMatrix>,
    head: HugeBuf<f16>,
    /// int8 activations and i32 outputs for the widest FFN matrix (sliced per shape).
    x8: Vec<i8>,
    y: Vec<i32>,
    /// The head's f32 activations and logits.
    xf: Vec<f32>,
    logits: Vec<f32>,
}

impl Workload {
    fn new(cfg: &TuneConfig) -> Result<Self> {
        let shapes = [(cfg.ffn, cfg.width), (cfg.width, cfg.ffn)];
        let mats = shapes
            .iter()
            .map(|&(n, k)| crate::bench::kernels::random_ternary(n, k))
            .collect::<Result<Vec<_>>>()?;
        let each = mats.iter().map(TernaryMatrix::packed_bytes).sum::<usize>();
        let copies = (cfg.stream_bytes / each.max(1)).max(1);
        let ffn = (0..copies).flat_map(|_| mats.iter().cloned()).collect();
        let mut head = HugeBuf::filled(f16::ZERO, cfg.head_rows * cfg.width)?;
        for (i, w) in head.iter_mut().enumerate() {
            *w = f16::from_f32(((i * 7919 % 1013) as f32 - 506.0) / 4096.0);
        }
        let wide = cfg.ffn.max(cfg.width);
        Ok(Self {
            ffn,
            head,
            x8: (0..wide)
                .map(|i| ((i * 31 % 255) as i32 - 127) as i8)
                .collect(),
            y: vec![0; wide],
            xf: (0..cfg.width).map(|i| (i % 17) as f32 / 17.0).collect(),
            logits: vec![0.0; cfg.head_rows],
        })
    }

    fn bytes(&self) -> usize {
        self.ffn
            .iter()
            .map(TernaryMatrix::packed_bytes)
            .sum::<usize>()
            + 2 * self.head.len()
    }

    /// One pass; returns its wall time in seconds.
    fn pass(&mut self) -> Result<f64> {
        let start = Instant::now();
        for w in &self.ffn {
            gemv(w, &self.x8[..w.k()], &mut self.y[..w.n()])?;
            std::hint::black_box(&self.y);
        }
        tritter_kernels::head::gemv_f16(&self.head, &self.xf, &mut self.logits)?;
        std::hint::black_box(&self.logits);
        Ok(start.elapsed().as_secs_f64())
    }
}

/// Runs the sweep on `threads` threads and caches the choice in `cache` (when given); returns
/// the report.
fn sweep(cfg: &TuneConfig, threads: usize, cache: Option<&Path>) -> Result<Value> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .context("building the benchmark thread pool")?;
    let default = cpu_default_prefetch_bytes();
    let mut cands = CANDIDATES.to_vec();
    if !cands.contains(&default) {
        cands.push(default);
    }
    let d = cands.iter().position(|&c| c == default).unwrap_or(0);
    let mut work = Workload::new(cfg)?;
    let times = pool.install(|| -> Result<Vec<Vec<f64>>> {
        work.pass()?; // warm-up: page faults, thread start
        let mut times = Vec::new();
        for r in 0..cfg.rounds {
            let mut row = vec![0.0; cands.len()];
            for i in 0..cands.len() {
                let c = (r + i) % cands.len();
                set_sweep_prefetch(Some(cands[c]));
                let mut best = f64::INFINITY;
                for _ in 0..cfg.passes.max(1) {
                    best = best.min(work.pass()?);
                }
                row[c] = best;
            }
            times.push(row);
        }
        Ok(times)
    });
    set_sweep_prefetch(None);
    let times = times?;
    let (chosen, medians) = pick(&times, d);
    let bytes = work.bytes();
    let rows: Vec<Value> = cands
        .iter()
        .enumerate()
        .map(|(c, &b)| {
            let gbps = median(times.iter().map(|r| bytes as f64 / r[c] / 1e9).collect());
            json!({"prefetch_bytes": b, "gbps_median": gbps, "speed_vs_default_median": medians[c]})
        })
        .collect();
    let tuned = TunedFile {
        version: VERSION,
        cpu: CpuKey::current(),
        prefetch_bytes: cands[chosen],
        gain_over_default: medians[chosen],
        threads,
    };
    if let Some(path) = cache {
        save(path, &tuned)?;
    }
    Ok(json!({
        "threads": threads,
        "rounds": cfg.rounds,
        "bytes_per_pass": bytes,
        "min_gain": MIN_GAIN,
        "cpu_default_prefetch_bytes": default,
        "candidates": rows,
        "chosen_prefetch_bytes": tuned.prefetch_bytes,
        "gain_over_default": tuned.gain_over_default,
        "cache_file": cache.map(|p| p.display().to_string()),
        "override_set": std::env::var_os(tritter_kernels::tuning::PREFETCH_VAR).is_some(),
    }))
}

/// `bench tune`: the full sweep, cached in [`cache_file`].
pub fn tune_report(threads: usize) -> Result<Value> {
    let path = cache_file()?;
    sweep(&TuneConfig::full(), threads, Some(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clear_winner_is_chosen_and_noise_keeps_the_default() {
        // Candidate 2 is 1.5x faster than the default (0) in every round but one.
        let times = vec![
            vec![3.0, 2.9, 2.0, 3.1],
            vec![3.0, 3.1, 2.0, 2.9],
            vec![3.0, 3.0, 3.3, 3.0],
        ];
        let (c, med) = pick(&times, 0);
        assert_eq!(c, 2);
        assert!((med[2] - 1.5).abs() < 1e-12, "{med:?}");
        assert_eq!(med[0], 1.0);
        // Gains under MIN_GAIN (1-2%) leave the default, wherever it is.
        let times = vec![vec![1.0, 0.99, 1.0], vec![1.0, 0.98, 1.01]];
        assert_eq!(pick(&times, 2).0, 2);
        assert_eq!(pick(&times, 0).0, 0);
    }

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn a_cache_file_round_trips_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(FILE);
        assert_eq!(load(&path).unwrap(), None);
        let t = TunedFile {
            version: VERSION,
            cpu: CpuKey::current(),
            prefetch_bytes: 2048,
            gain_over_default: 1.2,
            threads: 2,
        };
        save(&path, &t).unwrap();
        assert_eq!(load(&path).unwrap(), Some(t.clone()));
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, "{not json").unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("is not a tuning file"), "{e}");
        let mut bad = serde_json::to_value(&t).unwrap();
        bad["version"] = json!(99);
        std::fs::write(&path, bad.to_string()).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("format version 99"), "{e}");
        bad["version"] = json!(VERSION);
        bad["prefetch_bytes"] = json!(1u64 << 40);
        std::fs::write(&path, bad.to_string()).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("past the largest distance"), "{e}");
    }

    /// A small sweep end to end: every candidate timed, the choice one of them, the file written
    /// with this CPU's key.
    #[test]
    fn a_small_sweep_times_every_candidate_and_caches_its_choice() {
        let cfg = TuneConfig {
            stream_bytes: 1 << 20,
            head_rows: 256,
            ffn: 256,
            width: 128,
            rounds: 2,
            passes: 1,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let r = sweep(&cfg, 2, Some(&path)).unwrap();
        let rows = r["candidates"].as_array().unwrap();
        assert!(rows.len() >= CANDIDATES.len());
        for row in rows {
            assert!(row["gbps_median"].as_f64().unwrap() > 0.0, "{row}");
        }
        let t = load(&path).unwrap().unwrap();
        assert_eq!(t.cpu, CpuKey::current());
        assert_eq!(json!(t.prefetch_bytes), r["chosen_prefetch_bytes"]);
        assert!(rows
            .iter()
            .any(|x| x["prefetch_bytes"] == json!(t.prefetch_bytes)));
    }
}
