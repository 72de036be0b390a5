//! Copying text for `/copy`: the system clipboard through arboard, or the OSC 52 escape sequence
//! (base64 per RFC 4648, wrapped in tmux's DCS passthrough inside tmux) which reaches the user's own
//! terminal over SSH. `auto` prefers OSC 52 when SSH or tmux is detected or arboard fails.

use std::io::Write;

use crate::config::ClipboardMode;

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The OSC 52 "set clipboard" sequence for `text`.
pub fn osc52(text: &str, in_tmux: bool) -> String {
    let seq = format!("\x1b]52;c;{}\x07", base64(text.as_bytes()));
    if in_tmux {
        format!("\x1bPtmux;{}\x1b\\", seq.replace('\x1b', "\x1b\x1b"))
    } else {
        seq
    }
}

/// Keeps the system clipboard handle alive (on X11 the text lives as long as its owner).
#[derive(Default)]
pub struct Clipboard {
    system: Option<arboard::Clipboard>,
}

impl Clipboard {
    /// Copies `text`; returns how ("system clipboard" or "OSC 52").
    pub fn copy(&mut self, text: &str, mode: ClipboardMode) -> anyhow::Result<&'static str> {
        let remote =
            std::env::var_os("SSH_CONNECTION").is_some() || std::env::var_os("SSH_TTY").is_some();
        let tmux = std::env::var_os("TMUX").is_some();
        let try_system = match mode {
            ClipboardMode::System => true,
            ClipboardMode::Osc52 => false,
            ClipboardMode::Auto => !remote && !tmux,
        };
        if try_system {
            let res = match self.system.as_mut() {
                Some(c) => c.set_text(text.to_string()),
                None => arboard::Clipboard::new().and_then(|mut c| {
                    let r = c.set_text(text.to_string());
                    self.system = Some(c);
                    r
                }),
            };
            match res {
                Ok(()) => return Ok("system clipboard"),
                Err(e) if mode == ClipboardMode::System => anyhow::bail!("system clipboard: {e}"),
                Err(_) => {}
            }
        }
        let mut out = std::io::stdout().lock();
        out.write_all(osc52(text, tmux).as_bytes())?;
        out.flush()?;
        Ok("OSC 52")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn osc52_plain_and_tmux_wrapped() {
        assert_eq!(osc52("hi", false), "\x1b]52;c;aGk=\x07");
        assert_eq!(osc52("hi", true), "\x1bPtmux;\x1b\x1b]52;c;aGk=\x07\x1b\\");
    }
}
