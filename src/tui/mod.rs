//! The interactive terminal: [`run`] sets up (config, theme, engine, worker thread, the app, a
//! resumed session), enters the terminal (`terminal`), starts the input thread, runs the event
//! loop (`event_loop`) and tears down (cancel the reply, restore the terminal, write the latency
//! log, stop the worker). The app's state and logic are in `app`; drawing is in `ui`.

pub mod app;
pub mod clipboard;
pub mod codepane;
mod event_loop;
pub mod highlight;
mod jobs;
mod latency;
pub mod markdown;
pub mod outline;
pub mod session;
pub mod slash;
pub mod terminal;
pub mod theme;
pub mod ui;

#[cfg(test)]
mod ui_map_tests;
#[cfg(test)]
mod ui_tests;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Sender};

use crate::config::Config;
use crate::engine::factory::{self, EngineOptions};
use crate::engine::worker::Worker;
use app::{App, Paths};
use event_loop::AppEvent;
use theme::Theme;

/// Writes keystroke-to-frame latency figures here at exit (measurement, see docs/TUI.md).
pub const LATENCY_LOG_VAR: &str = "TRITTER_LATENCY_LOG";

/// What the TUI starts with: `--model`, `--device`, `--theme`, `--resume` (each overrides
/// `config.toml`).
#[derive(Debug, Clone, Default)]
pub struct TuiOptions {
    pub model_dir: Option<std::path::PathBuf>,
    pub device: Option<String>,
    pub theme: Option<String>,
    pub resume: bool,
    /// `--latent`: the latent mode to start in (overrides `config.toml`).
    pub latent: Option<crate::engine::LatentMode>,
}

pub fn run(opts: TuiOptions) -> anyhow::Result<()> {
    let (tx, rx) = channel::<AppEvent>();
    let (mut app, worker) = setup(&opts, &tx)?;
    let (_guard, mut terminal) = terminal::enter()?;
    if std::env::var_os("TMUX").is_none() {
        if let Ok(p) = ratatui_image::picker::Picker::from_query_stdio() {
            app.picker = p;
        }
    }
    let itx = tx.clone();
    std::thread::Builder::new()
        .name("tritter-input".into())
        .spawn(move || {
            while let Ok(ev) = crossterm::event::read() {
                if itx.send(AppEvent::Term(ev)).is_err() {
                    return;
                }
            }
            let _ = itx.send(AppEvent::InputClosed);
        })?;
    let latency = event_loop::run(&mut app, &mut terminal, rx, tx, worker.as_ref())?;
    app.cancel.store(true, Ordering::Relaxed);
    drop(terminal);
    terminal::restore_terminal();
    if let Some(path) = std::env::var_os(LATENCY_LOG_VAR) {
        std::fs::write(&path, latency.report() + "\n").map_err(|e| {
            anyhow::anyhow!(
                "cannot write {}: {e}",
                std::path::Path::new(&path).display()
            )
        })?;
    }
    if let Some(w) = worker {
        w.shutdown();
    }
    Ok(())
}

/// Config, theme, engine (its failure becomes a message in the app, not an exit), the worker
/// thread that streams generation events into `tx`, the app, and the resumed session.
fn setup(opts: &TuiOptions, tx: &Sender<AppEvent>) -> anyhow::Result<(App, Option<Worker>)> {
    let config_dir = crate::config::config_dir()?;
    let mut config = Config::load(&config_dir)?;
    if let Some(m) = opts.latent {
        config.latent = m;
    }
    highlight::warm_up();
    let theme_name = opts.theme.clone().unwrap_or_else(|| config.theme.clone());
    let theme = Theme::load(&theme_name, Some(&config_dir.join("themes")))?;
    let data_dir = crate::config::data_dir().ok();
    let engine = factory::load(&EngineOptions {
        model_dir: opts.model_dir.clone().or(config.model.clone()),
        device: opts.device.clone().or(config.device.clone()),
    });
    let (engine_info, engine) = match engine {
        Ok(e) => (Ok((e.info(), e.token_counter())), Some(e)),
        Err(e) => (Err(format!("{e:#}")), None),
    };
    let paths = Paths {
        cwd: std::env::current_dir()?,
        data_dir: data_dir.clone(),
        config_dir: Some(config_dir),
    };
    let mut app = App::new(config, theme, engine_info, paths);
    app.build_map();
    let worker = match engine {
        Some(e) => {
            let gtx = tx.clone();
            Some(Worker::spawn(e, app.cancel.clone(), move |ev| {
                let _ = gtx.send(AppEvent::Gen(ev));
            })?)
        }
        None => None,
    };
    if opts.resume {
        resume(&mut app, data_dir.as_deref());
    }
    Ok((app, worker))
}

/// `--resume`: the most recent saved session, read before the first frame.
fn resume(app: &mut App, data_dir: Option<&std::path::Path>) {
    let latest = data_dir.and_then(|d| session::list(d).into_iter().next());
    match (latest, data_dir) {
        (Some(name), Some(dir)) => match session::load(dir, &name) {
            Ok(m) => {
                let n = m.len();
                app.load_messages(&name, m);
                app.notice(format!("resumed session {name} ({n} messages)"));
            }
            Err(e) => app.error(format!("{e:#}")),
        },
        _ => app.notice("there is no saved session to resume; starting a new one"),
    }
}
