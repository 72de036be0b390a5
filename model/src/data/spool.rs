//! The pipeline's spool of accepted texts: the read stage appends every document that passed the
//! filters and exact dedup, the tokenizer and pack stages stream it back, so the corpus is never
//! held in memory.
//!
//! Records are `u32 id, u64 len, len bytes of UTF-8` (little-endian), in id order. The file is
//! scratch space: `prepare` removes it whether the run succeeds or not.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::DataError;

/// Appends records to a new spool file.
pub(crate) struct SpoolWriter {
    path: PathBuf,
    w: BufWriter<File>,
}

impl SpoolWriter {
    /// Create (or truncate) the spool at `path`.
    pub(crate) fn create(path: &Path) -> Result<SpoolWriter, DataError> {
        let f = File::create(path).map_err(|e| DataError::io("create", path, e))?;
        Ok(SpoolWriter {
            path: path.to_path_buf(),
            w: BufWriter::with_capacity(1 << 20, f),
        })
    }

    /// Append document `id` with its text.
    pub(crate) fn push(&mut self, id: u32, text: &str) -> Result<(), DataError> {
        self.w
            .write_all(&id.to_le_bytes())
            .and_then(|_| self.w.write_all(&(text.len() as u64).to_le_bytes()))
            .and_then(|_| self.w.write_all(text.as_bytes()))
            .map_err(|e| DataError::io("write", &self.path, e))
    }

    /// Flush and close the spool.
    pub(crate) fn finish(mut self) -> Result<(), DataError> {
        self.w
            .flush()
            .map_err(|e| DataError::io("write", &self.path, e))
    }
}

/// Streams the records of a spool back in order.
pub(crate) struct SpoolReader {
    path: PathBuf,
    r: BufReader<File>,
}

impl SpoolReader {
    /// Open the spool at `path` from its first record.
    pub(crate) fn open(path: &Path) -> Result<SpoolReader, DataError> {
        let f = File::open(path).map_err(|e| DataError::io("open", path, e))?;
        Ok(SpoolReader {
            path: path.to_path_buf(),
            r: BufReader::with_capacity(1 << 20, f),
        })
    }

    /// The next `(id, text)`, or `None` at the end of the spool.
    pub(crate) fn next_record(&mut self) -> Result<Option<(u32, String)>, DataError> {
        let mut head = [0u8; 12];
        match self.r.read_exact(&mut head[..4]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(DataError::io("read", &self.path, e)),
        }
        let io = |e| DataError::io("read", &self.path, e);
        self.r.read_exact(&mut head[4..]).map_err(io)?;
        let id = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&head[4..]);
        let mut buf = vec![0u8; u64::from_le_bytes(len) as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| DataError::io("read", &self.path, e))?;
        let text = String::from_utf8(buf).map_err(|_| DataError::Shard {
            path: self.path.clone(),
            message: format!("spool record {id} is not UTF-8"),
        })?;
        Ok(Some((id, text)))
    }
}
