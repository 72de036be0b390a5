//! What a key means here and now: global chords first, then the code pane's keys when it has the
//! focus, then the completion popup's, then the composer's.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{Action, App, Focus};

impl App {
    /// Decides what a key means here and now; `None` for keys that do nothing.
    pub fn action_for_key(&self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Char('c') if ctrl => return Some(Action::Interrupt),
            KeyCode::Char('o') if ctrl => return Some(Action::ToggleCodePane),
            KeyCode::Char('t') if ctrl => return Some(Action::ToggleThoughts),
            KeyCode::F(2) => return Some(Action::FocusCodePane),
            KeyCode::Left if alt => return Some(Action::ResizeCodePane(-5)),
            KeyCode::Right if alt => return Some(Action::ResizeCodePane(5)),
            KeyCode::Esc => return Some(Action::Escape),
            _ => {}
        }
        if self.focus == Focus::CodePane {
            return code_pane_key(key.code);
        }
        match key.code {
            KeyCode::PageUp => return Some(Action::ScrollChat(10)),
            KeyCode::PageDown => return Some(Action::ScrollChat(-10)),
            _ => {}
        }
        if let Some(a) = self.popup_key(key.code, alt || shift) {
            return Some(a);
        }
        match key.code {
            KeyCode::Enter if alt || shift => Some(Action::Newline),
            KeyCode::Enter => Some(Action::Submit),
            KeyCode::Char('j') if ctrl => Some(Action::Newline),
            KeyCode::Backspace if self.composer.is_empty() => Some(Action::DropChip),
            _ => Some(Action::Edit(key)),
        }
    }

    /// Keys of the completion popup, when it is open: arrows move, Tab takes the selection, Enter
    /// takes it too when it differs from what is typed (and then sends a complete command).
    fn popup_key(&self, code: KeyCode, modified: bool) -> Option<Action> {
        let p = self.composer.popup.as_ref()?;
        match code {
            KeyCode::Up => Some(Action::PopupMove(-1)),
            KeyCode::Down => Some(Action::PopupMove(1)),
            KeyCode::Tab => Some(Action::Complete { then_submit: false }),
            KeyCode::Enter if !modified => {
                let token = self.composer.cursor_prefix()[p.completions.start..].to_string();
                let chosen = &p.completions.items[p.selected.min(p.completions.items.len() - 1)];
                if chosen.insert == token {
                    return None;
                }
                let then_submit = !chosen.insert.ends_with(' ')
                    && !chosen.insert.ends_with('/')
                    && token.starts_with('/')
                    && p.completions.start == 0;
                Some(Action::Complete { then_submit })
            }
            _ => None,
        }
    }
}

/// Keys of the focused code pane: move through the outline, scroll, add the symbol.
fn code_pane_key(code: KeyCode) -> Option<Action> {
    match code {
        KeyCode::Up | KeyCode::Char('k') => Some(Action::OutlineMove(-1)),
        KeyCode::Down | KeyCode::Char('j') => Some(Action::OutlineMove(1)),
        KeyCode::PageUp => Some(Action::CodeScroll(-20)),
        KeyCode::PageDown => Some(Action::CodeScroll(20)),
        KeyCode::Enter => Some(Action::AddSymbol),
        KeyCode::Tab => Some(Action::FocusCodePane),
        _ => None,
    }
}
