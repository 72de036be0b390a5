//! Terminal setup and guaranteed restore: raw mode, alternate screen, bracketed paste and keyboard
//! enhancement are switched on by [`enter`] and off again on drop of its guard, on every error
//! path and from the panic hook ([`restore_terminal`], also called by `main` before it prints an
//! error).
//!
//! Alternate screen, not inline: the chat and code panes are a full-screen layout, and the
//! alternate buffer leaves the shell's scrollback exactly as it was; on exit the user's screen
//! comes back untouched and the conversation stays in the session file (`/save`, `--resume`).

use std::io::{stdout, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::event::{
    DisableBracketedPaste, EnableBracketedPaste, KeyboardEnhancementFlags,
    PopKeyboardEnhancementFlags, PushKeyboardEnhancementFlags,
};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

static ENHANCED_KEYS: AtomicBool = AtomicBool::new(false);
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back; safe to call more than once and from the panic hook.
pub fn restore_terminal() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = stdout();
    if ENHANCED_KEYS.swap(false, Ordering::SeqCst) {
        let _ = crossterm::execute!(out, PopKeyboardEnhancementFlags);
    }
    let _ = crossterm::execute!(
        out,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
    let _ = out.flush();
}

/// Restores the terminal when dropped (every return path of `run`).
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

pub fn enter() -> anyhow::Result<(Guard, Terminal<CrosstermBackend<Stdout>>)> {
    // A panic the program catches and reports (`crate::caught`) leaves the screen alone.
    let prev = std::panic::take_hook();
    crate::caught::install_hook(move |info| {
        restore_terminal();
        prev(info);
    });
    enable_raw_mode()
        .map_err(|e| anyhow::anyhow!("cannot switch the terminal to raw mode: {e}"))?;
    ACTIVE.store(true, Ordering::SeqCst);
    let guard = Guard;
    let mut out = stdout();
    crossterm::execute!(out, EnterAlternateScreen, EnableBracketedPaste)?;
    if matches!(
        crossterm::terminal::supports_keyboard_enhancement(),
        Ok(true)
    ) {
        crossterm::execute!(
            out,
            PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES)
        )?;
        ENHANCED_KEYS.store(true, Ordering::SeqCst);
    }
    let terminal = Terminal::new(CrosstermBackend::new(out))?;
    Ok((guard, terminal))
}
