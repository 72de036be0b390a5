//! Sending a message: a slash command runs; otherwise the composer's text, `@file` mentions and
//! chips become a user message, the conversation is fitted to the context budget and a generation
//! is requested. Then the reply's events stream into the chat, and the finished conversation is
//! saved (a job, off the UI thread).

use std::sync::atomic::Ordering;

use super::chat::EntryKind;
use super::effect::{Effect, Job};
use super::{App, GenState};
use crate::engine::{
    AttachmentKind, ChatMessage, EngineInfo, GenEvent, GenRequest, Role, Sampling,
};
use crate::tui::slash;

impl App {
    pub(super) fn submit(&mut self) {
        let text = self.composer.contents();
        let trimmed = text.trim();
        self.composer.popup = None;
        if trimmed.starts_with('/') && !trimmed.contains('\n') {
            match slash::parse(trimmed) {
                Ok(cmd) => {
                    self.composer.reset(&self.theme);
                    self.run_command(cmd);
                }
                Err(e) => self.error(e),
            }
            return;
        }
        if trimmed.is_empty()
            && self.composer.context.is_empty()
            && self.composer.attachments.is_empty()
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
        let Some(msg) = self.take_message(trimmed) else {
            return;
        };
        self.send(msg, &info);
    }

    /// The user message: the text, the context chips plus `@file` mentions (opened in the code
    /// pane), and the attachment chips. `None` (chips kept) when a mention cannot be read.
    fn take_message(&mut self, text: &str) -> Option<ChatMessage> {
        let mut context = std::mem::take(&mut self.composer.context);
        for m in slash::mentions(text) {
            let path = self.resolve(m);
            if !path.is_file() || context.iter().any(|c| c.label == m) {
                continue;
            }
            match self.open_file(m) {
                Ok(s) => context.push(s),
                Err(e) => {
                    self.composer.context = context;
                    self.error(format!("@{m}: {e:#}"));
                    return None;
                }
            }
        }
        let mut msg = ChatMessage::new(Role::User, text);
        msg.attachments = std::mem::take(&mut self.composer.attachments);
        msg.context = context;
        Some(msg)
    }

    /// Fits the conversation plus `msg` to the context and requests a reply; attachments the
    /// model cannot take are shown but not sent.
    fn send(&mut self, msg: ChatMessage, info: &EngineInfo) {
        let refused: Vec<&str> = msg
            .attachments
            .iter()
            .filter_map(|a| match a.kind {
                AttachmentKind::Image { .. } if !info.accepts_images => Some("image"),
                AttachmentKind::Audio { .. } if !info.accepts_audio => Some("audio"),
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
        // Completion mode continues this message alone, without history or map.
        let history = if self.raw {
            vec![sent]
        } else {
            self.chat.history_with(sent)
        };
        let fitted = if self.raw {
            crate::engine::prompt::fit(&history, &self.counter, budget)
        } else {
            self.fit_prompt(&history, budget)
        };
        let messages = match fitted {
            Ok((m, notes)) => {
                for n in notes {
                    self.notice(n);
                }
                m
            }
            Err(e) => {
                self.composer.context = msg.context;
                self.composer.attachments = msg.attachments;
                self.error(e);
                return;
            }
        };
        self.composer.reset(&self.theme);
        self.chat.push(EntryKind::Message, msg);
        if let Some(e) = self.chat.entries.last_mut() {
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
        self.chat
            .push(EntryKind::Message, ChatMessage::new(Role::Assistant, ""));
        self.cancel.store(false, Ordering::Relaxed);
        self.gen = GenState::Waiting;
        self.effects.push(Effect::Generate(GenRequest {
            messages,
            latent: self.latent,
            latent_min_cosine: self.config.latent_min_cosine,
            raw: self.raw,
            max_new_tokens: self.config.max_new_tokens,
            sampling: Sampling {
                temperature: self.config.temperature,
                top_p: self.config.top_p,
                top_k: self.config.top_k,
                seed: 0,
            },
        }));
    }

    /// A reply's event: the prompt size, a piece of text, the end (with its statistics; the
    /// conversation is then saved), or an error.
    pub(super) fn on_gen(&mut self, ev: GenEvent) {
        let v = self.chat.version();
        match ev {
            GenEvent::Prompt { tokens } => self.chat.context_used = tokens,
            GenEvent::Thought { candidates, .. } => {
                if let Some(e) = self.chat.last_reply(v) {
                    e.thoughts.push(candidates);
                }
            }
            GenEvent::Notice(n) => self.chat.notice_before_reply(n),
            GenEvent::Token { text } => {
                if self.gen == GenState::Waiting {
                    self.gen = GenState::Streaming;
                }
                self.chat.context_used += 1;
                if let Some(e) = self.chat.last_reply(v) {
                    e.msg.content.push_str(&text);
                }
            }
            GenEvent::Done {
                tokens,
                tok_per_s,
                first_token_ms,
                cancelled,
                thoughts,
            } => {
                self.gen = GenState::Idle;
                self.tok_per_s = Some(tok_per_s);
                let mut stats = format!(
                    "{tokens} tokens · {tok_per_s:.1} tok/s · first token {first_token_ms:.0} ms"
                );
                if thoughts > 0 {
                    stats.push_str(&format!(" · {thoughts} thoughts"));
                }
                if cancelled {
                    stats.push_str(" · stopped");
                }
                if let Some(e) = self.chat.last_reply(v) {
                    e.stats = Some(stats);
                }
                self.autosave();
                // Files may have changed meanwhile: the next message gets a fresh map.
                self.build_map();
            }
            GenEvent::Error(e) => {
                self.gen = GenState::Idle;
                self.error(format!("generation failed: {e}"));
            }
        }
    }

    /// Saves the conversation after a reply, when there is a data folder.
    fn autosave(&mut self) {
        let Some(dir) = self.paths.data_dir.clone() else {
            return;
        };
        self.effects.push(Effect::Job(Job::SaveSession {
            dir,
            name: self.chat.session_name.clone(),
            messages: self.chat.messages(),
            auto: true,
        }));
    }
}
