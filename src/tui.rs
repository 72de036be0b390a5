//! The interactive terminal: setup and guaranteed restore (raw mode, alternate screen, bracketed
//! paste, keyboard enhancement; restored on drop, on every error path and from the panic hook),
//! the input thread, and the event loop that feeds `App::update`, runs its effects and redraws at
//! most every `FRAME` for streamed tokens but right away after a key.
//!
//! Alternate screen, not inline: the chat and code panes are a full-screen layout, and the
//! alternate buffer leaves the shell's scrollback exactly as it was; on exit the user's screen
//! comes back untouched and the conversation stays in the session file (`/save`, `--resume`).

use std::io::{stdout, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use crossterm::event::{
    self, DisableBracketedPaste, EnableBracketedPaste, Event, KeyboardEnhancementFlags,
    PopKeyboardEnhancementFlags, PushKeyboardEnhancementFlags,
};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::app::{Action, App, Effect, Paths};
use crate::cli::Cli;
use crate::config::Config;
use crate::engine::{self, EngineOptions, GenEvent};
use crate::theme::Theme;
use crate::worker::Worker;

/// Shortest time between two redraws caused by streamed tokens.
pub const FRAME: Duration = Duration::from_millis(33);
/// Writes keystroke-to-frame latency figures here at exit (measurement, see docs/TUI.md).
pub const LATENCY_LOG_VAR: &str = "TRITTER_LATENCY_LOG";
/// Test hook: panic right after the first frame, to check the terminal is restored on panic.
pub const TEST_PANIC_VAR: &str = "TRITTER_TEST_PANIC";

static ENHANCED_KEYS: AtomicBool = AtomicBool::new(false);
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back; safe to call more than once and from the panic hook.
pub fn restore_terminal() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = stdout();
    if ENHANCED_KEYS.swap(false, Ordering::SeqCst) {
        let _ = crossterm::execute!(out, PopKeyboardEnhancementFlags);
    }
    let _ = crossterm::execute!(
        out,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
    let _ = out.flush();
}

/// Restores the terminal when dropped (every return path of `run`).
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn enter() -> anyhow::Result<(Guard, Terminal<CrosstermBackend<Stdout>>)> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        prev(info);
    }));
    enable_raw_mode()
        .map_err(|e| anyhow::anyhow!("cannot switch the terminal to raw mode: {e}"))?;
    ACTIVE.store(true, Ordering::SeqCst);
    let guard = Guard;
    let mut out = stdout();
    crossterm::execute!(out, EnterAlternateScreen, EnableBracketedPaste)?;
    if matches!(
        crossterm::terminal::supports_keyboard_enhancement(),
        Ok(true)
    ) {
        crossterm::execute!(
            out,
            PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES)
        )?;
        ENHANCED_KEYS.store(true, Ordering::SeqCst);
    }
    let terminal = Terminal::new(CrosstermBackend::new(out))?;
    Ok((guard, terminal))
}

enum AppEvent {
    Term(Event),
    Gen(GenEvent),
}

