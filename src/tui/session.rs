//! Saved conversations: one JSON file per session in `<data dir>/sessions/NAME.json`, written
//! atomically (temp file + rename). Attachments keep their path and kind, not their decoded data;
//! a latent-mode reply keeps its rounded thoughts (files without them still load).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{ChatMessage, ThoughtToken};

const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    pub version: u32,
    pub messages: Vec<SavedMessage>,
}

/// A message as saved: the message and, for a latent-mode reply, its continuous thoughts each
/// rounded to its nearest tokens (as the chat pane shows them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedMessage {
    #[serde(flatten)]
    pub message: ChatMessage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thoughts: Vec<Vec<ThoughtToken>>,
}

impl From<ChatMessage> for SavedMessage {
    fn from(message: ChatMessage) -> Self {
        SavedMessage {
            message,
            thoughts: Vec::new(),
        }
    }
}

pub fn sessions_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("sessions")
}

/// Session names are file-name safe: letters, digits, `-`, `_`, `.`, not starting with a dot.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        anyhow::bail!("session name {name:?} is not valid (use letters, digits, '-', '_', '.')")
    }
}

/// Saves messages as session `name`; returns the file written.
pub fn save(data_dir: &Path, name: &str, messages: &[SavedMessage]) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = sessions_dir(data_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!(".{name}.json.tmp"));
    let file = SessionFile {
        version: VERSION,
        messages: messages.to_vec(),
    };
    let text = serde_json::to_string_pretty(&file)?;
    crate::files::write_atomic(&path, &tmp, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot save session {name:?} to {}: {e}", path.display()))?;
    Ok(path)
}

/// Loads session `name`.
pub fn load(data_dir: &Path, name: &str) -> anyhow::Result<Vec<SavedMessage>> {
    check_name(name)?;
    let path = sessions_dir(data_dir).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("no saved session named {name:?}"),
        _ => anyhow::anyhow!("cannot read {}: {e}", path.display()),
    })?;
    let file: SessionFile = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("session file {} is corrupt: {e}", path.display()))?;
    if file.version != VERSION {
        anyhow::bail!(
            "session file {} has version {}, expected {VERSION}",
            path.display(),
            file.version
        );
    }
    Ok(file.messages)
}

/// Saved session names, newest first.
pub fn list(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sessions_dir(data_dir)) else {
        return Vec::new();
    };
    let mut v: Vec<(std::time::SystemTime, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".json")?;
            if stem.starts_with('.') {
                return None;
            }
            let t = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((t, stem.to_string()))
        })
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    v.into_iter().map(|(_, n)| n).collect()
}

/// A fresh session name from the clock (`s-<unix seconds>`).
pub fn new_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("s-{secs}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Attachment, AttachmentKind, ContextSnippet, Role};

    #[test]
    fn save_load_round_trip_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ChatMessage::new(Role::User, "hi");
        m.context.push(ContextSnippet {
            label: "a.rs".into(),
            text: "fn a() {}".into(),
        });
        m.attachments.push(Attachment {
            path: "x.png".into(),
            kind: AttachmentKind::Image {
                width: 2,
                height: 3,
            },
            data: None,
        });
        let mut reply = SavedMessage::from(ChatMessage::new(Role::Assistant, "hello"));
        reply.thoughts = vec![vec![ThoughtToken {
            token: " pumpax".into(),
            id: 7,
            score: 0.5,
        }]];
        let msgs = vec![SavedMessage::from(m), reply];
        save(dir.path(), "one", &msgs).unwrap();
        assert_eq!(load(dir.path(), "one").unwrap(), msgs);
        assert_eq!(list(dir.path()), vec!["one"]);
        let e = load(dir.path(), "two").unwrap_err().to_string();
        assert!(e.contains("no saved session named \"two\""), "{e}");
        assert!(save(dir.path(), "../evil", &msgs).is_err());
    }

    /// A full disk while saving: one clear error, the saved session untouched, no temporary
    /// file left. (`/dev/full` answers every write with ENOSPC; the temporary file is made a
    /// link to it.)
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_keeps_the_saved_session() {
        let dir = tempfile::tempdir().unwrap();
        let old = vec![ChatMessage::new(Role::User, "keep me").into()];
        save(dir.path(), "kept", &old).unwrap();
        let tmp = sessions_dir(dir.path()).join(".kept.json.tmp");
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let new = vec![ChatMessage::new(Role::User, "lost").into()];
        let e = save(dir.path(), "kept", &new).unwrap_err().to_string();
        let path = sessions_dir(dir.path()).join("kept.json");
        assert_eq!(
            e,
            format!(
                "cannot save session \"kept\" to {}: No space left on device (os error 28)",
                path.display()
            )
        );
        assert_eq!(load(dir.path(), "kept").unwrap(), old);
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "temporary file left"
        );
    }

    /// A file written before thoughts were saved (no `thoughts` keys) loads with none.
    #[test]
    fn files_without_thoughts_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sessions_dir(dir.path())).unwrap();
        let text = r#"{"version":1,"messages":[{"role":"user","content":"hi"}]}"#;
        std::fs::write(sessions_dir(dir.path()).join("old.json"), text).unwrap();
        let got = load(dir.path(), "old").unwrap();
        assert_eq!(got, vec![ChatMessage::new(Role::User, "hi").into()]);
    }

    #[test]
    fn corrupt_files_give_a_message() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sessions_dir(dir.path())).unwrap();
        std::fs::write(sessions_dir(dir.path()).join("bad.json"), "{not json").unwrap();
        let e = load(dir.path(), "bad").unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
    }
}
