//! What each slash command does to the app (split from `app` to keep files small): attachments,
//! files, copy, theme, latent mode, sessions, help.

use crate::app::{App, Effect};
use crate::codepane::PaneContent;
use crate::commands::{Command, COMMANDS};
use crate::engine::MediaData;
use crate::theme::Theme;

/// The /help text.
pub fn help_text() -> String {
    let mut s = String::from(
        "Keys: Enter send · Shift+Enter, Alt+Enter or Ctrl+J newline · Esc stop the reply · Ctrl+C stop, twice quit · \
         Ctrl+O code pane · F2 focus code pane (↑/↓ symbols, Enter adds one to the prompt) · Alt+←/→ resize pane · \
         PgUp/PgDn scroll · Tab complete · Backspace on empty input drops the last chip.\nCommands:",
    );
    for (n, a, h) in COMMANDS {
        s.push_str(&format!("\n  {n} {a} — {h}"));
    }
    s.push_str("\n  @PATH in a message adds that file to the prompt.");
    s
}

pub fn run(app: &mut App, cmd: Command) {
    match cmd {
        Command::Help => app.notice(help_text()),
        Command::Clear => {
            if app.busy() {
                app.error("a reply is still streaming; Esc stops it first");
                return;
            }
            app.entries.clear();
            app.cache.borrow_mut().clear();
            app.pending_context.clear();
            app.pending_attachments.clear();
            app.context_used = 0;
            app.session_name = crate::session::new_name();
        }
        Command::File(p) => match app.open_file(&p) {
            Ok(snippet) => {
                if !app.pending_context.iter().any(|c| c.label == snippet.label) {
                    app.pending_context.push(snippet);
                }
            }
            Err(e) => app.error(format!("{e:#}")),
        },
        Command::Img(p) => {
            let path = resolve(app, &p);
            match crate::attach::load_image(&path) {
                Ok((att, img)) => {
                    let label = crate::attach::chip_label(&att);
                    match app.picker.new_protocol(
                        img,
                        ratatui::layout::Size::new(40, 16),
                        ratatui_image::Resize::Fit(None),
                    ) {
                        Ok(protocol) => {
                            app.pane = Some(PaneContent::Image {
                                label: label.clone(),
                                protocol: Box::new(protocol),
                            });
                            app.pane_visible = true;
                        }
                        Err(e) => app.error(format!("no preview for {}: {e}", path.display())),
                    }
                    app.pending_attachments.push(att);
                    if app.engine.as_ref().is_ok_and(|i| !i.accepts_images) {
                        app.notice(format!(
                            "attached {label}; note: this model ({}) takes no image input, so it will not see it",
                            app.model_name()
                        ));
                    }
                }
                Err(e) => app.error(format!("{e:#}")),
            }
        }
        Command::Audio(p) => {
            let path = resolve(app, &p);
            match crate::attach::load_audio(&path) {
                Ok(att) => {
                    let label = crate::attach::chip_label(&att);
                    let wave = match att.data.as_deref() {
                        Some(MediaData::Mono { samples, .. }) => {
                            crate::attach::waveform(samples, 120)
                        }
                        _ => Vec::new(),
                    };
                    app.pane = Some(PaneContent::Audio {
                        label: label.clone(),
                        wave,
                    });
                    app.pane_visible = true;
                    app.pending_attachments.push(att);
                    if app.engine.as_ref().is_ok_and(|i| !i.accepts_audio) {
                        app.notice(format!(
                            "attached {label}; note: this model ({}) takes no audio input, so it will not hear it",
                            app.model_name()
                        ));
                    }
                }
                Err(e) => app.error(format!("{e:#}")),
            }
        }
        Command::Copy(n) => {
            let blocks: Vec<_> = app
                .entries
                .iter()
                .filter(|e| {
                    e.kind == crate::app::EntryKind::Message
                        && e.msg.role == crate::engine::Role::Assistant
                })
                .flat_map(|e| crate::markdown::code_blocks(&e.msg.content))
                .collect();
            if blocks.is_empty() {
                app.error("there is no code block to copy yet");
                return;
            }
            let n = if n == 0 { blocks.len() } else { n };
            match blocks.get(n - 1) {
                Some(b) => app.effects.push(Effect::Copy(b.code.clone())),
                None => app.error(format!(
                    "there is no code block {n} (there are {})",
                    blocks.len()
                )),
            }
        }
        Command::Model => {
            let text = match &app.engine {
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
            app.notice(text);
        }
        Command::Latent(v) => {
            app.latent = v.unwrap_or(!app.latent);
            app.notice(format!(
                "latent reasoning mode {}",
                if app.latent { "on" } else { "off" }
            ));
        }
        Command::Theme(None) => app.notice(format!(
            "theme: {} (try /theme light, dark, high-contrast)",
            app.theme.name
        )),
        Command::Theme(Some(name)) => {
            let dir = app.paths.config_dir.as_ref().map(|d| d.join("themes"));
            match Theme::load(&name, dir.as_deref()) {
                Ok(t) => {
                    app.set_theme(t);
                    app.notice(format!("theme: {name}"));
                }
                Err(e) => app.error(format!("{e:#}")),
            }
        }
        Command::Save(name) => {
            let name = name.unwrap_or_else(|| app.session_name.clone());
            let dir = match app.data_dir() {
                Ok(d) => d.to_path_buf(),
                Err(e) => return app.error(e),
            };
            match crate::session::save(&dir, &name, &app.messages()) {
                Ok(path) => {
                    app.session_name = name;
                    app.notice(format!("saved to {}", path.display()))
                }
                Err(e) => app.error(format!("{e:#}")),
            }
        }
        Command::Load(name) => {
            if app.busy() {
                app.error("a reply is still streaming; Esc stops it first");
                return;
            }
            let dir = match app.data_dir() {
                Ok(d) => d.to_path_buf(),
                Err(e) => return app.error(e),
            };
            let Some(name) = name.or_else(|| crate::session::list(&dir).into_iter().next()) else {
                return app.error("there is no saved session yet");
            };
            match crate::session::load(&dir, &name) {
                Ok(msgs) => {
                    let n = msgs.len();
                    app.load_messages(&name, msgs);
                    app.notice(format!("loaded session {name} ({n} messages)"));
                }
                Err(e) => app.error(format!("{e:#}")),
            }
        }
        Command::Quit => app.effects.push(Effect::Quit),
    }
}

fn resolve(app: &App, p: &str) -> std::path::PathBuf {
    let path = crate::files::expand_home(p);
    if path.is_absolute() {
        path
    } else {
        app.paths.cwd.join(path)
    }
}
