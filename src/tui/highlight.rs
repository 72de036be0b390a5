//! Syntax highlighting with syntect (pure-Rust regex engine), coloured by the active theme's
//! `[syntax]` palette rather than a syntect theme, so code matches the rest of the UI. Scope rules
//! follow the TextMate scope-naming conventions that syntect's bundled grammars use.

use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use syntect::easy::HighlightLines;
use syntect::highlighting::{
    Color as SColor, FontStyle, ScopeSelectors, StyleModifier, Theme as STheme, ThemeItem,
    ThemeSettings,
};
use syntect::parsing::{SyntaxReference, SyntaxSet};
use syntect::util::LinesWithEndings;

use crate::tui::theme::{SyntaxColors, Theme};

/// Past this many lines a file is shown unhighlighted (keeps opening big files fast).
pub const MAX_HIGHLIGHT_LINES: usize = 5000;

fn syntaxes() -> &'static SyntaxSet {
    static SET: OnceLock<SyntaxSet> = OnceLock::new();
    SET.get_or_init(SyntaxSet::load_defaults_newlines)
}

fn scolor(rgb: [u8; 3]) -> SColor {
    SColor {
        r: rgb[0],
        g: rgb[1],
        b: rgb[2],
        a: 0xff,
    }
}

/// Loads the grammars on a background thread, so the first highlighted block does not stall a frame.
pub fn warm_up() {
    let _ = std::thread::Builder::new()
        .name("tritter-syntax".into())
        .spawn(|| {
            syntaxes();
        });
}

/// Builds a syntect theme from our palette.
pub fn syntect_theme(theme: &Theme) -> STheme {
    let s = &theme.syntax;
    let rules: [(&str, [u8; 3], bool); 8] = [
        ("comment, punctuation.definition.comment", s.comment, true),
        ("string, punctuation.definition.string", s.string, false),
        ("keyword, storage", s.keyword, false),
        ("keyword.operator, punctuation.accessor", s.operator, false),
        (
            "entity.name.function, support.function, meta.function-call entity.name, variable.function",
            s.function,
            false,
        ),
        (
            "entity.name.type, entity.name.class, entity.name.struct, entity.name.enum, entity.name.trait, support.type, support.class, storage.type.numeric, entity.other.inherited-class",
            s.ty,
            false,
        ),
        ("constant.numeric", s.number, false),
        ("constant.language, constant.character, constant.other, variable.language, support.constant", s.constant, false),
    ];
    let scopes = rules
        .iter()
        .filter_map(|(sel, rgb, italic)| {
            ScopeSelectors::from_str(sel).ok().map(|scope| ThemeItem {
                scope,
                style: StyleModifier {
                    foreground: Some(scolor(*rgb)),
                    background: None,
                    font_style: if *italic {
                        Some(FontStyle::ITALIC)
                    } else {
                        None
                    },
                },
            })
        })
        .collect();
    STheme {
        name: Some(theme.name.clone()),
        author: None,
        settings: ThemeSettings {
            foreground: Some(scolor(s.text)),
            ..ThemeSettings::default()
        },
        scopes,
    }
}

/// `syntect_theme`, memoised for the last palette used (rendering highlights many blocks a frame).
fn cached_syntect_theme(theme: &Theme) -> STheme {
    static LAST: Mutex<Option<(SyntaxColors, STheme)>> = Mutex::new(None);
    let mut last = match LAST.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    match &*last {
        Some((cols, t)) if *cols == theme.syntax => t.clone(),
        _ => {
            let t = syntect_theme(theme);
            *last = Some((theme.syntax, t.clone()));
            t
        }
    }
}

fn find_syntax(lang: &str) -> Option<&'static SyntaxReference> {
    let set = syntaxes();
    let lang = lang.trim().to_ascii_lowercase();
    if lang.is_empty() {
        return None;
    }
    let alias = match lang.as_str() {
        "py" | "python3" => "python",
        "sh" | "shell" | "zsh" => "bash",
        "js" | "javascript" | "ts" | "typescript" => "js",
        "rs" => "rust",
        other => other,
    };
    set.find_syntax_by_token(alias)
        .or_else(|| set.find_syntax_by_extension(alias))
}

