//! The event loop: terminal events (from the input thread), the worker's generation events and
//! finished jobs arrive on one channel; each becomes an `Action` for `App::update`, whose effects
//! run here (a request to the worker, the clipboard, a job on its own thread, quit). The screen is
//! redrawn right away after a key, and at most every `FRAME` for streamed tokens.

use std::ops::ControlFlow;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossterm::event::Event;
use ratatui::backend::Backend;
use ratatui::Terminal;

use crate::engine::worker::Worker;
use crate::engine::GenEvent;
use crate::tui::app::effect::{Effect, Job, Outcome};
use crate::tui::app::{Action, App};
use crate::tui::clipboard::Clipboard;
use crate::tui::latency::Latency;

/// Shortest time between two redraws caused by streamed tokens.
pub const FRAME: Duration = Duration::from_millis(33);
/// Test hook: panic right after the first frame, to check the terminal is restored on panic.
pub const TEST_PANIC_VAR: &str = "TRITTER_TEST_PANIC";

/// What wakes the loop.
pub enum AppEvent {
    Term(Event),
    /// The input thread stopped (the terminal is gone).
    InputClosed,
    Gen(GenEvent),
    Finished(Outcome),
}

/// The loop's own state beside the app.
struct Loop<'a> {
    worker: Option<&'a Worker>,
    /// Jobs send their outcome here.
    tx: Sender<AppEvent>,
    clipboard: Clipboard,
    latency: Latency,
    /// Keys read since the last frame: when, and whether a reply was streaming.
    pending_keys: Vec<(Instant, bool)>,
    /// Session writes still running: quitting waits for them, so no save is lost.
    saves: Vec<JoinHandle<()>>,
}

/// Runs until the app quits or the terminal's input ends, then waits for session writes still
/// running; returns the latency figures.
pub fn run<B: Backend>(
    app: &mut App,
    terminal: &mut Terminal<B>,
    rx: Receiver<AppEvent>,
    tx: Sender<AppEvent>,
    worker: Option<&Worker>,
) -> anyhow::Result<Latency>
where
    B::Error: Send + Sync + 'static,
{
    let mut lp = Loop {
        worker,
        tx,
        clipboard: Clipboard::default(),
        latency: Latency::default(),
        pending_keys: Vec::new(),
        saves: Vec::new(),
    };
    // What the app asked for before the first event (the first repo map build).
    if lp.run_effects(app).is_break() {
        return Ok(lp.finish());
    }
    let mut dirty = true;
    let mut last_draw = Instant::now() - FRAME;
    let test_panic = std::env::var_os(TEST_PANIC_VAR).is_some();
    loop {
        if dirty && (!lp.pending_keys.is_empty() || last_draw.elapsed() >= FRAME) {
            terminal.draw(|f| crate::tui::ui::draw(app, f))?;
            if test_panic {
                panic!("{TEST_PANIC_VAR} is set: panicking after the first frame");
            }
            last_draw = Instant::now();
            dirty = false;
            lp.frame_drawn();
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
            if lp.apply(app, ev).is_break() || lp.run_effects(app).is_break() {
                return Ok(lp.finish());
            }
        }
    }
    Ok(lp.finish())
}

impl Loop<'_> {
    /// Waits for the session writes still running; the latency figures.
    fn finish(self) -> Latency {
        for h in self.saves {
            let _ = h.join();
        }
        self.latency
    }

    /// Books the keys shown by the frame just drawn.
    fn frame_drawn(&mut self) {
        for (t, streaming) in self.pending_keys.drain(..) {
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if streaming {
                self.latency.streaming.push(ms)
            } else {
                self.latency.idle.push(ms)
            }
        }
    }

    /// One event into the app.
    fn apply(&mut self, app: &mut App, ev: AppEvent) -> ControlFlow<()> {
        match ev {
            AppEvent::Term(Event::Key(k)) => {
                self.pending_keys.push((Instant::now(), app.busy()));
                if let Some(a) = app.action_for_key(k) {
                    app.update(a);
                }
            }
            AppEvent::Term(Event::Paste(s)) => {
                self.pending_keys.push((Instant::now(), app.busy()));
                app.update(Action::Paste(s));
            }
            AppEvent::Term(
                Event::Resize(..) | Event::FocusGained | Event::FocusLost | Event::Mouse(_),
            ) => {}
            AppEvent::InputClosed => return ControlFlow::Break(()),
            AppEvent::Gen(ev) => app.update(Action::Gen(ev)),
            AppEvent::Finished(outcome) => app.update(Action::Finished(outcome)),
        }
        ControlFlow::Continue(())
    }

    /// Runs what the app asked for; `Break` to quit.
    fn run_effects(&mut self, app: &mut App) -> ControlFlow<()> {
        for eff in std::mem::take(&mut app.effects) {
            match eff {
                Effect::Generate(req) => match self.worker {
                    Some(w) => {
                        if let Err(e) = w.send(req) {
                            app.update(Action::Gen(GenEvent::Error(format!("{e:#}"))));
                        }
                    }
                    None => app.update(Action::Gen(GenEvent::Error("no model is loaded".into()))),
                },
                Effect::Copy(text) => {
                    let lines = text.lines().count();
                    match self.clipboard.copy(&text, app.config.clipboard) {
                        Ok(how) => app.notice(format!("copied {lines} lines ({how})")),
                        Err(e) => app.error(format!("copy failed: {e:#}")),
                    }
                }
                Effect::Job(job) => {
                    let is_save = matches!(job, Job::SaveSession { .. });
                    let tx = self.tx.clone();
                    let spawned = std::thread::Builder::new()
                        .name("tritter-job".into())
                        .spawn(move || {
                            let _ = tx.send(AppEvent::Finished(crate::tui::jobs::run(job)));
                        });
                    match spawned {
                        Ok(h) if is_save => {
                            self.saves.retain(|h| !h.is_finished());
                            self.saves.push(h);
                        }
                        Ok(_) => {}
                        Err(e) => app.error(format!("cannot start a background job: {e}")),
                    }
                }
                Effect::Quit => return ControlFlow::Break(()),
            }
        }
        ControlFlow::Continue(())
    }
}
