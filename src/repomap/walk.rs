//! The files a repo map reads: `.py`/`.pyi`/`.rs` files under a folder, walked with the `ignore`
//! crate so `.gitignore`, `.ignore` and git's exclude files are honoured as git does (also outside
//! a git repository), hidden files and folders are skipped, symlinks are not followed, and files
//! over `MAX_FILE_BYTES` are counted but not listed. Sorted by path, so a map is deterministic.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::repomap::{Lang, MapError, MAX_FILES, MAX_FILE_BYTES};

/// A source file to tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub abs: PathBuf,
    /// Relative to the root, `/`-separated.
    pub rel: String,
    pub lang: Lang,
    pub size: u64,
    pub mtime: Option<SystemTime>,
}

/// The candidates under `root` and how many source files were left out for size or count.
pub fn walk(root: &Path) -> Result<(Vec<Candidate>, usize), MapError> {
    let meta = std::fs::metadata(root).map_err(|e| MapError::Root {
        path: root.to_path_buf(),
        cause: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(MapError::Root {
            path: root.to_path_buf(),
            cause: "not a folder".into(),
        });
    }
    let walker = ignore::WalkBuilder::new(root)
        .hidden(true)
        .follow_links(false)
        .require_git(false)
        .git_global(false)
        .build();
    let mut out = Vec::new();
    let mut left_out = 0usize;
    // Unreadable folders and broken entries are skipped: a map of what can be read.
    for entry in walker.flatten() {
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let Some(lang) = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(Lang::from_extension)
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.len() > MAX_FILE_BYTES || out.len() >= MAX_FILES {
            left_out += 1;
            continue;
        }
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        out.push(Candidate {
            abs: path.to_path_buf(),
            rel,
            lang,
            size: meta.len(),
            mtime: meta.modified().ok(),
        });
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((out, left_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignored_hidden_huge_and_other_files_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("src/gen")).unwrap();
        std::fs::create_dir_all(p.join(".hidden")).unwrap();
        std::fs::write(p.join(".gitignore"), "gen/\n*.skip.py\n").unwrap();
        std::fs::write(p.join("src/a.rs"), "fn a() {}").unwrap();
        std::fs::write(p.join("src/b.py"), "def b(): pass").unwrap();
        std::fs::write(p.join("src/c.skip.py"), "def c(): pass").unwrap();
        std::fs::write(p.join("src/gen/d.rs"), "fn d() {}").unwrap();
        std::fs::write(p.join(".hidden/e.rs"), "fn e() {}").unwrap();
        std::fs::write(p.join("notes.txt"), "fn f() {}").unwrap();
        let big = "x = 1\n".repeat(MAX_FILE_BYTES as usize / 6 + 1);
        std::fs::write(p.join("big.py"), big).unwrap();
        let (files, left_out) = walk(p).unwrap();
        let rels: Vec<&str> = files.iter().map(|c| c.rel.as_str()).collect();
        assert_eq!(rels, ["src/a.rs", "src/b.py"]);
        assert_eq!(left_out, 1);
        assert!(walk(&p.join("missing")).is_err());
        assert!(walk(&p.join("src/a.rs")).is_err());
    }
}
