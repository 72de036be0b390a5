//! What each slash command does to the app, one function per command (`/help`, `/clear`,
//! `/file`, `/img`, `/audio`, `/copy`, `/model`, `/latent`, `/theme`, `/save`, `/load`, `/quit`;
//! `/map` and `/raw` are in `map`),
//! and how the jobs that `/img`, `/audio`, `/save`, `/load` and the autosave start are finished.

use super::effect::{Effect, Job, Outcome};
use super::App;
use crate::engine::LatentMode;
use crate::tui::codepane::PaneContent;
use crate::tui::session::SavedMessage;
use crate::tui::slash::{Command, COMMANDS};
use crate::tui::theme::Theme;

/// The /help text.
pub fn help_text() -> String {
    let mut s = String::from(
        "Keys: Enter send · Shift+Enter, Alt+Enter or Ctrl+J newline · Esc stop the reply · Ctrl+C stop, twice quit · \
         Ctrl+O code pane · Ctrl+T show/hide latent thoughts · F2 focus code pane (↑/↓ symbols, Enter adds one to the prompt) · Alt+←/→ resize pane · \
         PgUp/PgDn scroll · Tab complete · Backspace on empty input drops the last chip.\nCommands:",
    );
    for (n, a, h) in COMMANDS {
        s.push_str(&format!("\n  {n} {a} — {h}"));
    }
    s.push_str("\n  @PATH in a message adds that file to the prompt.");
    s
}

impl App {
    pub(super) fn run_command(&mut self, cmd: Command) {
        match cmd {
            Command::Help => self.notice(help_text()),
            Command::Clear => self.clear(),
            Command::File(p) => self.file(&p),
            Command::Img(p) => self.start_job(Job::LoadImage(self.resolve(&p))),
            Command::Audio(p) => self.start_job(Job::LoadAudio(self.resolve(&p))),
            Command::Copy(n) => self.copy(n),
            Command::Model => self.model(),
            Command::Latent(v) => self.set_latent(v),
            Command::Map(on) => self.map_command(on),
            Command::Raw(on) => self.raw_command(on),
            Command::Theme(name) => self.theme_command(name),
            Command::Save(name) => self.save(name),
            Command::Load(name) => self.load(name),
            Command::Quit => self.effects.push(Effect::Quit),
        }
    }

    fn start_job(&mut self, job: Job) {
        self.effects.push(Effect::Job(job));
    }

    fn clear(&mut self) {
        if self.busy() {
            self.error("a reply is still streaming; Esc stops it first");
            return;
        }
        self.chat.clear(crate::tui::session::new_name());
        self.composer.context.clear();
        self.composer.attachments.clear();
    }

    fn file(&mut self, p: &str) {
        match self.open_file(p) {
            Ok(snippet) => self.composer.add_context(snippet),
            Err(e) => self.error(format!("{e:#}")),
        }
    }

    fn copy(&mut self, n: usize) {
        let blocks: Vec<_> = self
            .chat
            .replies()
            .flat_map(|e| crate::tui::markdown::code_blocks(&e.msg.content))
            .collect();
        if blocks.is_empty() {
            self.error("there is no code block to copy yet");
            return;
        }
        let n = if n == 0 { blocks.len() } else { n };
        match blocks.get(n - 1) {
            Some(b) => self.effects.push(Effect::Copy(b.code.clone())),
            None => self.error(format!(
                "there is no code block {n} (there are {})",
                blocks.len()
            )),
        }
    }

    fn model(&mut self) {
        let text = match &self.engine {
            Ok(i) => format!(
                "model: {} on {} · context {} tokens · images: {} · audio: {}\n{}\n(to use another model, restart with --model DIR)",
                i.model_name,
                i.device,
                i.context_limit,
                if i.accepts_images { "yes" } else { "no" },
                if i.accepts_audio { "yes" } else { "no" },
                i.description
            ),
            Err(e) => format!("no model is loaded: {e}"),
        };
        self.notice(text);
    }

