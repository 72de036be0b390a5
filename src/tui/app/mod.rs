//! The app's state and its only mutator: key/paste/worker events become `Action`s and
//! `App::update` applies them. Everything the terminal loop must do outside (start a generation,
//! copy to the clipboard, decode an attachment or write a session off the UI thread, quit) comes
//! back as `Effect`s, so tests drive the whole app without a terminal or a thread. Drawing is in
//! `ui`, which reads this state and does no I/O.
//!
//! The state is split by what it serves: `chat` (history, scroll, session), `composer` (the
//! message being written and its chips), `code_pane` (what the side pane shows); `keys` maps keys
//! to actions, `submit` sends a message and follows its reply, `commands` has one function per
//! slash command and applies the outcome of the jobs they start; `map` has the repo map's state,
//! `/map` and `/raw`.

pub mod chat;
pub mod code_pane;
mod commands;
pub mod composer;
pub mod effect;
mod keys;
pub mod map;
mod submit;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::KeyEvent;
use ratatui_image::picker::Picker;

use crate::config::Config;
use crate::engine::{ContextSnippet, EngineInfo, GenEvent, LatentMode, TokenCounter};
use crate::tui::codepane::{FileView, PaneContent};
use crate::tui::session::SavedMessage;
use crate::tui::slash::CompletionSources;
use crate::tui::theme::Theme;
use chat::Chat;
use code_pane::CodePane;
use composer::Composer;
use effect::{Effect, Outcome};

/// Two Ctrl+C within this window quit.
pub const QUIT_WINDOW: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenState {
    Idle,
    /// Request sent, no token yet.
    Waiting,
    Streaming,
    /// Esc/Ctrl+C pressed, waiting for the worker's `Done`.
    Stopping,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Composer,
    CodePane,
}

/// What an input means, decided from the key and the current focus/popup.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Submit,
    Newline,
    /// Esc: stop the reply, else close the popup, else leave the code pane.
    Escape,
    /// Ctrl+C: stop the reply; twice quits.
    Interrupt,
    ToggleCodePane,
    /// Ctrl+T: show or hide the thoughts of latent-mode replies.
    ToggleThoughts,
    FocusCodePane,
    ResizeCodePane(i16),
    ScrollChat(i32),
    PopupMove(i32),
    /// Tab (or Enter on a popup): take the selected completion.
    Complete {
        then_submit: bool,
    },
    OutlineMove(isize),
    CodeScroll(isize),
    AddSymbol,
    /// Backspace on an empty composer: drop the last pending chip.
    DropChip,
    Edit(KeyEvent),
    Paste(String),
    Gen(GenEvent),
    /// A job started by an effect has finished.
    Finished(Outcome),
}

/// Where the app keeps and finds things (none in tests that need no disk).
#[derive(Clone, Debug, Default)]
pub struct Paths {
    pub cwd: PathBuf,
    pub data_dir: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
}

pub struct App {
    pub theme: Theme,
    /// Bumped when the theme changes (render cache key).
    pub theme_gen: u64,
    pub config: Config,
    pub paths: Paths,
    /// The engine's description, or why there is none.
    pub engine: Result<EngineInfo, String>,
    pub counter: TokenCounter,
    pub chat: Chat,
    pub composer: Composer,
    pub code: CodePane,
    pub focus: Focus,
    pub gen: GenState,
    pub cancel: Arc<AtomicBool>,
    pub latent: LatentMode,
    /// Latent-mode replies show one line per thought (else one summary line).
    pub show_thoughts: bool,
    pub tok_per_s: Option<f64>,
    pub ctrl_c_at: Option<Instant>,
    pub picker: Picker,
    pub effects: Vec<Effect>,
    /// The repo map (`/map`).
    pub map: map::MapState,
    /// Completion mode (`/raw on`): messages are continued without the chat template.
    pub raw: bool,
}

impl App {
    pub fn new(
        config: Config,
        theme: Theme,
        engine: Result<(EngineInfo, TokenCounter), String>,
        paths: Paths,
    ) -> Self {
        let map_off = config.repo_map_tokens == 0;
        let (engine, counter): (Result<EngineInfo, String>, TokenCounter) = match engine {
            Ok((i, c)) => (Ok(i), c),
            Err(e) => (Err(e), Arc::new(|t: &str| t.len().div_ceil(4))),
        };
        Self {
            latent: config.latent,
            show_thoughts: true,
            code: CodePane::new(config.code_pane_percent),
            composer: Composer::new(&theme),
            chat: Chat::new(crate::tui::session::new_name()),
            theme,
            theme_gen: 0,
            config,
            paths,
            engine,
            counter,
            focus: Focus::Composer,
            gen: GenState::Idle,
            cancel: Arc::new(AtomicBool::new(false)),
            tok_per_s: None,
            ctrl_c_at: None,
            picker: Picker::halfblocks(),
            map: map::MapState {
                off: map_off,
                ..Default::default()
            },
            raw: false,
            effects: Vec::new(),
        }
    }

    pub fn busy(&self) -> bool {
        self.gen != GenState::Idle
    }

    pub fn model_name(&self) -> &str {
        match &self.engine {
            Ok(i) => &i.model_name,
            Err(_) => "no model",
        }
    }

    pub fn notice(&mut self, text: impl Into<String>) {
        self.chat.notice(text);
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.chat.error(text);
    }

