//! The message being written: the text area, the completion popup, and the chips waiting to go
//! with the next message (context snippets, attachments). Big pastes become chips here.

use ratatui_textarea::TextArea;

use crate::engine::{Attachment, ContextSnippet};
use crate::tui::slash::{self, CompletionSources, Completions};
use crate::tui::theme::Theme;

/// Pastes larger than this (bytes) or longer than `BIG_PASTE_LINES` become a context chip instead
/// of composer text, so a 1 MB paste stays responsive.
pub const BIG_PASTE_BYTES: usize = 16 * 1024;
pub const BIG_PASTE_LINES: usize = 200;

pub struct Popup {
    pub completions: Completions,
    pub selected: usize,
}

pub struct Composer {
    pub text: TextArea<'static>,
    pub popup: Option<Popup>,
    /// Context chips (files, symbols, big pastes) for the next message.
    pub context: Vec<ContextSnippet>,
    /// Attachment chips for the next message.
    pub attachments: Vec<Attachment>,
}

impl Composer {
    pub fn new(theme: &Theme) -> Self {
        let mut c = Self {
            text: TextArea::default(),
            popup: None,
            context: Vec::new(),
            attachments: Vec::new(),
        };
        c.reset(theme);
        c
    }

    /// Empties the text area (chips stay).
    pub fn reset(&mut self, theme: &Theme) {
        let mut t = TextArea::default();
        t.set_placeholder_text("Message (Enter sends · Shift/Alt+Enter or Ctrl+J newline · /help)");
        t.set_placeholder_style(theme.dim());
        t.set_cursor_line_style(ratatui::style::Style::default());
        t.set_style(theme.base());
        self.text = t;
    }

    pub fn restyle(&mut self, theme: &Theme) {
        self.text.set_placeholder_style(theme.dim());
        self.text.set_style(theme.base());
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The whole text, lines joined with `\n`.
    pub fn contents(&self) -> String {
        self.text.lines().join("\n")
    }

    /// The cursor line of the text up to the cursor.
    pub fn cursor_prefix(&self) -> String {
        let ratatui_textarea::DataCursor(row, col) = self.text.cursor();
        let line = self.text.lines().get(row).map(String::as_str).unwrap_or("");
        line.chars().take(col).collect()
    }

    /// Opens, updates or closes the completion popup for the text before the cursor.
    pub fn refresh_popup(&mut self, src: &CompletionSources) {
        let prefix = self.cursor_prefix();
        if prefix.is_empty() {
            self.popup = None;
            return;
        }
        self.popup = slash::complete(&prefix, src).map(|completions| Popup {
            completions,
            selected: 0,
        });
    }

    pub fn move_selection(&mut self, delta: i32) {
        if let Some(p) = self.popup.as_mut() {
            let n = p.completions.items.len() as i32;
            p.selected = (p.selected as i32 + delta).rem_euclid(n.max(1)) as usize;
        }
    }

    /// Replaces the completed token with the selected item; true when it was a folder (which
    /// keeps completing).
    pub fn complete(&mut self) -> bool {
        let Some(p) = self.popup.take() else {
            return false;
        };
        let Some(item) = p.completions.items.get(p.selected) else {
            return false;
        };
        let prefix = self.cursor_prefix();
        let n = prefix[p.completions.start..].chars().count();
        for _ in 0..n {
            self.text.delete_char();
        }
        self.text.insert_str(&item.insert);
        item.insert.ends_with('/')
    }

    /// Inserts pasted text, or makes it a chip when it is big; true when it went into the text.
    pub fn paste(&mut self, text: String) -> bool {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let lines = text.lines().count();
        if text.len() > BIG_PASTE_BYTES || lines > BIG_PASTE_LINES {
            let label = format!(
                "pasted text ({lines} lines, {})",
                crate::files::human_bytes(text.len() as u64)
            );
            self.context.push(ContextSnippet { label, text });
            false
        } else {
            self.text.insert_str(&text);
            true
        }
    }

    /// Backspace on an empty text: the last attachment chip, else the last context chip, goes.
    pub fn drop_chip(&mut self) {
        if self.attachments.pop().is_none() {
            self.context.pop();
        }
    }

    /// Adds a context chip unless one with the same label is there.
    pub fn add_context(&mut self, snippet: ContextSnippet) {
        if !self.context.iter().any(|c| c.label == snippet.label) {
            self.context.push(snippet);
        }
    }
}
