//! The code pane's layout state: what it shows (a file with its outline, or an attachment
//! preview: `tui::codepane`), whether it is visible, and its share of the width.

use crate::tui::codepane::{FileView, PaneContent};

pub struct CodePane {
    pub content: Option<PaneContent>,
    pub visible: bool,
    /// Percent of the width (20–80).
    pub percent: u16,
}

impl CodePane {
    pub fn new(percent: u16) -> Self {
        Self {
            content: None,
            visible: false,
            percent,
        }
    }

    /// Shows `content` (replacing what was there) and makes the pane visible.
    pub fn show(&mut self, content: PaneContent) {
        self.content = Some(content);
        self.visible = true;
    }

    pub fn resize(&mut self, delta: i16) {
        self.percent = (self.percent as i16 + delta).clamp(20, 80) as u16;
    }

    /// The open file, if the pane shows one.
    pub fn file(&self) -> Option<&FileView> {
        match &self.content {
            Some(PaneContent::File(f)) => Some(f),
            _ => None,
        }
    }

    pub fn file_mut(&mut self) -> Option<&mut FileView> {
        match &mut self.content {
            Some(PaneContent::File(f)) => Some(f),
            _ => None,
        }
    }
}
