//! Markdown to styled terminal lines (CommonMark via pulldown-cmark): headings, emphasis, inline
//! code, lists, quotes, rules, links, and fenced code blocks highlighted by `highlight` and numbered
//! `[N]` across the conversation so `/copy N` can name them. `wrap` then word-wraps lines to a width
//! keeping each span's style. Partial markdown (a reply still streaming, an unclosed fence) renders
//! as far as it goes.

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthStr;

use crate::tui::highlight::highlight;
use crate::tui::theme::Theme;

/// A fenced or indented code block of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeBlock {
    pub lang: String,
    pub code: String,
}

/// The code blocks of a markdown text, in order.
pub fn code_blocks(text: &str) -> Vec<CodeBlock> {
    let mut out = Vec::new();
    let mut cur: Option<CodeBlock> = None;
    for ev in Parser::new_ext(text, Options::empty()) {
        match ev {
            Event::Start(Tag::CodeBlock(kind)) => {
                cur = Some(CodeBlock {
                    lang: fence_lang(&kind),
                    code: String::new(),
                })
            }
            Event::Text(t) => {
                if let Some(b) = cur.as_mut() {
                    b.code.push_str(&t)
                }
            }
            Event::End(TagEnd::CodeBlock) => out.extend(cur.take()),
            _ => {}
        }
    }
    out.extend(cur);
    out
}

fn fence_lang(kind: &CodeBlockKind) -> String {
    match kind {
        CodeBlockKind::Fenced(info) => info.split([' ', ',', '{']).next().unwrap_or("").to_string(),
        CodeBlockKind::Indented => String::new(),
    }
}

struct Renderer<'t> {
    theme: &'t Theme,
    lines: Vec<Line<'static>>,
    cur: Vec<Span<'static>>,
    styles: Vec<Style>,
    /// List nesting: `None` for bullets, `Some(n)` for the next ordered number.
    lists: Vec<Option<u64>>,
    quote: usize,
    code: Option<CodeBlock>,
    next_block: usize,
    pending_item: Option<String>,
}

