//! The app's state and its only mutator: key/paste/worker events become `Action`s and
//! `App::update` applies them. Everything the terminal loop must do outside (start a generation,
//! copy to the clipboard, quit) comes back as `Effect`s, so tests drive the whole app without a
//! terminal or a thread. Drawing is in `ui`, which reads this state and does no I/O.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui_image::picker::Picker;
use ratatui_textarea::TextArea;

use crate::codepane::{FileView, PaneContent};
use crate::commands::{self, Command, CompletionSources, Completions};
use crate::config::Config;
use crate::engine::{
    Attachment, ChatMessage, ContextSnippet, EngineInfo, GenEvent, GenRequest, Role, Sampling,
    TokenCounter,
};
use crate::theme::Theme;

/// Pastes larger than this (bytes) or longer than `BIG_PASTE_LINES` become a context chip instead
/// of composer text, so a 1 MB paste stays responsive.
pub const BIG_PASTE_BYTES: usize = 16 * 1024;
pub const BIG_PASTE_LINES: usize = 200;
/// Two Ctrl+C within this window quit.
pub const QUIT_WINDOW: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Message,
    Notice,
    Error,
}

/// One item of the chat history.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: EntryKind,
    pub msg: ChatMessage,
    /// "12 tokens · 30.1 tok/s · first token 85 ms" under a finished reply.
    pub stats: Option<String>,
    /// Attachments shown on the message but not given to the model.
    pub not_sent: bool,
    /// Bumped on every change (the render cache's key).
    pub version: u64,
}

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
}

/// Work for the terminal loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Generate(GenRequest),
    Copy(String),
    Quit,
}

/// Where the app keeps and finds things (none in tests that need no disk).
#[derive(Clone, Debug, Default)]
pub struct Paths {
    pub cwd: PathBuf,
    pub data_dir: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
}

pub struct Popup {
    pub completions: Completions,
    pub selected: usize,
}

/// Cached wrapped lines for one entry.
pub struct CachedEntry {
    pub key: (u64, u16, u64, usize),
    pub lines: Vec<ratatui::text::Line<'static>>,
    /// Code blocks in this entry (for numbering the next ones).
    pub blocks: usize,
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
    pub entries: Vec<Entry>,
    pub composer: TextArea<'static>,
    pub pending_context: Vec<ContextSnippet>,
    pub pending_attachments: Vec<Attachment>,
    pub pane: Option<PaneContent>,
    pub pane_visible: bool,
    pub pane_percent: u16,
    pub focus: Focus,
    pub popup: Option<Popup>,
    pub gen: GenState,
    pub cancel: Arc<AtomicBool>,
    pub latent: bool,
    pub tok_per_s: Option<f64>,
    pub context_used: usize,
    /// Chat lines scrolled up from the bottom.
    pub chat_scroll: usize,
    pub ctrl_c_at: Option<Instant>,
    pub session_name: String,
    pub picker: Picker,
    pub effects: Vec<Effect>,
    pub cache: RefCell<Vec<Option<CachedEntry>>>,
    /// How far the chat could scroll at the last frame (set by `ui::draw`, bounds `chat_scroll`).
    pub max_chat_scroll: std::cell::Cell<usize>,
    next_version: u64,
}

impl App {
    pub fn new(
        config: Config,
        theme: Theme,
        engine: Result<(EngineInfo, TokenCounter), String>,
        paths: Paths,
    ) -> Self {
        let (engine, counter): (Result<EngineInfo, String>, TokenCounter) = match engine {
            Ok((i, c)) => (Ok(i), c),
            Err(e) => (Err(e), Arc::new(|t: &str| t.len().div_ceil(4))),
        };
        let mut app = Self {
            latent: config.latent,
            pane_percent: config.code_pane_percent,
            theme,
            theme_gen: 0,
            config,
            paths,
            engine,
            counter,
            entries: Vec::new(),
            composer: TextArea::default(),
            pending_context: Vec::new(),
            pending_attachments: Vec::new(),
            pane: None,
            pane_visible: false,
            focus: Focus::Composer,
            popup: None,
            gen: GenState::Idle,
            cancel: Arc::new(AtomicBool::new(false)),
            tok_per_s: None,
            context_used: 0,
            chat_scroll: 0,
            ctrl_c_at: None,
            session_name: crate::session::new_name(),
            picker: Picker::halfblocks(),
            effects: Vec::new(),
            cache: RefCell::new(Vec::new()),
            max_chat_scroll: std::cell::Cell::new(0),
            next_version: 1,
        };
        app.reset_composer();
        app
    }

