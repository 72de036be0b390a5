//! A folder's tags: walk it (`walk`), reuse the tags of every file whose path, size and mtime are
//! those of the previous build, and parse the rest on rayon's threads (`tags`), so a rebuild after
//! an edit re-parses only the edited files. A file that cannot be read, is binary, is not UTF-8
//! or grew past the size limit is skipped and counted; it never fails the build.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use crate::repomap::tags::{as_text, Tagger};
use crate::repomap::walk::{walk, Candidate};
use crate::repomap::{BuildStats, FileTags, MapError, RepoTags, MAX_FILE_BYTES};

/// The tags of the source files under `root`; `previous` (a build of the same folder) supplies
/// the tags of unchanged files.
pub fn build(root: &Path, previous: Option<&RepoTags>) -> Result<(RepoTags, BuildStats), MapError> {
    let t0 = Instant::now();
    let (candidates, too_large) = walk(root)?;
    let walk_ms = t0.elapsed().as_secs_f64() * 1e3;
    let old: HashMap<&str, &Arc<FileTags>> = previous
        .filter(|p| p.root == root)
        .map(|p| p.files.iter().map(|f| (f.path.as_str(), f)).collect())
        .unwrap_or_default();
    let reuse = |c: &Candidate| {
        old.get(c.rel.as_str())
            .filter(|f| f.size == c.size && f.mtime.is_some() && f.mtime == c.mtime)
            .map(|f| Arc::clone(f))
    };
    let (kept, todo): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .map(|c| (reuse(&c), c))
        .partition(|(f, _)| f.is_some());
    let t1 = Instant::now();
    let tagger = Tagger::new()?;
    let parsed: Vec<Option<Arc<FileTags>>> = todo
        .par_iter()
        .map_init(tree_sitter::Parser::new, |parser, (_, c)| {
            tag_file(&tagger, parser, c).map(Arc::new)
        })
        .collect();
    let parse_ms = t1.elapsed().as_secs_f64() * 1e3;
    let skipped = parsed.iter().filter(|f| f.is_none()).count();
    let mut files: Vec<Arc<FileTags>> = kept.into_iter().filter_map(|(f, _)| f).collect();
    files.extend(parsed.into_iter().flatten());
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let stats = BuildStats {
        files: files.len(),
        parsed: todo.len() - skipped,
        skipped,
        too_large,
        defs: files.iter().map(|f| f.defs.len()).sum(),
        refs: files
            .iter()
            .map(|f| f.refs.iter().map(|r| r.1).sum::<usize>())
            .sum(),
        walk_ms,
        parse_ms,
        total_ms: t0.elapsed().as_secs_f64() * 1e3,
    };
    let tags = RepoTags {
        root: root.to_path_buf(),
        files,
    };
    Ok((tags, stats))
}

/// The tags of one file, or `None` when it cannot be read as text or parsed.
fn tag_file(tagger: &Tagger, parser: &mut tree_sitter::Parser, c: &Candidate) -> Option<FileTags> {
    let mut bytes = Vec::new();
    std::fs::File::open(&c.abs)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .ok()?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return None;
    }
    let source = as_text(bytes)?;
    let (defs, refs) = tagger.tag(parser, c.lang, &source)?;
    Some(FileTags {
        path: c.rel.clone(),
        size: c.size,
        mtime: c.mtime,
        defs,
        refs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_parses_only_changed_files_and_drops_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for i in 0..5 {
            std::fs::write(
                p.join(format!("m{i}.py")),
                format!("def f{i}():\n    g()\n"),
            )
            .unwrap();
        }
        std::fs::write(p.join("bin.py"), b"def x():\0\n").unwrap();
        std::fs::write(p.join("latin1.rs"), b"fn \xe9() {}").unwrap();
        let (first, s) = build(p, None).unwrap();
        assert_eq!((s.files, s.parsed, s.skipped), (5, 5, 2));
        let (same, s) = build(p, Some(&first)).unwrap();
        assert_eq!((s.files, s.parsed), (5, 0));
        assert_eq!(same, first);
        // A change of size is seen even within the mtime's resolution.
        std::fs::write(
            p.join("m2.py"),
            "def f2():\n    pass\n\ndef h():\n    pass\n",
        )
        .unwrap();
        std::fs::remove_file(p.join("m4.py")).unwrap();
        let (next, s) = build(p, Some(&same)).unwrap();
        assert_eq!((s.files, s.parsed), (4, 1));
        let m2 = next.files.iter().find(|f| f.path == "m2.py").unwrap();
        assert_eq!(m2.defs.len(), 2);
        assert!(Arc::ptr_eq(&next.files[0], &first.files[0]));
        assert_eq!(
            next,
            build(p, None).unwrap().0,
            "incremental equals a fresh build"
        );
    }
}