/// Highlights `code` as `lang` (a fence tag or file extension). Unknown languages and lines past
/// `MAX_HIGHLIGHT_LINES` come back in the theme's plain text colour. `bg` is put on every span.
pub fn highlight(code: &str, lang: &str, theme: &Theme, bg: Option<Color>) -> Vec<Line<'static>> {
    let plain = Style::default().fg(theme.syntax_color(theme.syntax.text));
    let with_bg = |st: Style| match bg {
        Some(b) => st.bg(b),
        None => st,
    };
    let mut out = Vec::new();
    let stheme = cached_syntect_theme(theme);
    let mut hl = find_syntax(lang).map(|syn| HighlightLines::new(syn, &stheme));
    for (i, line) in LinesWithEndings::from(code).enumerate() {
        let ranges = match hl.as_mut() {
            Some(h) if i < MAX_HIGHLIGHT_LINES => h.highlight_line(line, syntaxes()).ok(),
            _ => None,
        };
        let spans: Vec<Span<'static>> = match ranges {
            Some(ranges) => ranges
                .into_iter()
                .filter_map(|(st, text)| {
                    let text = text.trim_end_matches(['\n', '\r']);
                    if text.is_empty() {
                        return None;
                    }
                    let mut s = Style::default().fg(Color::Rgb(
                        st.foreground.r,
                        st.foreground.g,
                        st.foreground.b,
                    ));
                    if st.font_style.contains(FontStyle::ITALIC) {
                        s = s.add_modifier(Modifier::ITALIC);
                    }
                    if st.font_style.contains(FontStyle::BOLD) {
                        s = s.add_modifier(Modifier::BOLD);
                    }
                    Some(Span::styled(expand_tabs(text), with_bg(s)))
                })
                .collect(),
            None => vec![Span::styled(
                expand_tabs(line.trim_end_matches(['\n', '\r'])),
                with_bg(plain),
            )],
        };
        out.push(Line::from(spans));
    }
    out
}

fn expand_tabs(s: &str) -> String {
    s.replace('\t', "    ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn color_of(lines: &[Line], needle: &str) -> Option<Color> {
        lines
            .iter()
            .flat_map(|l| l.spans.iter())
            .find(|s| s.content.contains(needle))
            .and_then(|s| s.style.fg)
    }

    #[test]
    fn rust_tokens_get_the_theme_colours() {
        let t = Theme::dark();
        let code = "fn main() {\n    // hi\n    let s = \"str\";\n    let n = 42;\n}\n";
        let lines = highlight(code, "rust", &t, None);
        assert_eq!(lines.len(), 5);
        let c = |rgb: [u8; 3]| Some(t.syntax_color(rgb));
        assert_eq!(color_of(&lines, "fn"), c(t.syntax.keyword));
        assert_eq!(color_of(&lines, "main"), c(t.syntax.function));
        assert_eq!(color_of(&lines, "hi"), c(t.syntax.comment));
        assert_eq!(color_of(&lines, "str"), c(t.syntax.string));
        assert_eq!(color_of(&lines, "42"), c(t.syntax.number));
    }

    #[test]
    fn python_and_aliases_are_known_and_unknown_is_plain() {
        assert_eq!(find_syntax("py").map(|s| s.name.as_str()), Some("Python"));
        assert_eq!(find_syntax("rs").map(|s| s.name.as_str()), Some("Rust"));
        let t = Theme::light();
        let lines = highlight("def f():\n    return 1\n", "python", &t, None);
        assert_eq!(
            color_of(&lines, "def"),
            Some(t.syntax_color(t.syntax.keyword))
        );
        let plain = highlight("a\tb\n", "no-such-lang", &t, Some(Color::Black));
        assert_eq!(plain[0].spans[0].content, "a    b");
        assert_eq!(
            plain[0].spans[0].style.fg,
            Some(t.syntax_color(t.syntax.text))
        );
        assert_eq!(plain[0].spans[0].style.bg, Some(Color::Black));
    }
}
