//! The chat history: entries (messages, notices, errors) with a version each that the render
//! cache in `ui` keys on, the cache itself, scrolling, the session name, and what a streaming reply
//! writes into its entry. No I/O: saving and loading sessions are effects of the app.

use std::cell::{Cell, RefCell};

use crate::engine::{ChatMessage, Role, ThoughtToken};
use crate::tui::session::SavedMessage;

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
    /// Latent mode's continuous thoughts before this reply, each rounded to its nearest tokens
    /// (shown, and saved with the session).
    pub thoughts: Vec<Vec<ThoughtToken>>,
    /// Bumped on every change (the render cache's key).
    pub version: u64,
}

/// Cached wrapped lines for one entry.
pub struct CachedEntry {
    pub key: (u64, u16, u64, usize),
    pub lines: Vec<ratatui::text::Line<'static>>,
    /// Code blocks in this entry (for numbering the next ones).
    pub blocks: usize,
}

/// The conversation as the chat pane shows it.
pub struct Chat {
    pub entries: Vec<Entry>,
    pub cache: RefCell<Vec<Option<CachedEntry>>>,
    /// Lines scrolled up from the bottom.
    pub scroll: usize,
    /// How far the chat could scroll at the last frame (set by `ui::draw`, bounds `scroll`).
    pub max_scroll: Cell<usize>,
    /// The session file this conversation saves to.
    pub session_name: String,
    /// Tokens of the context in use: the last prompt plus the tokens streamed since.
    pub context_used: usize,
    next_version: u64,
}

impl Chat {
    pub fn new(session_name: String) -> Self {
        Self {
            entries: Vec::new(),
            cache: RefCell::new(Vec::new()),
            scroll: 0,
            max_scroll: Cell::new(0),
            session_name,
            context_used: 0,
            next_version: 1,
        }
    }

    pub fn version(&mut self) -> u64 {
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
            thoughts: Vec::new(),
            version,
        });
        self.scroll = 0;
    }

    /// A notice about the reply being written, placed just above it.
    pub fn notice_before_reply(&mut self, text: impl Into<String>) {
        let at = self
            .entries
            .iter()
            .rposition(|e| e.kind == EntryKind::Message && e.msg.role == Role::Assistant);
        self.notice(text);
        if let Some(at) = at {
            if let Some(n) = self.entries.pop() {
                self.entries.insert(at, n);
                let mut cache = self.cache.borrow_mut();
                if cache.len() > at {
                    cache.insert(at, None);
                }
            }
        }
    }

    /// Marks every reply with thoughts changed (their thinking lines are drawn anew).
    pub fn touch_thoughts(&mut self) {
        let v = self.version();
        for e in self.entries.iter_mut().filter(|e| !e.thoughts.is_empty()) {
            e.version = v;
        }
    }

    pub fn notice(&mut self, text: impl Into<String>) {
        self.push(EntryKind::Notice, ChatMessage::new(Role::System, text));
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.push(EntryKind::Error, ChatMessage::new(Role::System, text));
    }

    /// Empties the conversation and starts a new session name.
    pub fn clear(&mut self, session_name: String) {
        self.entries.clear();
        self.cache.borrow_mut().clear();
        self.context_used = 0;
        self.session_name = session_name;
    }

    /// Replaces the conversation with saved messages.
    pub fn load(&mut self, name: &str, messages: Vec<SavedMessage>) {
        self.entries.clear();
        self.cache.borrow_mut().clear();
        for m in messages {
            self.push(EntryKind::Message, m.message);
            if let Some(e) = self.entries.last_mut() {
                e.thoughts = m.thoughts;
            }
        }
        self.session_name = name.to_string();
    }

    pub fn scroll_by(&mut self, lines: i32) {
        let max = self.max_scroll.get() as i64;
        self.scroll = (self.scroll as i64 + i64::from(lines)).clamp(0, max) as usize;
    }

    /// The conversation's messages with their thoughts (for saving).
    pub fn messages(&self) -> Vec<SavedMessage> {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::Message)
            .map(|e| SavedMessage {
                message: e.msg.clone(),
                thoughts: e.thoughts.clone(),
            })
            .collect()
    }

    /// The conversation so far as the model sees it (no empty reply placeholder, attachments
    /// that were not sent left out) plus `last`.
    pub fn history_with(&self, last: ChatMessage) -> Vec<ChatMessage> {
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

    /// The assistant replies, oldest first.
    pub fn replies(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::Message && e.msg.role == Role::Assistant)
    }

    /// The reply being written (the last assistant message), stamped with `version`.
    pub fn last_reply(&mut self, version: u64) -> Option<&mut Entry> {
        let e = self
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.kind == EntryKind::Message && e.msg.role == Role::Assistant)?;
        e.version = version;
        Some(e)
    }
}
