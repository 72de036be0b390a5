//! Colour themes: `themes/*.toml` (dark, light, high-contrast are built into the binary) plus any
//! `NAME.toml` in the user's `themes/` config folder. Every style a widget uses comes from here, and
//! the syntax colours feed syntect, so code is highlighted in the theme's own palette.

use std::path::Path;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

const BUILTIN: [(&str, &str); 3] = [
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
];

/// The names of the themes built into the binary.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    fg: String,
    bg: String,
    dim: String,
    accent: String,
    user: String,
    assistant: String,
    notice: String,
    error: String,
    border: String,
    border_focus: String,
    status_fg: String,
    status_bg: String,
    popup_bg: String,
    selection_bg: String,
    chip_fg: String,
    chip_bg: String,
    code_bg: String,
    heading: String,
    link: String,
    syntax: SyntaxFile,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyntaxFile {
    text: String,
    comment: String,
    string: String,
    keyword: String,
    function: String,
    #[serde(rename = "type")]
    ty: String,
    number: String,
    constant: String,
    operator: String,
}

/// Syntax colours (RGB, so syntect can use them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntaxColors {
    pub text: [u8; 3],
    pub comment: [u8; 3],
    pub string: [u8; 3],
    pub keyword: [u8; 3],
    pub function: [u8; 3],
    pub ty: [u8; 3],
    pub number: [u8; 3],
    pub constant: [u8; 3],
    pub operator: [u8; 3],
}

/// A loaded theme.
#[derive(Clone, Debug, PartialEq)]
pub struct Theme {
    pub name: String,
    pub fg: Color,
    pub bg: Color,
    pub dim: Color,
    pub accent: Color,
    pub user: Color,
    pub assistant: Color,
    pub notice: Color,
    pub error: Color,
    pub border: Color,
    pub border_focus: Color,
    pub status_fg: Color,
    pub status_bg: Color,
    pub popup_bg: Color,
    pub selection_bg: Color,
    pub chip_fg: Color,
    pub chip_bg: Color,
    pub code_bg: Color,
    pub heading: Color,
    pub link: Color,
    pub syntax: SyntaxColors,
}

fn parse_rgb(key: &str, s: &str) -> anyhow::Result<[u8; 3]> {
    let hex = s
        .strip_prefix('#')
        .filter(|h| h.len() == 6 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| {
            anyhow::anyhow!("`{key}` = {s:?} is not a colour of the form \"#rrggbb\"")
        })?;
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16);
    Ok([byte(0)?, byte(2)?, byte(4)?])
}

fn parse_color(key: &str, s: &str) -> anyhow::Result<Color> {
    if s == "reset" {
        return Ok(Color::Reset);
    }
    let [r, g, b] = parse_rgb(key, s).map_err(|_| {
        anyhow::anyhow!("`{key}` = {s:?} is not a colour (use \"#rrggbb\" or \"reset\")")
    })?;
    Ok(Color::Rgb(r, g, b))
}