impl Renderer<'_> {
    fn style(&self) -> Style {
        self.styles.last().copied().unwrap_or_default()
    }

    fn prefix(&self) -> Vec<Span<'static>> {
        let mut p = Vec::new();
        if self.quote > 0 {
            p.push(Span::styled("│ ".repeat(self.quote), self.theme.dim()));
        }
        if !self.lists.is_empty() {
            p.push(Span::raw("  ".repeat(self.lists.len().saturating_sub(1))));
        }
        p
    }

    fn push_text(&mut self, text: &str, style: Style) {
        if self.cur.is_empty() {
            self.cur = self.prefix();
            if let Some(marker) = self.pending_item.take() {
                self.cur
                    .push(Span::styled(marker, Style::default().fg(self.theme.accent)));
            } else if !self.lists.is_empty() {
                self.cur.push(Span::raw("  "));
            }
        }
        self.cur.push(Span::styled(text.to_string(), style));
    }

    fn flush(&mut self) {
        if !self.cur.is_empty() {
            let spans = std::mem::take(&mut self.cur);
            self.lines.push(Line::from(spans));
        }
    }

    fn blank(&mut self) {
        self.flush();
        if self.lines.last().is_some_and(|l| !l.spans.is_empty()) {
            self.lines.push(Line::default());
        }
    }

    fn end_code(&mut self) {
        let Some(block) = self.code.take() else {
            return;
        };
        self.next_block += 1;
        let label = if block.lang.is_empty() {
            "code".to_string()
        } else {
            block.lang.clone()
        };
        self.lines.push(Line::from(vec![
            Span::styled(format!("[{}] ", self.next_block), self.theme.title()),
            Span::styled(label, self.theme.dim()),
        ]));
        let bg = Some(self.theme.code_bg);
        for mut l in highlight(&block.code, &block.lang, self.theme, bg) {
            let mut spans = self.prefix();
            spans.push(Span::styled("  ", Style::default().bg(self.theme.code_bg)));
            spans.append(&mut l.spans);
            self.lines.push(Line::from(spans));
        }
        self.lines.push(Line::default());
    }

    fn event(&mut self, ev: Event<'_>) {
        match ev {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => match self.code.as_mut() {
                Some(b) => b.code.push_str(&t),
                None => {
                    let st = self.style();
                    self.push_text(&t, st)
                }
            },
            Event::Code(t) => {
                let st = self
                    .style()
                    .fg(self.theme.syntax_color(self.theme.syntax.string))
                    .bg(self.theme.code_bg);
                self.push_text(&t, st)
            }
            Event::SoftBreak => {
                let st = self.style();
                self.push_text(" ", st)
            }
            Event::HardBreak => self.flush(),
            Event::Rule => {
                self.flush();
                self.lines
                    .push(Line::styled("─".repeat(24), self.theme.dim()));
            }
            Event::Html(t) | Event::InlineHtml(t) => {
                let st = self.theme.dim();
                self.push_text(&t, st)
            }
            Event::FootnoteReference(t) => {
                let st = self.theme.dim();
                self.push_text(&format!("[{t}]"), st)
            }
            Event::TaskListMarker(done) => {
                let st = self.style();
                self.push_text(if done { "[x] " } else { "[ ] " }, st)
            }
            Event::InlineMath(t) | Event::DisplayMath(t) => {
                let st = self.style();
                self.push_text(&t, st)
            }
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph => {}
            Tag::Heading { level, .. } => {
                self.blank();
                let hashes = match level {
                    HeadingLevel::H1 => "# ",
                    HeadingLevel::H2 => "## ",
                    _ => "### ",
                };
                let st = Style::default()
                    .fg(self.theme.heading)
                    .add_modifier(Modifier::BOLD);
                self.styles.push(st);
                self.push_text(hashes, st);
            }
            Tag::BlockQuote(_) => {
                self.flush();
                self.quote += 1
            }
            Tag::CodeBlock(kind) => {
                self.flush();
                self.code = Some(CodeBlock {
                    lang: fence_lang(&kind),
                    code: String::new(),
                });
            }
            Tag::List(start) => {
                self.flush();
                self.lists.push(start)
            }
            Tag::Item => {
                self.flush();
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let m = format!("{n}. ");
                        *n += 1;
                        m
                    }
                    _ => "• ".to_string(),
                };
                self.pending_item = Some(marker);
            }
            Tag::Emphasis => self
                .styles
                .push(self.style().add_modifier(Modifier::ITALIC)),
            Tag::Strong => self.styles.push(self.style().add_modifier(Modifier::BOLD)),
            Tag::Strikethrough => self
                .styles
                .push(self.style().add_modifier(Modifier::CROSSED_OUT)),
            Tag::Link { .. } | Tag::Image { .. } => self.styles.push(
                self.style()
                    .fg(self.theme.link)
                    .add_modifier(Modifier::UNDERLINED),
            ),
            Tag::HtmlBlock
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::Table(_)
            | Tag::TableHead
            | Tag::TableRow
            | Tag::TableCell
            | Tag::Superscript
            | Tag::Subscript
            | Tag::MetadataBlock(_) => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => {
                if self.lists.is_empty() {
                    self.blank()
                } else {
                    self.flush()
                }
            }
            TagEnd::Heading(_) => {
                self.styles.pop();
                self.blank();
            }
            TagEnd::BlockQuote(_) => {
                self.flush();
                self.quote = self.quote.saturating_sub(1);
            }
            TagEnd::CodeBlock => self.end_code(),
            TagEnd::List(_) => {
                self.flush();
                self.lists.pop();
                if self.lists.is_empty() {
                    self.blank();
                }
            }
            TagEnd::Item => self.flush(),
            TagEnd::Emphasis
            | TagEnd::Strong
            | TagEnd::Strikethrough
            | TagEnd::Link
            | TagEnd::Image => {
                self.styles.pop();
            }
            TagEnd::HtmlBlock
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::Table
            | TagEnd::TableHead
            | TagEnd::TableRow
            | TagEnd::TableCell
            | TagEnd::Superscript
            | TagEnd::Subscript
            | TagEnd::MetadataBlock(_) => self.flush(),
        }
    }
}

/// Renders markdown to lines. Code blocks are numbered from `first_block + 1`; the second value is
/// how many code blocks the text had.
pub fn render(
    text: &str,
    theme: &Theme,
    base: Style,
    first_block: usize,
) -> (Vec<Line<'static>>, usize) {
    let mut r = Renderer {
        theme,
        lines: Vec::new(),
        cur: Vec::new(),
        styles: vec![base],
        lists: Vec::new(),
        quote: 0,
        code: None,
        next_block: first_block,
        pending_item: None,
    };
    for ev in Parser::new_ext(
        text,
        Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS,
    ) {
        r.event(ev);
    }
    r.end_code();
    r.flush();
    while r.lines.last().is_some_and(|l| l.spans.is_empty()) {
        r.lines.pop();
    }
    (r.lines, r.next_block - first_block)
}

