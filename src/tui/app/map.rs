//! The repo map in the TUI: its state (on or off, the tags of the last build, whether a build is
//! running), `/map` (show the map a short message would carry, as a system note), `/map on|off`,
//! `/raw on|off` (completion mode), and the map's part of a prompt. Builds run as jobs off the UI
//! thread: at start, after each reply (incremental: only changed files are parsed again) and on
//! `/map on`; ranking and rendering, which read no file, happen here when a message is sent.

use std::sync::Arc;

use super::effect::{Effect, Job};
use super::App;
use crate::engine::prompt::Extra;
use crate::engine::{ChatMessage, TokenCounter};
use crate::repomap::render::snippet;
use crate::repomap::{BuildStats, RepoTags};

/// The repo map's state.
#[derive(Clone, Debug, Default)]
pub struct MapState {
    /// `/map off` turns it off (the config's `repo_map_tokens` = 0 starts it off).
    pub off: bool,
    /// The last build, and what it did.
    pub tags: Option<(Arc<RepoTags>, BuildStats)>,
    pub building: bool,
    /// Why the last build failed.
    pub error: Option<String>,
}

impl MapState {
    /// The status bar's word on it: `map off`, `map N files`, or nothing before the first build
    /// and in a folder without source files.
    pub fn status(&self) -> Option<String> {
        match (&self.tags, self.off) {
            (_, true) => Some("map off".into()),
            (Some((t, _)), false) if !t.files.is_empty() => {
                Some(format!("map {} files", t.files.len()))
            }
            (_, false) => None,
        }
    }
}

impl App {
    /// Starts an incremental build of the map of the working folder, unless one is running or
    /// the map is off.
    pub fn build_map(&mut self) {
        if self.map.off || self.map.building || self.paths.cwd.as_os_str().is_empty() {
            return;
        }
        self.map.building = true;
        self.effects.push(Effect::Job(Job::BuildMap {
            root: self.paths.cwd.clone(),
            previous: self.map.tags.as_ref().map(|(t, _)| Arc::clone(t)),
        }));
    }

    /// A finished build.
    pub(super) fn map_built(&mut self, result: Result<(Arc<RepoTags>, BuildStats), String>) {
        self.map.building = false;
        match result {
            Ok(t) => {
                self.map.error = None;
                self.map.tags = Some(t);
            }
            Err(e) => self.map.error = Some(e),
        }
    }

    /// The tokens the map may take of a prompt: the config's share, within half the prompt
    /// budget (what a short message leaves).
    fn map_budget(&self) -> usize {
        let limit = self.engine.as_ref().map_or(0, |i| i.context_limit);
        let budget = limit.saturating_sub(self.config.max_new_tokens);
        self.config.repo_map_tokens.min(budget / 2)
    }

    /// `/map`, `/map on`, `/map off`.
    pub(super) fn map_command(&mut self, on: Option<bool>) {
        match on {
            Some(true) => {
                self.map.off = false;
                self.notice("repo map on: prompts carry the definitions the code refers to most");
                self.build_map();
            }
            Some(false) => {
                self.map.off = true;
                self.notice("repo map off: prompts carry no repo map");
            }
            None => self.show_map(),
        }
    }

    fn show_map(&mut self) {
        if self.map.off {
            self.notice("the repo map is off (/map on turns it on)");
            return;
        }
        let Some((tags, stats)) = self.map.tags.clone() else {
            let why = match &self.map.error {
                Some(e) => format!("no repo map: {e}"),
                None => "the repo map is being built; try /map again in a moment".into(),
            };
            self.notice(why);
            return;
        };
        let budget = self.map_budget();
        let head = format!(
            "repo map of {} files ({} definitions, {} files parsed by the last build); up to {budget} tokens of it go with each message",
            stats.files, stats.defs, stats.parsed
        );
        match snippet(&tags, "", &*self.counter, budget) {
            Some(s) => self.notice(format!("{head}\n{}\n{}", s.label, s.text.trim_end())),
            None => self.notice(format!("{head}\n(no definition fits)")),
        }
        self.build_map();
    }

    /// `/raw`, `/raw on`, `/raw off`: completion mode.
    pub(super) fn raw_command(&mut self, on: Option<bool>) {
        if let Some(on) = on {
            self.raw = on;
        }
        self.notice(if self.raw {
            "completion mode on: each message is continued as it stands, without the chat template, history or repo map (/raw off to chat)"
        } else {
            "completion mode off: messages go through the chat template"
        });
    }

    /// `history` fitted to `budget`, with the map for its last message when the map is on.
    pub(super) fn fit_prompt(
        &self,
        history: &[ChatMessage],
        budget: usize,
    ) -> Result<(Vec<ChatMessage>, Vec<String>), String> {
        let count: &TokenCounter = &self.counter;
        let tags = self.map.tags.as_ref().filter(|_| !self.map.off);
        let (Some((tags, _)), Some(last)) = (tags, history.last()) else {
            return crate::engine::prompt::fit(history, count, budget);
        };
        let make = |n: usize| snippet(tags, &last.content, &**count, n);
        let extra = Extra {
            max_tokens: self.config.repo_map_tokens,
            make: &make,
        };
        crate::engine::prompt::fit_with(history, count, budget, Some(&extra))
    }
}