    fn reset_composer(&mut self) {
        let mut t = TextArea::default();
        t.set_placeholder_text("Message (Enter sends · Shift/Alt+Enter or Ctrl+J newline · /help)");
        t.set_placeholder_style(self.theme.dim());
        t.set_cursor_line_style(ratatui::style::Style::default());
        t.set_style(self.theme.base());
        self.composer = t;
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

    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    pub fn push(&mut self, kind: EntryKind, msg: ChatMessage) {
        let version = self.version();
        self.entries.push(Entry {
            kind,
            msg,
            stats: None,
            not_sent: false,
            version,
        });
        self.chat_scroll = 0;
    }

    pub fn notice(&mut self, text: impl Into<String>) {
        self.push(EntryKind::Notice, ChatMessage::new(Role::System, text));
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.push(EntryKind::Error, ChatMessage::new(Role::System, text));
    }

    /// Decides what a key means here and now; `None` for keys that do nothing.
    pub fn action_for_key(&self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Char('c') if ctrl => return Some(Action::Interrupt),
            KeyCode::Char('o') if ctrl => return Some(Action::ToggleCodePane),
            KeyCode::F(2) => return Some(Action::FocusCodePane),
            KeyCode::Left if alt => return Some(Action::ResizeCodePane(-5)),
            KeyCode::Right if alt => return Some(Action::ResizeCodePane(5)),
            KeyCode::Esc => return Some(Action::Escape),
            _ => {}
        }
        if self.focus == Focus::CodePane {
            return match key.code {
                KeyCode::Up | KeyCode::Char('k') => Some(Action::OutlineMove(-1)),
                KeyCode::Down | KeyCode::Char('j') => Some(Action::OutlineMove(1)),
                KeyCode::PageUp => Some(Action::CodeScroll(-20)),
                KeyCode::PageDown => Some(Action::CodeScroll(20)),
                KeyCode::Enter => Some(Action::AddSymbol),
                KeyCode::Tab => Some(Action::FocusCodePane),
                _ => None,
            };
        }
        match key.code {
            KeyCode::PageUp => return Some(Action::ScrollChat(10)),
            KeyCode::PageDown => return Some(Action::ScrollChat(-10)),
            _ => {}
        }
        if let Some(p) = &self.popup {
            match key.code {
                KeyCode::Up => return Some(Action::PopupMove(-1)),
                KeyCode::Down => return Some(Action::PopupMove(1)),
                KeyCode::Tab => return Some(Action::Complete { then_submit: false }),
                KeyCode::Enter if !alt && !shift => {
                    let token = self.cursor_prefix()[p.completions.start..].to_string();
                    let chosen =
                        &p.completions.items[p.selected.min(p.completions.items.len() - 1)];
                    if chosen.insert != token {
                        let then_submit = !chosen.insert.ends_with(' ')
                            && !chosen.insert.ends_with('/')
                            && token.starts_with('/')
                            && p.completions.start == 0;
                        return Some(Action::Complete { then_submit });
                    }
                }
                _ => {}
            }
        }
        match key.code {
            KeyCode::Enter if alt || shift => Some(Action::Newline),
            KeyCode::Enter => Some(Action::Submit),
            KeyCode::Char('j') if ctrl => Some(Action::Newline),
            KeyCode::Backspace if self.composer.is_empty() => Some(Action::DropChip),
            _ => Some(Action::Edit(key)),
        }
    }