/// Keystroke-to-frame latencies (key read → frame flushed), split by whether a reply was streaming.
#[derive(Default)]
struct Latency {
    idle: Vec<f64>,
    streaming: Vec<f64>,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

impl Latency {
    fn report(mut self) -> String {
        let s = &mut self.streaming;
        let line = serde_json::json!({
            "keys_while_streaming": s.len(),
            "streaming_p50_ms": percentile(s, 0.5),
            "streaming_p95_ms": percentile(s, 0.95),
            "streaming_max_ms": percentile(s, 1.0),
            "keys_idle": self.idle.len(),
            "idle_p50_ms": percentile(&mut self.idle, 0.5),
        });
        line.to_string()
    }
}

pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let config_dir = crate::config::config_dir()?;
    let config = Config::load(&config_dir)?;
    crate::highlight::warm_up();
    let theme_name = cli.theme.clone().unwrap_or_else(|| config.theme.clone());
    let theme = Theme::load(&theme_name, Some(&config_dir.join("themes")))?;
    let data_dir = crate::config::data_dir().ok();
    let engine = engine::load(&EngineOptions {
        model_dir: cli.model.clone().or(config.model.clone()),
        device: cli.device.clone().or(config.device.clone()),
    });
    let (tx, rx) = channel::<AppEvent>();
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
    let worker = match engine {
        Some(e) => {
            let gtx = tx.clone();
            Some(Worker::spawn(e, app.cancel.clone(), move |ev| {
                let _ = gtx.send(AppEvent::Gen(ev));
            })?)
        }
        None => None,
    };
    if cli.resume {
        let latest = data_dir
            .as_deref()
            .and_then(|d| crate::session::list(d).into_iter().next());
        match (latest, data_dir.as_deref()) {
            (Some(name), Some(dir)) => match crate::session::load(dir, &name) {
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

    let (_guard, mut terminal) = enter()?;
    if std::env::var_os("TMUX").is_none() {
        if let Ok(p) = ratatui_image::picker::Picker::from_query_stdio() {
            app.picker = p;
        }
    }
    let itx = tx.clone();
    std::thread::Builder::new()
        .name("tritter-input".into())
        .spawn(move || {
            while let Ok(ev) = event::read() {
                if itx.send(AppEvent::Term(ev)).is_err() {
                    break;
                }
            }
        })?;
    drop(tx);

    let mut clipboard = crate::clipboard::Clipboard::default();
    let mut latency = Latency::default();
    let mut pending_keys: Vec<(Instant, bool)> = Vec::new();
    let mut dirty = true;
    let mut last_draw = Instant::now() - FRAME;
    let test_panic = std::env::var_os(TEST_PANIC_VAR).is_some();
    'main: loop {
        if dirty && (!pending_keys.is_empty() || last_draw.elapsed() >= FRAME) {
            terminal.draw(|f| crate::ui::draw(&app, f))?;
            if test_panic {
                panic!("{TEST_PANIC_VAR} is set: panicking after the first frame");
            }
            last_draw = Instant::now();
            dirty = false;
            for (t, streaming) in pending_keys.drain(..) {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if streaming {
                    latency.streaming.push(ms)
                } else {
                    latency.idle.push(ms)
                }
            }
        }
        let wait = if dirty {
            FRAME.saturating_sub(last_draw.elapsed())
        } else {
            Duration::from_millis(250)
        };
        let first = match rx.recv_timeout(wait) {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => {
                // Lets time-based hints (the Ctrl+C window) expire.
                dirty = true;
                None
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for ev in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            dirty = true;
            match ev {
                AppEvent::Term(Event::Key(k)) => {
                    pending_keys.push((Instant::now(), app.busy()));
                    if let Some(a) = app.action_for_key(k) {
                        app.update(a);
                    }
                }
                AppEvent::Term(Event::Paste(s)) => {
                    pending_keys.push((Instant::now(), app.busy()));
                    app.update(Action::Paste(s));
                }
                AppEvent::Term(
                    Event::Resize(..) | Event::FocusGained | Event::FocusLost | Event::Mouse(_),
                ) => {}
                AppEvent::Gen(ev) => app.update(Action::Gen(ev)),
            }
            for eff in std::mem::take(&mut app.effects) {
                match eff {
                    Effect::Generate(req) => match &worker {
                        Some(w) => {
                            if let Err(e) = w.send(req) {
                                app.update(Action::Gen(GenEvent::Error(format!("{e:#}"))));
                            }
                        }
                        None => {
                            app.update(Action::Gen(GenEvent::Error("no model is loaded".into())))
                        }
                    },
                    Effect::Copy(text) => {
                        let lines = text.lines().count();
                        match clipboard.copy(&text, app.config.clipboard) {
                            Ok(how) => app.notice(format!("copied {lines} lines ({how})")),
                            Err(e) => app.error(format!("copy failed: {e:#}")),
                        }
                    }
                    Effect::Quit => break 'main,
                }
            }
        }
    }
    app.cancel.store(true, Ordering::Relaxed);
    drop(terminal);
    restore_terminal();
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
