//! The file walk under a source path that the directory, JSONL and Parquet sources share:
//! depth-first, sorted by name (so every run reads in the same order), hidden entries and symlinks
//! inside the tree skipped; unreadable entries and a missing root become [`Issue`]s.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::document::{Issue, IssueKind};

/// Depth-first walk over the files under a path, in sorted order; a plain file yields itself.
/// Hidden entries (names starting with '.') are skipped. With `ext`, only files with that
/// extension are yielded (unless the root itself is a file).
pub(crate) struct Walk {
    index: usize,
    root: PathBuf,
    stack: Vec<PathBuf>,
    ext: Option<&'static str>,
    root_missing: bool,
}

impl Walk {
    pub(crate) fn new(index: usize, root: &Path, ext: Option<&'static str>) -> Walk {
        let missing = !root.exists();
        Walk {
            index,
            root: root.to_path_buf(),
            stack: if missing {
                Vec::new()
            } else {
                vec![root.to_path_buf()]
            },
            ext,
            root_missing: missing,
        }
    }
}

/// An item of a walk: a file to read, or an issue.
pub(crate) enum WalkItem {
    File(PathBuf),
    Issue(Issue),
}

impl Iterator for Walk {
    type Item = WalkItem;
    fn next(&mut self) -> Option<WalkItem> {
        if self.root_missing {
            self.root_missing = false;
            return Some(WalkItem::Issue(Issue {
                source: self.index,
                kind: IssueKind::MissingSource,
                path: self.root.display().to_string(),
                message: "source path does not exist".into(),
                lost: 0,
            }));
        }
        while let Some(path) = self.stack.pop() {
            // The root is followed if it is a link; links inside the tree are not.
            let meta = if path == self.root {
                std::fs::metadata(&path)
            } else {
                std::fs::symlink_metadata(&path)
            };
            let meta = match meta {
                Ok(m) => m,
                Err(e) => return Some(unreadable(self.index, &path, &e)),
            };
            if meta.is_dir() {
                let entries = match std::fs::read_dir(&path) {
                    Ok(rd) => rd,
                    Err(e) => return Some(unreadable(self.index, &path, &e)),
                };
                let mut children = Vec::new();
                for entry in entries {
                    match entry {
                        Ok(e) => {
                            if !e.file_name().to_string_lossy().starts_with('.') {
                                children.push(e.path());
                            }
                        }
                        Err(e) => return Some(unreadable(self.index, &path, &e)),
                    }
                }
                children.sort();
                children.reverse();
                self.stack.extend(children);
                continue;
            }
            if meta.is_file() {
                let wanted = match self.ext {
                    Some(ext) => path == self.root || path.extension().is_some_and(|e| e == ext),
                    None => true,
                };
                if wanted {
                    return Some(WalkItem::File(path));
                }
            }
            // Symlinks and special files are not followed: a tree walk must terminate.
        }
        None
    }
}

/// The issue for a file or directory that cannot be opened or read.
pub(crate) fn unreadable(index: usize, path: &Path, e: &std::io::Error) -> WalkItem {
    WalkItem::Issue(unreadable_issue(index, path, e))
}

fn unreadable_issue(index: usize, path: &Path, e: &std::io::Error) -> Issue {
    Issue {
        source: index,
        kind: IssueKind::UnreadableFile,
        path: path.display().to_string(),
        message: e.to_string(),
        lost: 0,
    }
}

/// The next file of `walk` opened to be read line by line, or the issue its walk or its opening
/// reports; `None` at the end of the walk.
pub(crate) fn open_next(
    walk: &mut Walk,
    index: usize,
) -> Option<Result<(PathBuf, BufReader<File>), Issue>> {
    Some(match walk.next()? {
        WalkItem::Issue(i) => Err(i),
        WalkItem::File(p) => match File::open(&p) {
            Ok(f) => Ok((p, BufReader::new(f))),
            Err(e) => Err(unreadable_issue(index, &p, &e)),
        },
    })
}