    /// The cursor line of the composer up to the cursor.
    fn cursor_prefix(&self) -> String {
        let ratatui_textarea::DataCursor(row, col) = self.composer.cursor();
        let line = self
            .composer
            .lines()
            .get(row)
            .map(String::as_str)
            .unwrap_or("");
        line.chars().take(col).collect()
    }

    fn refresh_popup(&mut self) {
        let prefix = self.cursor_prefix();
        if prefix.is_empty() {
            self.popup = None;
            return;
        }
        let themes = self.theme_names();
        let sessions = self
            .paths
            .data_dir
            .as_deref()
            .map(crate::session::list)
            .unwrap_or_default();
        let src = CompletionSources {
            cwd: &self.paths.cwd,
            themes: &themes,
            sessions: &sessions,
        };
        self.popup = commands::complete(&prefix, &src).map(|completions| Popup {
            completions,
            selected: 0,
        });
    }

    fn theme_names(&self) -> Vec<String> {
        let mut v: Vec<String> = crate::theme::builtin_names()
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

    /// Applies one action.
    pub fn update(&mut self, action: Action) {
        match action {
            Action::Submit => self.submit(),
            Action::Newline => {
                self.composer.insert_newline();
                self.popup = None;
            }
            Action::Escape => {
                if self.busy() {
                    self.stop();
                } else if self.popup.is_some() {
                    self.popup = None;
                } else {
                    self.focus = Focus::Composer;
                }
            }
            Action::Interrupt => {
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
                    self.reset_composer();
                    self.popup = None;
                }
            }
            Action::ToggleCodePane => {
                self.pane_visible = !self.pane_visible;
                if !self.pane_visible {
                    self.focus = Focus::Composer;
                }
            }
            Action::FocusCodePane => {
                if self.focus == Focus::CodePane || self.pane.is_none() {
                    self.focus = Focus::Composer;
                } else {
                    self.pane_visible = true;
                    self.focus = Focus::CodePane;
                }
            }
            Action::ResizeCodePane(d) => {
                self.pane_percent = (self.pane_percent as i16 + d).clamp(20, 80) as u16;
            }
            Action::ScrollChat(d) => {
                let max = self.max_chat_scroll.get() as i64;
                self.chat_scroll = (self.chat_scroll as i64 + i64::from(d)).clamp(0, max) as usize;
            }
            Action::PopupMove(d) => {
                if let Some(p) = self.popup.as_mut() {
                    let n = p.completions.items.len() as i32;
                    p.selected = (p.selected as i32 + d).rem_euclid(n.max(1)) as usize;
                }
            }
            Action::Complete { then_submit } => {
                self.complete();
                if then_submit {
                    self.submit();
                }
            }
            Action::OutlineMove(d) => {
                if let Some(PaneContent::File(f)) = self.pane.as_mut() {
                    f.select(d);
                }
            }
            Action::CodeScroll(d) => {
                if let Some(PaneContent::File(f)) = self.pane.as_mut() {
                    f.scroll_by(d);
                }
            }
            Action::AddSymbol => self.add_symbol(),
            Action::DropChip => {
                if self.pending_attachments.pop().is_none() {
                    self.pending_context.pop();
                }
            }
            Action::Edit(key) => {
                self.composer.input(key);
                self.refresh_popup();
            }
            Action::Paste(text) => self.paste(text),
            Action::Gen(ev) => self.on_gen(ev),
        }
    }

