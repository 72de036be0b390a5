//! Reading source files for the code pane and the prompt context: size limit, binary detection
//! (a NUL byte in the first 8 KiB, as git does), UTF-8 validation with the offset of the first bad
//! byte, and `@path` / path completion helpers; [`write_atomic`] for files whose loss would hurt.

use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through the temporary file `tmp` (in the same folder): written in
/// full and flushed to disk before the rename, so a crash leaves the old file or the new one,
/// never a torn one. A failed write (a full disk) removes the temporary file and leaves the old
/// file as it was.
pub fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let written = std::fs::File::create(tmp).and_then(|mut f| {
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        // Best effort: the write error is the one to report.
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    std::fs::rename(tmp, path)
}

/// At most this much of a file is read: a larger file is cut to its first whole lines within it
/// (the model's context could never hold more; the prompt cuts it further to the budget).
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// A text file as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFile {
    pub text: String,
    /// The file's size when it was larger than [`MAX_FILE_BYTES`] and only its first lines
    /// were read.
    pub truncated_from: Option<u64>,
}

/// The notice for a file of `full` bytes of which `read` were read (`None` when it was whole).
pub fn truncation_notice(name: &str, read: usize, full: Option<u64>) -> Option<String> {
    full.map(|full| {
        format!(
            "{name} is {}; only its first {} (whole lines) were read",
            human_bytes(full),
            human_bytes(read as u64)
        )
    })
}

/// Reads a text file (at most [`MAX_FILE_BYTES`] of it) or says clearly why it cannot be shown.
pub fn read_text_file(path: &Path) -> anyhow::Result<TextFile> {
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    if meta.is_dir() {
        anyhow::bail!("{} is a directory, not a file", path.display());
    }
    // A device or FIFO reports length 0 and may never end (`/dev/zero`): regular files only,
    // and never more than the limit read even if the file grows meanwhile.
    if !meta.is_file() {
        anyhow::bail!(
            "{} is not a regular file (a device, FIFO or socket); not opened",
            path.display()
        );
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_FILE_BYTES + 1), &mut bytes)
        })
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let truncated_from = if bytes.len() as u64 > MAX_FILE_BYTES {
        bytes.truncate(MAX_FILE_BYTES as usize);
        // Whole lines only; a file without a newline in the limit is cut at the last whole
        // UTF-8 character instead.
        match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => bytes.truncate(i + 1),
            None => {
                if let Err(e) = std::str::from_utf8(&bytes) {
                    if e.error_len().is_none() {
                        bytes.truncate(e.valid_up_to());
                    }
                }
            }
        }
        Some(meta.len().max(MAX_FILE_BYTES + 1))
    } else {
        None
    };
    Ok(TextFile {
        text: check_text(path, bytes)?,
        truncated_from,
    })
}

fn check_text(path: &Path, bytes: Vec<u8>) -> anyhow::Result<String> {
    if bytes[..bytes.len().min(8192)].contains(&0) {
        anyhow::bail!(
            "{} looks like a binary file (it contains NUL bytes); not opened",
            path.display()
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {}); not opened",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// "1.5 MiB"-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Expands a leading `~/` to the home folder.
pub fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    PathBuf::from(p)
}

/// Paths that complete `prefix` (relative to `cwd` unless absolute): entries of its folder whose
/// names start with its last component; folders end in `/`. Hidden entries only when asked for with
/// a leading dot. Sorted, at most `limit`.
pub fn complete_path(cwd: &Path, prefix: &str, limit: usize) -> Vec<String> {
    let (dir_part, name_part) = match prefix.rfind('/') {
        Some(i) => (&prefix[..=i], &prefix[i + 1..]),
        None => ("", prefix),
    };
    let dir = if dir_part.is_empty() {
        cwd.to_path_buf()
    } else {
        let d = expand_home(dir_part);
        if d.is_absolute() {
            d
        } else {
            cwd.join(d)
        }
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.starts_with(name_part)
                || (name.starts_with('.') && !name_part.starts_with('.'))
            {
                return None;
            }
            let slash = if e.file_type().ok()?.is_dir() {
                "/"
            } else {
                ""
            };
            Some(format!("{dir_part}{name}{slash}"))
        })
        .collect();
    out.sort();
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_binary_non_utf8_and_huge_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("a.rs"), "fn main() {}\n").unwrap();
        assert_eq!(read_text_file(&p("a.rs")).unwrap().text, "fn main() {}\n");

        std::fs::write(p("b.bin"), [1u8, 2, 0, 3]).unwrap();
        let e = read_text_file(&p("b.bin")).unwrap_err().to_string();
        assert!(e.contains("binary"), "{e}");

        std::fs::write(p("c.txt"), b"ok\xffno").unwrap();
        let e = read_text_file(&p("c.txt")).unwrap_err().to_string();
        assert!(e.contains("not UTF-8") && e.contains("offset 2"), "{e}");

        // A file over the limit: its first whole lines within the limit, and a notice.
        let line = "let x = \"é\";\n"; // 15 bytes, a two-byte character inside
        let big = line.repeat(MAX_FILE_BYTES as usize / line.len() + 10);
        std::fs::write(p("d.txt"), &big).unwrap();
        let got = read_text_file(&p("d.txt")).unwrap();
        let whole = MAX_FILE_BYTES as usize / line.len();
        assert_eq!(got.text, line.repeat(whole));
        assert_eq!(got.truncated_from, Some(big.len() as u64));
        let note = truncation_notice("d.txt", got.text.len(), got.truncated_from).unwrap();
        assert!(
            note.starts_with("d.txt is 2.0 MiB; only its first 2.0 MiB"),
            "{note}"
        );
        // No newline within the limit: cut at the last whole character.
        let one = "é".repeat(MAX_FILE_BYTES as usize);
        std::fs::write(p("e.txt"), &one).unwrap();
        let got = read_text_file(&p("e.txt")).unwrap();
        assert_eq!(got.text.len(), MAX_FILE_BYTES as usize);
        assert!(got.text.chars().all(|c| c == 'é'));
        assert_eq!(read_text_file(&p("a.rs")).unwrap().truncated_from, None);

        let e = read_text_file(&p("missing")).unwrap_err().to_string();
        assert!(e.contains("cannot open"), "{e}");
        let e = read_text_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        // A device of length 0 that never ends: `/file /dev/zero` used to read without end
        // (found while writing the TUI soak).
        if Path::new("/dev/zero").exists() {
            let e = read_text_file(Path::new("/dev/zero"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn path_completion() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.rs"), "").unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        std::fs::write(dir.path().join("setup.py"), "").unwrap();
        std::fs::write(dir.path().join(".hidden"), "").unwrap();
        assert_eq!(complete_path(dir.path(), "s", 10), vec!["setup.py", "src/"]);
        assert_eq!(
            complete_path(dir.path(), "src/", 10),
            vec!["src/lib.rs", "src/main.rs"]
        );
        assert_eq!(complete_path(dir.path(), "src/m", 10), vec!["src/main.rs"]);
        assert_eq!(complete_path(dir.path(), "", 10), vec!["setup.py", "src/"]);
        assert_eq!(complete_path(dir.path(), ".h", 10), vec![".hidden"]);
        assert!(complete_path(dir.path(), "nope/x", 10).is_empty());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