    /// Applies one action.
    pub fn update(&mut self, action: Action) {
        match action {
            Action::Submit => self.submit(),
            Action::Newline => {
                self.composer.text.insert_newline();
                self.composer.popup = None;
            }
            Action::Escape => self.escape(),
            Action::Interrupt => self.interrupt(),
            Action::ToggleCodePane => {
                self.code.visible = !self.code.visible;
                if !self.code.visible {
                    self.focus = Focus::Composer;
                }
            }
            Action::ToggleThoughts => {
                self.show_thoughts = !self.show_thoughts;
                self.chat.touch_thoughts();
            }
            Action::FocusCodePane => {
                if self.focus == Focus::CodePane || self.code.content.is_none() {
                    self.focus = Focus::Composer;
                } else {
                    self.code.visible = true;
                    self.focus = Focus::CodePane;
                }
            }
            Action::ResizeCodePane(d) => self.code.resize(d),
            Action::ScrollChat(d) => self.chat.scroll_by(d),
            Action::PopupMove(d) => self.composer.move_selection(d),
            Action::Complete { then_submit } => {
                if self.composer.complete() {
                    self.refresh_popup();
                }
                if then_submit {
                    self.submit();
                }
            }
            Action::OutlineMove(d) => {
                if let Some(f) = self.code.file_mut() {
                    f.select(d);
                }
            }
            Action::CodeScroll(d) => {
                if let Some(f) = self.code.file_mut() {
                    f.scroll_by(d);
                }
            }
            Action::AddSymbol => self.add_symbol(),
            Action::DropChip => self.composer.drop_chip(),
            Action::Edit(key) => {
                self.composer.text.input(key);
                self.refresh_popup();
            }
            Action::Paste(text) => {
                if self.composer.paste(text) {
                    self.refresh_popup();
                }
            }
            Action::Gen(ev) => self.on_gen(ev),
            Action::Finished(outcome) => self.finished(outcome),
        }
    }

    fn escape(&mut self) {
        if self.busy() {
            self.stop();
        } else if self.composer.popup.is_some() {
            self.composer.popup = None;
        } else {
            self.focus = Focus::Composer;
        }
    }

    fn interrupt(&mut self) {
        let now = Instant::now();
        if self
            .ctrl_c_at
            .is_some_and(|t| now.duration_since(t) < QUIT_WINDOW)
        {
            self.effects.push(Effect::Quit);
            return;
        }
        self.ctrl_c_at = Some(now);
        if self.busy() {
            self.stop();
        } else if !self.composer.is_empty() {
            self.composer.reset(&self.theme);
            self.composer.popup = None;
        }
    }

    fn stop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.gen = GenState::Stopping;
    }

    fn refresh_popup(&mut self) {
        if self.composer.cursor_prefix().is_empty() {
            self.composer.popup = None;
            return;
        }
        let themes = self.theme_names();
        let sessions = self
            .paths
            .data_dir
            .as_deref()
            .map(crate::tui::session::list)
            .unwrap_or_default();
        let src = CompletionSources {
            cwd: &self.paths.cwd,
            themes: &themes,
            sessions: &sessions,
        };
        self.composer.refresh_popup(&src);
    }

    fn theme_names(&self) -> Vec<String> {
        let mut v: Vec<String> = crate::tui::theme::builtin_names()
            .into_iter()
            .map(String::from)
            .collect();
        if let Some(dir) = &self.paths.config_dir {
            if let Ok(rd) = std::fs::read_dir(dir.join("themes")) {
                for e in rd.flatten() {
                    if let Some(n) = e.file_name().to_str().and_then(|n| n.strip_suffix(".toml")) {
                        if !v.iter().any(|x| x == n) {
                            v.push(n.to_string());
                        }
                    }
                }
            }
        }
        v
    }

    /// The selected symbol (or the whole file) of the code pane becomes a context chip.
    fn add_symbol(&mut self) {
        let Some(f) = self.code.file() else {
            return;
        };
        let snippet = match f.symbol_snippet() {
            Some(s) => s,
            None => f.file_snippet(),
        };
        let file_label = f.display.clone();
        // A symbol replaces the whole file it came from.
        self.composer.context.retain(|c| c.label != file_label);
        self.composer.add_context(snippet);
        self.focus = Focus::Composer;
    }

    /// A path as the user wrote it (`~` expanded, relative to the working directory).
    fn resolve(&self, p: &str) -> PathBuf {
        let p = crate::files::expand_home(p);
        if p.is_absolute() {
            p
        } else {
            self.paths.cwd.join(p)
        }
    }

    /// Opens a file in the code pane; returns its whole-file snippet.
    pub fn open_file(&mut self, display: &str) -> anyhow::Result<ContextSnippet> {
        let view = FileView::open(&self.resolve(display), display, &self.theme)?;
        if let Some(n) = view.truncation_notice() {
            self.notice(n);
        }
        let snippet = view.file_snippet();
        self.code.show(PaneContent::File(view));
        Ok(snippet)
    }

    /// Replaces the conversation with saved messages.
    pub fn load_messages(&mut self, name: &str, messages: Vec<SavedMessage>) {
        self.chat.load(name, messages);
    }

    pub fn set_theme(&mut self, theme: Theme) {
        self.theme = theme;
        self.theme_gen += 1;
        self.composer.restyle(&self.theme);
        if let Some(f) = self.code.file_mut() {
            f.rehighlight(&self.theme);
        }
    }

    pub fn data_dir(&self) -> Result<&Path, String> {
        self.paths
            .data_dir
            .as_deref()
            .ok_or_else(|| "no data folder for sessions".to_string())
    }
}