    fn stop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.gen = GenState::Stopping;
    }

    fn complete(&mut self) {
        let Some(p) = self.popup.take() else { return };
        let Some(item) = p.completions.items.get(p.selected) else {
            return;
        };
        let prefix = self.cursor_prefix();
        let n = prefix[p.completions.start..].chars().count();
        for _ in 0..n {
            self.composer.delete_char();
        }
        self.composer.insert_str(&item.insert);
        // Folders keep completing.
        if item.insert.ends_with('/') {
            self.refresh_popup();
        }
    }

    fn paste(&mut self, text: String) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let lines = text.lines().count();
        if text.len() > BIG_PASTE_BYTES || lines > BIG_PASTE_LINES {
            let label = format!(
                "pasted text ({lines} lines, {})",
                crate::files::human_bytes(text.len() as u64)
            );
            self.pending_context.push(ContextSnippet { label, text });
        } else {
            self.composer.insert_str(&text);
            self.refresh_popup();
        }
    }

    fn add_symbol(&mut self) {
        let Some(PaneContent::File(f)) = self.pane.as_ref() else {
            return;
        };
        let snippet = match f.symbol_snippet() {
            Some(s) => s,
            None => f.file_snippet(),
        };
        let file_label = f.display.clone();
        // A symbol replaces the whole file it came from.
        self.pending_context.retain(|c| c.label != file_label);
        if !self
            .pending_context
            .iter()
            .any(|c| c.label == snippet.label)
        {
            self.pending_context.push(snippet);
        }
        self.focus = Focus::Composer;
    }

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
        let snippet = view.file_snippet();
        self.pane = Some(PaneContent::File(view));
        self.pane_visible = true;
        Ok(snippet)
    }

    fn submit(&mut self) {
        let text = self.composer.lines().join("\n");
        let trimmed = text.trim();
        self.popup = None;
        if trimmed.starts_with('/') && !trimmed.contains('\n') {
            match commands::parse(trimmed) {
                Ok(cmd) => {
                    self.reset_composer();
                    self.run_command(cmd);
                }
                Err(e) => self.error(e),
            }
            return;
        }
        if trimmed.is_empty()
            && self.pending_context.is_empty()
            && self.pending_attachments.is_empty()
        {
            return;
        }
        if self.busy() {
            self.notice("a reply is still streaming; Esc stops it");
            return;
        }
        let info = match &self.engine {
            Ok(i) => i.clone(),
            Err(e) => {
                self.error(format!("no model to answer: {e}"));
                return;
            }
        };
        let mut context = std::mem::take(&mut self.pending_context);
        for m in commands::mentions(trimmed) {
            let path = self.resolve(m);
            if !path.is_file() || context.iter().any(|c| c.label == m) {
                continue;
            }
            match self.open_file(m) {
                Ok(s) => context.push(s),
                Err(e) => {
                    self.pending_context = context;
                    self.error(format!("@{m}: {e:#}"));
                    return;
                }
            }
        }
        let mut msg = ChatMessage::new(Role::User, trimmed);
        msg.attachments = std::mem::take(&mut self.pending_attachments);
        msg.context = context;
        let refused: Vec<&str> = msg
            .attachments
            .iter()
            .filter_map(|a| match a.kind {
                crate::engine::AttachmentKind::Image { .. } if !info.accepts_images => {
                    Some("image")
                }
                crate::engine::AttachmentKind::Audio { .. } if !info.accepts_audio => Some("audio"),
                _ => None,
            })
            .collect();
        let mut sent = msg.clone();
        let not_sent = !refused.is_empty();
        if not_sent {
            sent.attachments.clear();
        }
        let budget = info
            .context_limit
            .saturating_sub(self.config.max_new_tokens);
        let messages = match crate::prompt::fit(&self.history_with(sent), &self.counter, budget) {
            Ok((m, notes)) => {
                for n in notes {
                    self.notice(n);
                }
                m
            }
            Err(e) => {
                self.pending_context = msg.context;
                self.pending_attachments = msg.attachments;
                self.error(e);
                return;
            }
        };
        self.reset_composer();
        self.push(EntryKind::Message, msg);
        if let Some(e) = self.entries.last_mut() {
            e.not_sent = not_sent;
        }
        if not_sent {
            let mut kinds = refused.clone();
            kinds.dedup();
            self.notice(format!(
                "this model ({}) takes no {} input; the attachment was not sent to it",
                info.model_name,
                kinds.join(" or ")
            ));
        }
        self.push(EntryKind::Message, ChatMessage::new(Role::Assistant, ""));
        self.cancel.store(false, Ordering::Relaxed);
        self.gen = GenState::Waiting;
        self.effects.push(Effect::Generate(GenRequest {
            messages,
            latent: self.latent,
            max_new_tokens: self.config.max_new_tokens,
            sampling: Sampling {
                temperature: self.config.temperature,
                top_p: self.config.top_p,
                top_k: self.config.top_k,
                seed: 0,
            },
        }));
    }

    /// The conversation so far (messages only) plus `last`.
    fn history_with(&self, last: ChatMessage) -> Vec<ChatMessage> {
        let mut v: Vec<ChatMessage> = self
            .entries
            .iter()
            .filter(|e| {
                e.kind == EntryKind::Message
                    && !(e.msg.role == Role::Assistant && e.msg.content.is_empty())
            })
            .map(|e| {
                let mut m = e.msg.clone();
                if e.not_sent {
                    m.attachments.clear();
                }
                m
            })
            .collect();
        v.push(last);
        v
    }

    /// The conversation's messages (for saving).
    pub fn messages(&self) -> Vec<ChatMessage> {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::Message)
            .map(|e| e.msg.clone())
            .collect()
    }

    fn on_gen(&mut self, ev: GenEvent) {
        let v = self.version();
        match ev {
            GenEvent::Prompt { tokens } => self.context_used = tokens,
            GenEvent::Token { text } => {
                if self.gen == GenState::Waiting {
                    self.gen = GenState::Streaming;
                }
                self.context_used += 1;
                if let Some(e) = self.last_reply() {
                    e.msg.content.push_str(&text);
                    e.version = v;
                }
            }
            GenEvent::Done {
                tokens,
                tok_per_s,
                first_token_ms,
                cancelled,
            } => {
                self.gen = GenState::Idle;
                self.tok_per_s = Some(tok_per_s);
                let mut stats = format!(
                    "{tokens} tokens · {tok_per_s:.1} tok/s · first token {first_token_ms:.0} ms"
                );
                if cancelled {
                    stats.push_str(" · stopped");
                }
                if let Some(e) = self.last_reply() {
                    e.stats = Some(stats);
                    e.version = v;
                }
                self.autosave();
            }
            GenEvent::Error(e) => {
                self.gen = GenState::Idle;
                self.error(format!("generation failed: {e}"));
            }
        }
    }

    fn last_reply(&mut self) -> Option<&mut Entry> {
        self.entries
            .iter_mut()
            .rev()
            .find(|e| e.kind == EntryKind::Message && e.msg.role == Role::Assistant)
    }

    fn autosave(&mut self) {
        let Some(dir) = self.paths.data_dir.clone() else {
            return;
        };
        if let Err(e) = crate::session::save(&dir, &self.session_name, &self.messages()) {
            self.error(format!("autosave failed: {e:#}"));
        }
    }

    /// Replaces the conversation with saved messages.
    pub fn load_messages(&mut self, name: &str, messages: Vec<ChatMessage>) {
        self.entries.clear();
        self.cache.borrow_mut().clear();
        for m in messages {
            self.push(EntryKind::Message, m);
        }
        self.session_name = name.to_string();
    }

    fn run_command(&mut self, cmd: Command) {
        crate::app_commands::run(self, cmd);
    }

    pub fn set_theme(&mut self, theme: Theme) {
        self.theme = theme;
        self.theme_gen += 1;
        self.reset_composer_style();
        if let Some(PaneContent::File(f)) = self.pane.as_mut() {
            f.rehighlight(&self.theme);
        }
    }

    fn reset_composer_style(&mut self) {
        self.composer.set_placeholder_style(self.theme.dim());
        self.composer.set_style(self.theme.base());
    }

    pub fn data_dir(&self) -> Result<&Path, String> {
        self.paths
            .data_dir
            .as_deref()
            .ok_or_else(|| "no data folder for sessions".to_string())
    }
}