    /// `/latent on|off|auto` sets the mode and says what it will do with this model; `/latent`
    /// alone says the mode.
    fn set_latent(&mut self, v: Option<LatentMode>) {
        if let Some(m) = v {
            self.latent = m;
        }
        let spec = self.engine.as_ref().ok().and_then(|i| i.latent);
        let model = self.model_name().to_string();
        let what = match (self.latent, spec) {
            (LatentMode::Off, _) => "replies use token mode".to_string(),
            (_, Some(s)) => format!(
                "{model} was latent-trained: {} continuous thoughts per reply",
                s.max_thoughts()
            ),
            (LatentMode::On, None) => format!(
                "but {model} was not latent-trained (no latent.json), so replies fail until /latent off or auto"
            ),
            (LatentMode::Auto, None) => {
                format!("{model} was not latent-trained (no latent.json), so replies use token mode")
            }
        };
        let msg = format!("latent reasoning mode {}: {what}", self.latent.name());
        if self.latent == LatentMode::On && spec.is_none() {
            self.error(msg);
        } else {
            self.notice(msg);
        }
    }

    fn theme_command(&mut self, name: Option<String>) {
        let Some(name) = name else {
            let current = format!(
                "theme: {} (try /theme light, dark, high-contrast)",
                self.theme.name
            );
            return self.notice(current);
        };
        let dir = self.paths.config_dir.as_ref().map(|d| d.join("themes"));
        match Theme::load(&name, dir.as_deref()) {
            Ok(t) => {
                self.set_theme(t);
                self.notice(format!("theme: {name}"));
            }
            Err(e) => self.error(format!("{e:#}")),
        }
    }

    fn save(&mut self, name: Option<String>) {
        let name = name.unwrap_or_else(|| self.chat.session_name.clone());
        match self.data_dir() {
            Ok(d) => {
                let dir = d.to_path_buf();
                let messages = self.chat.messages();
                self.start_job(Job::SaveSession {
                    dir,
                    name,
                    messages,
                    auto: false,
                });
            }
            Err(e) => self.error(e),
        }
    }

    fn load(&mut self, name: Option<String>) {
        if self.busy() {
            self.error("a reply is still streaming; Esc stops it first");
            return;
        }
        let dir = match self.data_dir() {
            Ok(d) => d.to_path_buf(),
            Err(e) => return self.error(e),
        };
        let Some(name) = name.or_else(|| crate::tui::session::list(&dir).into_iter().next()) else {
            return self.error("there is no saved session yet");
        };
        self.start_job(Job::LoadSession { dir, name });
    }

    /// Applies what a finished job reports.
    pub(super) fn finished(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Image(Ok((att, img))) => {
                let label = crate::attach::chip_label(&att);
                match self.picker.new_protocol(
                    img,
                    ratatui::layout::Size::new(40, 16),
                    ratatui_image::Resize::Fit(None),
                ) {
                    Ok(protocol) => self.code.show(PaneContent::Image {
                        label: label.clone(),
                        protocol: Box::new(protocol),
                    }),
                    Err(e) => self.error(format!("no preview for {}: {e}", att.path.display())),
                }
                self.composer.attachments.push(att);
                if self.engine.as_ref().is_ok_and(|i| !i.accepts_images) {
                    self.notice(format!(
                        "attached {label}; note: this model ({}) takes no image input, so it will not see it",
                        self.model_name()
                    ));
                }
            }
            Outcome::Audio(Ok((att, wave))) => {
                let label = crate::attach::chip_label(&att);
                self.code.show(PaneContent::Audio {
                    label: label.clone(),
                    wave,
                });
                self.composer.attachments.push(att);
                if self.engine.as_ref().is_ok_and(|i| !i.accepts_audio) {
                    self.notice(format!(
                        "attached {label}; note: this model ({}) takes no audio input, so it will not hear it",
                        self.model_name()
                    ));
                }
            }
            Outcome::Image(Err(e)) | Outcome::Audio(Err(e)) => self.error(e),
            Outcome::Saved { name, auto, result } => self.saved(name, auto, result),
            Outcome::SessionLoaded { name, result } => self.session_loaded(name, result),
            Outcome::MapBuilt(result) => self.map_built(result),
        }
    }

    fn saved(&mut self, name: String, auto: bool, result: Result<std::path::PathBuf, String>) {
        match (result, auto) {
            (Ok(_), true) => {}
            (Ok(path), false) => {
                self.chat.session_name = name;
                self.notice(format!("saved to {}", path.display()));
            }
            (Err(e), true) => self.error(format!("autosave failed: {e}")),
            (Err(e), false) => self.error(e),
        }
    }

    fn session_loaded(&mut self, name: String, result: Result<Vec<SavedMessage>, String>) {
        match result {
            Ok(msgs) => {
                let n = msgs.len();
                self.load_messages(&name, msgs);
                self.notice(format!("loaded session {name} ({n} messages)"));
            }
            Err(e) => self.error(e),
        }
    }
}