impl Theme {
    /// Parses a theme file's text; errors name the key that is wrong.
    pub fn parse(name: &str, text: &str) -> anyhow::Result<Self> {
        let f: ThemeFile =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("theme {name}: {}", e.message()))?;
        let c =
            |k: &str, v: &str| parse_color(k, v).map_err(|e| anyhow::anyhow!("theme {name}: {e}"));
        let s = |k: &str, v: &str| {
            parse_rgb(&format!("syntax.{k}"), v).map_err(|e| anyhow::anyhow!("theme {name}: {e}"))
        };
        Ok(Self {
            name: name.to_string(),
            fg: c("fg", &f.fg)?,
            bg: c("bg", &f.bg)?,
            dim: c("dim", &f.dim)?,
            accent: c("accent", &f.accent)?,
            user: c("user", &f.user)?,
            assistant: c("assistant", &f.assistant)?,
            notice: c("notice", &f.notice)?,
            error: c("error", &f.error)?,
            border: c("border", &f.border)?,
            border_focus: c("border_focus", &f.border_focus)?,
            status_fg: c("status_fg", &f.status_fg)?,
            status_bg: c("status_bg", &f.status_bg)?,
            popup_bg: c("popup_bg", &f.popup_bg)?,
            selection_bg: c("selection_bg", &f.selection_bg)?,
            chip_fg: c("chip_fg", &f.chip_fg)?,
            chip_bg: c("chip_bg", &f.chip_bg)?,
            code_bg: c("code_bg", &f.code_bg)?,
            heading: c("heading", &f.heading)?,
            link: c("link", &f.link)?,
            syntax: SyntaxColors {
                text: s("text", &f.syntax.text)?,
                comment: s("comment", &f.syntax.comment)?,
                string: s("string", &f.syntax.string)?,
                keyword: s("keyword", &f.syntax.keyword)?,
                function: s("function", &f.syntax.function)?,
                ty: s("type", &f.syntax.ty)?,
                number: s("number", &f.syntax.number)?,
                constant: s("constant", &f.syntax.constant)?,
                operator: s("operator", &f.syntax.operator)?,
            },
        })
    }

    /// Loads a theme by name: a file `NAME.toml` in `user_dir` wins over the built-in one.
    pub fn load(name: &str, user_dir: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(dir) = user_dir {
            let path = dir.join(format!("{name}.toml"));
            if path.is_file() {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("cannot read theme {}: {e}", path.display()))?;
                return Self::parse(name, &text);
            }
        }
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown theme {name:?} (built in: {})",
                builtin_names().join(", ")
            )
        })?;
        Self::parse(name, text)
    }

    #[cfg(test)]
    pub fn dark() -> Self {
        Self::load("dark", None).unwrap()
    }

    #[cfg(test)]
    pub fn light() -> Self {
        Self::load("light", None).unwrap()
    }

    pub fn base(&self) -> Style {
        Style::default().fg(self.fg).bg(self.bg)
    }
    pub fn dim(&self) -> Style {
        Style::default().fg(self.dim)
    }
    pub fn border(&self, focused: bool) -> Style {
        Style::default().fg(if focused {
            self.border_focus
        } else {
            self.border
        })
    }
    pub fn title(&self) -> Style {
        Style::default()
            .fg(self.accent)
            .add_modifier(Modifier::BOLD)
    }
    pub fn status(&self) -> Style {
        Style::default().fg(self.status_fg).bg(self.status_bg)
    }
    pub fn chip(&self) -> Style {
        Style::default().fg(self.chip_fg).bg(self.chip_bg)
    }
    pub fn popup(&self) -> Style {
        Style::default().fg(self.fg).bg(self.popup_bg)
    }
    pub fn selected(&self) -> Style {
        Style::default()
            .bg(self.selection_bg)
            .add_modifier(Modifier::BOLD)
    }
    pub fn role(&self, role: crate::engine::Role) -> Style {
        let c = match role {
            crate::engine::Role::User => self.user,
            crate::engine::Role::Assistant => self.assistant,
            crate::engine::Role::System => self.notice,
        };
        Style::default().fg(c).add_modifier(Modifier::BOLD)
    }
    pub fn notice(&self) -> Style {
        Style::default().fg(self.notice)
    }
    pub fn error(&self) -> Style {
        Style::default().fg(self.error).add_modifier(Modifier::BOLD)
    }
    pub fn syntax_color(&self, rgb: [u8; 3]) -> Color {
        Color::Rgb(rgb[0], rgb[1], rgb[2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_theme_parses() {
        for name in builtin_names() {
            let t = Theme::load(name, None).unwrap();
            assert_eq!(t.name, name);
        }
        assert_eq!(Theme::dark().accent, Color::Rgb(0x88, 0xc0, 0xd0));
    }

    #[test]
    fn errors_name_the_bad_key() {
        let good = BUILTIN[0].1;
        let bad = good.replace("accent = \"#88c0d0\"", "accent = \"teal\"");
        let e = Theme::parse("x", &bad).unwrap_err().to_string();
        assert!(e.contains("`accent`"), "{e}");
        let extra = format!("bogus_key = 1\n{good}");
        let e = Theme::parse("x", &extra).unwrap_err().to_string();
        assert!(e.contains("bogus_key"), "{e}");
        let e = Theme::load("nope", None).unwrap_err().to_string();
        assert!(e.contains("unknown theme \"nope\""), "{e}");
    }

    #[test]
    fn a_user_theme_file_overrides_the_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let text = BUILTIN[0]
            .1
            .replace("accent = \"#88c0d0\"", "accent = \"#010203\"");
        std::fs::write(dir.path().join("dark.toml"), text).unwrap();
        let t = Theme::load("dark", Some(dir.path())).unwrap();
        assert_eq!(t.accent, Color::Rgb(1, 2, 3));
    }
}
