//! Slash commands: the table the help text and the completion popup show, parsing a composer line
//! into a typed `Command`, and completion candidates for command names, path arguments, theme and
//! session names, and `@path` mentions.

use std::path::Path;

use crate::files::complete_path;

/// Name, argument hint, one-line help.
pub const COMMANDS: [(&str, &str, &str); 14] = [
    ("/help", "", "keys and commands"),
    ("/clear", "", "start a new conversation"),
    (
        "/file",
        "PATH",
        "open a file in the code pane and add it to the next prompt",
    ),
    ("/img", "PATH", "attach a PNG/JPEG image"),
    ("/audio", "PATH", "attach WAV/FLAC/MP3 audio"),
    ("/copy", "N", "copy code block N to the clipboard"),
    ("/model", "", "what model is running"),
    (
        "/latent",
        "[on|off|auto]",
        "latent-reasoning mode (alone: say which)",
    ),
    (
        "/map",
        "[on|off]",
        "show the repo map; on/off: send it with messages or not",
    ),
    (
        "/raw",
        "[on|off]",
        "completion mode: continue text without the chat template",
    ),
    (
        "/theme",
        "NAME",
        "switch theme (dark, light, high-contrast, ...)",
    ),
    ("/save", "[NAME]", "save this conversation"),
    (
        "/load",
        "[NAME]",
        "load a saved conversation (newest if no name)",
    ),
    ("/quit", "", "leave (Ctrl+C twice does too)"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Clear,
    File(String),
    Img(String),
    Audio(String),
    Copy(usize),
    Model,
    Latent(Option<crate::engine::LatentMode>),
    /// `/map` (show), `/map on`, `/map off`.
    Map(Option<bool>),
    /// `/raw` (say which), `/raw on`, `/raw off`.
    Raw(Option<bool>),
    Theme(Option<String>),
    Save(Option<String>),
    Load(Option<String>),
    Quit,
}

/// Parses a line that starts with `/`. Errors are one line naming what was wrong.
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (name, arg) = match line.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (line, ""),
    };
    let arg_opt = || (!arg.is_empty()).then(|| arg.to_string());
    let need = |what: &str| -> Result<String, String> {
        if arg.is_empty() {
            Err(format!("{name} needs {what}"))
        } else {
            Ok(arg.to_string())
        }
    };
    let none = |c: Command| -> Result<Command, String> {
        if arg.is_empty() {
            Ok(c)
        } else {
            Err(format!("{name} takes no argument"))
        }
    };
    match name {
        "/help" | "/?" => none(Command::Help),
        "/clear" | "/new" => none(Command::Clear),
        "/file" => need("a PATH").map(Command::File),
        "/img" | "/image" => need("a PATH").map(Command::Img),
        "/audio" => need("a PATH").map(Command::Audio),
        "/copy" => {
            if arg.is_empty() {
                return Ok(Command::Copy(0));
            }
            match arg.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Command::Copy(n)),
                _ => Err(format!(
                    "/copy needs a code block number (1, 2, ...), not {arg:?}"
                )),
            }
        }
        "/model" => none(Command::Model),
        "/latent" => match arg {
            "" => Ok(Command::Latent(None)),
            other => other
                .parse()
                .map(|m| Command::Latent(Some(m)))
                .map_err(|_| format!("/latent takes on, off or auto, not {other:?}")),
        },
        "/map" | "/raw" => {
            let on = match arg {
                "" => None,
                "on" => Some(true),
                "off" => Some(false),
                other => return Err(format!("{name} takes on or off, not {other:?}")),
            };
            Ok(if name == "/map" {
                Command::Map(on)
            } else {
                Command::Raw(on)
            })
        }
        "/theme" => Ok(Command::Theme(arg_opt())),
        "/save" => Ok(Command::Save(arg_opt())),
        "/load" | "/resume" => Ok(Command::Load(arg_opt())),
        "/quit" | "/exit" | "/q" => none(Command::Quit),
        other => Err(format!("unknown command {other} (try /help)")),
    }
}

/// One completion choice: `insert` replaces the text from `Completions::start` to the cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub insert: String,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completions {
    /// Byte offset in the line where the replaced text starts.
    pub start: usize,
    pub items: Vec<Candidate>,
}

/// What the popup completes from.
pub struct CompletionSources<'a> {
    pub cwd: &'a Path,
    pub themes: &'a [String],
    pub sessions: &'a [String],
}

const MAX_ITEMS: usize = 12;

