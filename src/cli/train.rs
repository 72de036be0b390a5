//! `tritter --train CONFIG [--resume] [--device cpu|cuda[:N]] [--set KEY=VALUE ...]`: prepares
//! the data when needed, trains, and prints a progress bar (loss, tok/s, ETA). Ctrl-C finishes
//! the current step, checkpoints and exits 0. The global `--device` flag overrides
//! `train.device`; a device that cannot be opened (e.g. `cuda` in a build without CUDA) fails
//! before anything is prepared or written, with one line naming the flag.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tritter_model::train::trainer::{device as config_device, open_device};
use tritter_model::train::{Event, Observer, TrainConfig, Trainer};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub(crate) fn install_sigint() {
    // SAFETY: the handler only stores to a static atomic, which is async-signal-safe; `signal`
    // is given a valid `extern "C"` function pointer of the required signature.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// glibc's allocator for a training run: no `mmap` for large blocks (`M_MMAP_MAX` = 0) and no
/// trimming of the heap's top (`M_TRIM_THRESHOLD` at its maximum), so the step's large tensors
/// (the logits and their gradient are 66 MB for `tritter-tiny`) reuse freed heap memory instead
/// of each being a fresh mapping that the kernel page-faults and zeroes again every step.
/// Memory freed during a run stays with the process until it exits. Left alone when the user
/// tuned glibc through its own `MALLOC_*` variables (`MALLOC_ARENA_MAX=8` alone keeps glibc's
/// defaults, dynamic mmap threshold included: how the A/B in docs/TRAINING.md was run); a no-op
/// off glibc.
pub(crate) fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = [
            "MALLOC_ARENA_MAX",
            "MALLOC_MMAP_MAX_",
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TOP_PAD_",
            "MALLOC_TRIM_THRESHOLD_",
        ]
        .iter()
        .any(|k| std::env::var_os(k).is_some());
        if !user_set {
            // SAFETY: `mallopt` only changes glibc's allocator parameters (it takes the arena
            // lock itself, so other threads may allocate meanwhile); both values are in the
            // documented ranges. Its return value (0 on a refused value) needs no handling:
            // the defaults stay.
            unsafe {
                libc::mallopt(libc::M_MMAP_MAX, 0);
                libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            }
        }
    }
}

/// Set by Ctrl-C once [`install_sigint`] ran: training loops finish their step and stop.
pub(crate) fn stop_flag() -> &'static AtomicBool {
    &STOP
}

struct Bar {
    bar: Option<ProgressBar>,
    last_val: Option<f64>,
}

impl Observer for Bar {
    fn event(&mut self, e: &Event) {
        match e {
            Event::Start {
                step,
                total,
                params,
            } => {
                let bar = ProgressBar::new(*total).with_style(
                    ProgressStyle::with_template(
                        "[{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_position(*step);
                bar.enable_steady_tick(Duration::from_millis(500));
                bar.println(format!(
                    "training {params} tensors from step {step} to {total}"
                ));
                self.bar = Some(bar);
            }
            Event::Step(r) => {
                if let Some(b) = &self.bar {
                    b.set_position(r.step);
                    let val = self
                        .last_val
                        .map_or(String::new(), |v| format!(" val {v:.3}"));
                    b.set_message(format!(
                        "loss {:.3}{val} lr {:.2e} {:.0} tok/s",
                        r.loss, r.lr, r.tokens_per_s
                    ));
                }
            }
            Event::Eval(r) => {
                self.last_val = Some(r.val_loss);
                self.println(format!(
                    "step {}: val loss {:.4}, perplexity {:.2}",
                    r.step, r.val_loss, r.val_ppl
                ));
            }
            Event::Checkpoint { step, dir } => {
                self.println(format!("step {step}: checkpoint {}", dir.display()))
            }
            Event::Note(s) => self.println(s.clone()),
        }
    }
}

impl Bar {
    fn println(&self, s: String) {
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(s),
            _ => eprintln!("{s}"),
        }
    }
}

/// Reads a training config of any task: TOML with `--set KEY=VALUE` overrides applied, read
/// into `T`; errors name the file in one line. Returns the config and a resolver that makes
/// relative paths relative to the file's folder.
pub fn read_config<T: serde::de::DeserializeOwned>(
    path: &Path,
    overrides: &[String],
) -> anyhow::Result<(T, impl Fn(&Path) -> std::path::PathBuf)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: invalid TOML", path.display()))?;
    for o in overrides {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--set `{o}`: expected KEY=VALUE"))?;
        tritter_model::train::config::apply_override(&mut table, k.trim(), v.trim())?;
    }
    let cfg = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            anyhow::anyhow!(
                "{}: {}",
                path.display(),
                e.to_string().trim().replace('\n', " ")
            )
        })?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let resolve = move |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    Ok((cfg, resolve))
}

/// The `task` key of a training config: `text` (the default), `image_text`, `audio_text`,
/// `vqvae`, `codec` or `latent`.
pub fn task_of(config: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: invalid TOML", config.display()))?;
    Ok(match table.get("task") {
        None => "text".into(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => anyhow::bail!("{}: task = {v} is not a string", config.display()),
    })
}

/// Run `--train`; `device` is the `--device` flag, which replaces `train.device`.
pub fn train(
    config: &Path,
    overrides: &[String],
    resume: bool,
    device: Option<&str>,
) -> anyhow::Result<()> {
    let mut cfg = TrainConfig::load(config, overrides)?;
    let device = match device {
        Some(name) => {
            let d = open_device(name, &format!("--device {name}"))?;
            cfg.train.device = name.to_string();
            d
        }
        None => config_device(&cfg.train.device)?,
    };
    // manifest.json is the data pipeline's last file: without it the data is incomplete (a
    // run killed while preparing it) and is prepared again.
    if !cfg.run.dir.join("data").join("manifest.json").is_file() {
        eprintln!("preparing data in {}", cfg.run.dir.join("data").display());
        crate::cli::prepare::run_pipeline(&cfg.data, &cfg.run.dir)?;
    }
    std::fs::create_dir_all(&cfg.run.dir)
        .with_context(|| format!("creating {}", cfg.run.dir.display()))?;
    let effective = toml::to_string(&cfg).context("serialising the effective config")?;
    std::fs::write(cfg.run.dir.join("config.toml"), effective)
        .with_context(|| format!("writing {}", cfg.run.dir.display()))?;
    install_sigint();
    let mut trainer = Trainer::new_on(cfg, resume, device)?;
    let mut bar = Bar {
        bar: None,
        last_val: None,
    };
    let out = trainer.run(&mut bar, &STOP, None)?;
    if let Some(b) = &bar.bar {
        b.finish();
    }
    eprintln!(
        "{} steps, {:.0} tokens/s this run{}",
        out.step,
        out.tokens_per_s,
        out.val_loss.map_or(String::new(), |v| format!(
            ", val loss {v:.4} (ppl {:.2})",
            v.exp()
        ))
    );
    if let Some(d) = out.final_dir {
        eprintln!("model: {}", d.display());
    }
    Ok(())
}

/// Run `--train CONFIG --plot`: redraw `loss.png` of the run directory.
pub fn plot(config: &Path, overrides: &[String]) -> anyhow::Result<()> {
    let cfg = TrainConfig::load(config, overrides)?;
    if !tritter_model::train::plot::plot_run(&cfg.run.dir)? {
        anyhow::bail!(
            "{}: no training rows to plot",
            cfg.run.dir.join("metrics.jsonl").display()
        );
    }
    eprintln!("wrote {}", cfg.run.dir.join("loss.png").display());
    Ok(())
}