/// Word-wraps lines to `width` columns, keeping styles; words longer than a line are split.
pub fn wrap(lines: &[Line<'static>], width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width.max(1));
    let mut out = Vec::new();
    for line in lines {
        if line.width() <= width {
            out.push(line.clone());
            continue;
        }
        let mut cur: Vec<Span<'static>> = Vec::new();
        let mut w = 0usize;
        for span in &line.spans {
            for word in split_keep_spaces(&span.content) {
                let ww = word.width();
                if w + ww > width && w > 0 {
                    out.push(Line::from(std::mem::take(&mut cur)));
                    w = 0;
                    if word.trim().is_empty() {
                        continue;
                    }
                }
                if ww > width {
                    let mut piece = String::new();
                    for c in word.chars() {
                        let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
                        if w + cw > width && w > 0 {
                            cur.push(Span::styled(std::mem::take(&mut piece), span.style));
                            out.push(Line::from(std::mem::take(&mut cur)));
                            w = 0;
                        }
                        piece.push(c);
                        w += cw;
                    }
                    if !piece.is_empty() {
                        cur.push(Span::styled(piece, span.style));
                    }
                } else {
                    cur.push(Span::styled(word.to_string(), span.style));
                    w += ww;
                }
            }
        }
        if !cur.is_empty() {
            out.push(Line::from(cur));
        }
    }
    out
}

/// Splits into words each carrying its trailing spaces ("ab  c" → ["ab  ", "c"]).
fn split_keep_spaces(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in s.char_indices() {
        let sp = c == ' ';
        if !sp && in_space {
            out.push(&s[start..i]);
            start = i;
        }
        in_space = sp;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn code_blocks_are_extracted_in_order_including_an_unclosed_fence() {
        let md = "a\n```rust\nfn x() {}\n```\ntext\n```py\nprint(1)\n";
        let b = code_blocks(md);
        assert_eq!(
            b,
            vec![
                CodeBlock {
                    lang: "rust".into(),
                    code: "fn x() {}\n".into()
                },
                CodeBlock {
                    lang: "py".into(),
                    code: "print(1)\n".into()
                },
            ]
        );
    }

    #[test]
    fn renders_structure_and_numbers_blocks_from_the_offset() {
        let t = Theme::dark();
        let md = "# Title\n\nSome *it* and **bold** `code`.\n\n- one\n- two\n\n1. a\n2. b\n\n> quote\n\n```rust\nlet x = 1;\n```\n";
        let (lines, n) = render(md, &t, Style::default(), 3);
        assert_eq!(n, 1);
        assert_eq!(
            text_of(&lines),
            vec![
                "# Title",
                "",
                "Some it and bold code.",
                "",
                "• one",
                "• two",
                "",
                "1. a",
                "2. b",
                "",
                "│ quote",
                "",
                "[4] rust",
                "  let x = 1;",
            ]
        );
        let bold = lines[2].spans.iter().find(|s| s.content == "bold").unwrap();
        assert!(bold.style.add_modifier.contains(Modifier::BOLD));
        let kw = lines[13]
            .spans
            .iter()
            .find(|s| s.content.contains("let"))
            .unwrap();
        assert_eq!(kw.style.fg, Some(t.syntax_color(t.syntax.keyword)));
        assert_eq!(kw.style.bg, Some(t.code_bg));
    }

    #[test]
    fn wrap_breaks_at_spaces_keeps_styles_and_splits_long_words() {
        let st = Style::default().add_modifier(Modifier::BOLD);
        let line = Line::from(vec![Span::raw("hello big "), Span::styled("world", st)]);
        let w = wrap(&[line], 10);
        assert_eq!(text_of(&w), vec!["hello big ", "world"]);
        assert_eq!(w[1].spans[0].style, st);
        let w = wrap(&[Line::raw("abcdefghijkl")], 5);
        assert_eq!(text_of(&w), vec!["abcde", "fghij", "kl"]);
        for l in wrap(&[Line::raw("a b c d e f g h i j k l m n o p")], 4) {
            assert!(l.width() <= 4, "{l}");
        }
    }
}