/// Completions for the text of the cursor line up to the cursor (`line` is that prefix).
pub fn complete(line: &str, src: &CompletionSources) -> Option<Completions> {
    if line.starts_with('/') {
        match line.split_once(' ') {
            None => {
                let items: Vec<Candidate> = COMMANDS
                    .iter()
                    .filter(|(n, _, _)| n.starts_with(line))
                    .map(|(n, a, h)| Candidate {
                        insert: if a.is_empty() {
                            n.to_string()
                        } else {
                            format!("{n} ")
                        },
                        detail: if a.is_empty() {
                            h.to_string()
                        } else {
                            format!("{a}  {h}")
                        },
                    })
                    .collect();
                return (!items.is_empty()).then_some(Completions { start: 0, items });
            }
            Some((cmd, arg)) => {
                let start = cmd.len() + 1;
                let words: Vec<Candidate> = match cmd {
                    "/file" | "/img" | "/image" | "/audio" => {
                        complete_path(src.cwd, arg, MAX_ITEMS)
                            .into_iter()
                            .map(|p| Candidate {
                                insert: p,
                                detail: String::new(),
                            })
                            .collect()
                    }
                    "/theme" => names(src.themes, arg, "theme"),
                    "/load" => names(src.sessions, arg, "session"),
                    "/latent" => names(
                        &crate::engine::LatentMode::NAMES.map(String::from),
                        arg,
                        "latent mode",
                    ),
                    _ => Vec::new(),
                };
                return (!words.is_empty()).then_some(Completions {
                    start,
                    items: words,
                });
            }
        }
    }
    let start = line
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0);
    let token = &line[start..];
    let path = token.strip_prefix('@')?;
    let items: Vec<Candidate> = complete_path(src.cwd, path, MAX_ITEMS)
        .into_iter()
        .map(|p| Candidate {
            insert: format!("@{p}"),
            detail: String::new(),
        })
        .collect();
    (!items.is_empty()).then_some(Completions { start, items })
}

fn names(all: &[String], prefix: &str, detail: &str) -> Vec<Candidate> {
    all.iter()
        .filter(|n| n.starts_with(prefix))
        .take(MAX_ITEMS)
        .map(|n| Candidate {
            insert: n.clone(),
            detail: detail.to_string(),
        })
        .collect()
}

/// The `@path` mentions in a prompt (a token starting with `@` and at least one more character).
pub fn mentions(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix('@'))
        .map(|w| w.trim_end_matches([',', '.', ';', ':', ')', '?', '!']))
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LatentMode;

    #[test]
    fn parse_commands() {
        let check = |s: &str, c: Command| assert_eq!(parse(s), Ok(c), "{s}");
        check("/help", Command::Help);
        check("/file src/main.rs", Command::File("src/main.rs".into()));
        check("/copy 2", Command::Copy(2));
        check("/copy", Command::Copy(0));
        check("/latent", Command::Latent(None));
        check("/latent off", Command::Latent(Some(LatentMode::Off)));
        check("/latent on", Command::Latent(Some(LatentMode::On)));
        check("/latent auto", Command::Latent(Some(LatentMode::Auto)));
        check("/latent true", Command::Latent(Some(LatentMode::On)));
        check("/theme light", Command::Theme(Some("light".into())));
        check("/save", Command::Save(None));
        check("  /quit  ", Command::Quit);
        assert_eq!(parse("/file"), Err("/file needs a PATH".into()));
        assert_eq!(
            parse("/copy x"),
            Err("/copy needs a code block number (1, 2, ...), not \"x\"".into())
        );
        assert_eq!(parse("/quit now"), Err("/quit takes no argument".into()));
        assert_eq!(
            parse("/bogus"),
            Err("unknown command /bogus (try /help)".into())
        );
    }

    #[test]
    fn every_table_command_parses() {
        for (name, arg, _) in COMMANDS {
            let line = match arg {
                "PATH" => format!("{name} x"),
                "N" => format!("{name} 1"),
                "NAME" => format!("{name} dark"),
                _ => name.to_string(),
            };
            assert!(parse(&line).is_ok(), "{line}");
        }
    }

    #[test]
    fn completion_of_names_args_and_mentions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.rs"), "").unwrap();
        std::fs::write(dir.path().join("lib.py"), "").unwrap();
        let themes = vec!["dark".to_string(), "light".to_string()];
        let src = CompletionSources {
            cwd: dir.path(),
            themes: &themes,
            sessions: &[],
        };
        let c = complete("/l", &src).unwrap();
        let ins: Vec<_> = c.items.iter().map(|i| i.insert.as_str()).collect();
        assert_eq!(ins, vec!["/latent ", "/load "]);
        let all = complete("/", &src).unwrap();
        assert_eq!(all.items.len(), COMMANDS.len());
        let c = complete("/theme l", &src).unwrap();
        assert_eq!((c.start, c.items[0].insert.as_str()), (7, "light"));
        let c = complete("/file m", &src).unwrap();
        assert_eq!((c.start, c.items[0].insert.as_str()), (6, "main.rs"));
        let c = complete("explain @li", &src).unwrap();
        assert_eq!((c.start, c.items[0].insert.as_str()), (8, "@lib.py"));
        assert!(complete("plain words", &src).is_none());
        // A wide space before the mention must not split a character.
        let c = complete("x\u{3000}@ma", &src).unwrap();
        assert_eq!((c.start, c.items[0].insert.as_str()), (4, "@main.rs"));
        assert!(complete("/zzz", &src).is_none());
        let c = complete("/latent ", &src).unwrap();
        let ins: Vec<_> = c.items.iter().map(|i| i.insert.as_str()).collect();
        assert_eq!((c.start, ins), (8, vec!["on", "off", "auto"]));
        let c = complete("/latent a", &src).unwrap();
        assert_eq!(c.items[0].insert, "auto");
        assert_eq!(
            parse("/latent maybe"),
            Err("/latent takes on, off or auto, not \"maybe\"".into())
        );
    }

    #[test]
    fn mentions_are_found() {
        assert_eq!(
            mentions("look at @src/a.rs, and @b.py. not a@b or @"),
            vec!["src/a.rs", "b.py"]
        );
    }
}
