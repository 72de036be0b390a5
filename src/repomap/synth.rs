//! Synthetic source trees for the repo map's tests and benchmark, generated into a folder the
//! caller owns (a temporary one; never committed): `known_counts` (each `sym_k` called from a
//! known number of files, in Python and Rust) and `repo` (a mixed tree of N files whose calls
//! follow a Zipf-like popularity, with an ignored folder, a binary file and a huge file beside).

use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// `lib_k.py` / `lib_k.rs` define `sym_k`; `counts[k]` caller files in each language call it once.
#[cfg(test)]
pub fn known_counts(dir: &Path, counts: &[usize]) -> io::Result<()> {
    for (k, &n) in counts.iter().enumerate() {
        std::fs::write(
            dir.join(format!("lib_{k}.py")),
            format!("def sym_{k}():\n    return {k}\n"),
        )?;
        std::fs::write(
            dir.join(format!("lib_{k}.rs")),
            format!("pub fn sym_{k}() -> u32 {{ {k} }}\n"),
        )?;
        for j in 0..n {
            std::fs::write(
                dir.join(format!("caller_{k}_{j}.py")),
                format!("def caller_{k}_{j}():\n    return sym_{k}()\n"),
            )?;
            std::fs::write(
                dir.join(format!("caller_{k}_{j}.rs")),
                format!("fn caller_{k}_{j}() -> u32 {{ sym_{k}() }}\n"),
            )?;
        }
    }
    Ok(())
}

/// A small deterministic generator (64-bit LCG), so the tree is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }

    /// Skewed toward small values: the minimum of three draws.
    fn skewed(&mut self, n: usize) -> usize {
        self.next(n).min(self.next(n)).min(self.next(n))
    }
}

const DEFS_PER_FILE: usize = 8;
const CALLS_PER_DEF: usize = 4;

/// `files` source files in `pkg_N/` folders (every third one Python), each with 8 definitions
/// whose bodies make 4 calls to definitions elsewhere, about 60-110 lines a file; plus
/// `.gitignore`d `build/` files, a binary `.py` and a huge `.rs` that the map must leave out.
pub fn repo(dir: &Path, files: usize) -> io::Result<()> {
    let mut rng = Lcg(0x0074_7269_7474_6572);
    let total_defs = files * DEFS_PER_FILE;
    for f in 0..files {
        let sub = dir.join(format!("pkg_{}", f / 50));
        std::fs::create_dir_all(&sub)?;
        let python = f % 3 == 0;
        let mut src = String::new();
        for d in 0..DEFS_PER_FILE {
            let id = f * DEFS_PER_FILE + d;
            let calls: Vec<String> = (0..CALLS_PER_DEF)
                .map(|_| format!("item_{}", rng.skewed(total_defs)))
                .collect();
            if python {
                let _ = writeln!(src, "def item_{id}(value):\n    \"\"\"Item {id}.\"\"\"");
                for c in &calls {
                    let _ = writeln!(src, "    value = {c}(value) + 1");
                }
                let _ = writeln!(src, "    return value\n");
            } else {
                let _ = writeln!(
                    src,
                    "/// Item {id}.\npub fn item_{id}(value: u64) -> u64 {{"
                );
                let _ = writeln!(src, "    let mut v = value;");
                for c in &calls {
                    let _ = writeln!(src, "    v = {c}(v).wrapping_add(1);");
                }
                let _ = writeln!(src, "    v\n}}\n");
            }
        }
        let ext = if python { "py" } else { "rs" };
        std::fs::write(sub.join(format!("mod_{f}.{ext}")), src)?;
    }
    std::fs::write(dir.join(".gitignore"), "build/\n")?;
    std::fs::create_dir_all(dir.join("build"))?;
    for i in 0..20 {
        std::fs::write(
            dir.join(format!("build/gen_{i}.rs")),
            "pub fn item_0() {}\n",
        )?;
    }
    std::fs::write(dir.join("blob.py"), [0u8, 159, 146, 150, 0, 1, 2])?;
    let huge = "pub fn item_0() {}\n".repeat(20_000);
    std::fs::write(dir.join("huge.rs"), huge)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_repo_maps_only_its_source_files() {
        let dir = tempfile::tempdir().unwrap();
        repo(dir.path(), 30).unwrap();
        let (tags, s) = crate::repomap::build::build(dir.path(), None).unwrap();
        assert_eq!((s.files, s.skipped, s.too_large), (30, 1, 1));
        assert_eq!(s.defs, 30 * DEFS_PER_FILE);
        assert!(tags.files.iter().all(|f| !f.path.starts_with("build/")));
    }
}
