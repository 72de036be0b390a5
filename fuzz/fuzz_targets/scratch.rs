//! A scratch directory per fuzzing process, for the entry points that read a file by path.

use std::path::PathBuf;

/// `<temp>/tritter-fuzz-<pid>/<sub>`, created once.
pub fn dir(sub: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("tritter-fuzz-{}", std::process::id()))
        .join(sub);
    if !d.is_dir() {
        std::fs::create_dir_all(&d).expect("creating the scratch directory");
    }
    d
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("writing a scratch file");
    p
}
