//! The code pane's state: an opened source file (highlighted lines, tree-sitter outline, the
//! selected symbol, scroll) or an attachment preview (an image through ratatui-image, or an audio
//! waveform). Selecting a symbol yields the context snippet that goes into the prompt.

use std::path::{Path, PathBuf};

use ratatui::text::Line;
use ratatui_image::protocol::Protocol;

use crate::engine::ContextSnippet;
use crate::tui::highlight::highlight;
use crate::tui::outline::{outline, OutlineLang, Symbol};
use crate::tui::theme::Theme;

pub struct FileView {
    pub path: PathBuf,
    /// The path as the user wrote it (shown in titles and labels).
    pub display: String,
    pub text: String,
    pub lines: Vec<Line<'static>>,
    pub outline: Vec<Symbol>,
    /// Index into `outline`.
    pub selected: usize,
    /// First code line shown.
    pub scroll: usize,
    /// Why there is no outline, if there is none.
    pub outline_note: Option<String>,
    /// The file's size when only its first lines were read (see `files::read_text_file`).
    pub truncated_from: Option<u64>,
}

pub enum PaneContent {
    File(FileView),
    Image {
        label: String,
        protocol: Box<Protocol>,
    },
    Audio {
        label: String,
        wave: Vec<u64>,
    },
}

impl FileView {
    pub fn open(path: &Path, display: &str, theme: &Theme) -> anyhow::Result<Self> {
        let file = crate::files::read_text_file(path)?;
        let mut view = Self::from_text(path, display, file.text, theme);
        view.truncated_from = file.truncated_from;
        Ok(view)
    }

    pub fn from_text(path: &Path, display: &str, text: String, theme: &Theme) -> Self {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let lines = highlight(&text, ext, theme, None);
        let (outline, outline_note) = match OutlineLang::from_extension(ext) {
            Some(lang) => match outline(lang, &text) {
                Ok(o) => (o, None),
                Err(e) => (Vec::new(), Some(format!("no outline: {e}"))),
            },
            None => (Vec::new(), None),
        };
        Self {
            path: path.to_path_buf(),
            display: display.to_string(),
            text,
            lines,
            outline,
            selected: 0,
            scroll: 0,
            outline_note,
            truncated_from: None,
        }
    }

    pub fn rehighlight(&mut self, theme: &Theme) {
        let ext = self.path.extension().and_then(|e| e.to_str()).unwrap_or("");
        self.lines = highlight(&self.text, ext, theme, None);
    }

    /// Moves the outline selection by `delta` and scrolls the code to the symbol.
    pub fn select(&mut self, delta: isize) {
        if self.outline.is_empty() {
            return;
        }
        let last = self.outline.len() as isize - 1;
        self.selected = (self.selected as isize + delta).clamp(0, last) as usize;
        self.scroll = self.outline[self.selected].start_line;
    }

    pub fn scroll_by(&mut self, delta: isize) {
        let max = self.lines.len().saturating_sub(1) as isize;
        self.scroll = (self.scroll as isize + delta).clamp(0, max.max(0)) as usize;
    }

    /// The whole file as a context snippet.
    /// The notice for a file of which only the first lines were read.
    pub fn truncation_notice(&self) -> Option<String> {
        crate::files::truncation_notice(&self.display, self.text.len(), self.truncated_from)
    }

    pub fn file_snippet(&self) -> ContextSnippet {
        let mut text = self.text.clone();
        if let Some(full) = self.truncated_from {
            text.push_str(&format!(
                "\n[only the first {} of this {} file]",
                crate::files::human_bytes(self.text.len() as u64),
                crate::files::human_bytes(full)
            ));
        }
        ContextSnippet {
            label: self.display.clone(),
            text,
        }
    }

    /// The selected symbol's lines as a context snippet.
    pub fn symbol_snippet(&self) -> Option<ContextSnippet> {
        let s = self.outline.get(self.selected)?;
        let text: Vec<&str> = self
            .text
            .lines()
            .skip(s.start_line)
            .take(s.end_line + 1 - s.start_line)
            .collect();
        Some(ContextSnippet {
            label: format!(
                "{}: {} {} (lines {}-{})",
                self.display,
                s.kind.label(),
                s.name,
                s.start_line + 1,
                s.end_line + 1
            ),
            text: text.join("\n") + "\n",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_snippet_is_exactly_the_symbol_lines() {
        let src = "fn a() {}\n\nfn b() {\n    1;\n}\n";
        let mut v = FileView::from_text(Path::new("x.rs"), "x.rs", src.to_string(), &Theme::dark());
        assert_eq!(v.outline.len(), 2);
        v.select(1);
        assert_eq!(v.scroll, 2);
        let s = v.symbol_snippet().unwrap();
        assert_eq!(s.label, "x.rs: fn b (lines 3-5)");
        assert_eq!(s.text, "fn b() {\n    1;\n}\n");
        v.select(10);
        assert_eq!(v.selected, 1);
        v.select(-10);
        assert_eq!(v.selected, 0);
        assert_eq!(v.file_snippet().text, src);
    }
}
