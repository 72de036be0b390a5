//! Packed training sequences on disk: the shard files, the JSON index, the packer that fills
//! them, and the reader the trainer streams from.
//!
//! Format (version 1, or 2 with flags; all integers little-endian):
//! - `data/shards.json`: `{ version, seq_len, pad_id, pad_doc, train: SPLIT, val: SPLIT }` with
//!   `SPLIT = { sequences, tokens, shards: [{ file, sequences }] }` (`tokens`: not padding).
//! - `data/{train,val}/shard-NNNNN.bin`: a 32-byte header — magic `TRTSHRD1`, `u32` version,
//!   `u32` seq_len, `u64` sequences, 8 reserved zero bytes — then per sequence `seq_len` `u32`
//!   token ids followed by `seq_len` `u32` document ids; version 2 (written when the data has a
//!   `chat` source) adds `seq_len` `u32` flags per sequence ([`super::chat::FLAG_TARGET`],
//!   [`super::chat::FLAG_PREFIX`]; every non-padding token of plain text is a target). Both
//!   versions are read; a version-1 sequence reads as if its flags were written.
//!
//! Documents are concatenated, each followed by eos, and cut into sequences of exactly
//! `seq_len` tokens; a document may continue into the next sequence with the same id. The last
//! sequence of a split is padded with `pad_id` tokens whose document id is [`PAD_DOC`].
//! Files and the index are written to a temporary name and renamed, so a reader never sees a
//! partial file.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DataError;

/// Shard file magic.
pub const MAGIC: &[u8; 8] = b"TRTSHRD1";
/// Format version of shards without flags.
pub const VERSION: u32 = 1;
/// Format version of shards with the flag channel.
pub const VERSION_FLAGS: u32 = 2;
/// Header bytes.
pub const HEADER_LEN: u64 = 32;
/// Document id of padding positions.
pub const PAD_DOC: u32 = u32::MAX;
/// Index file name inside the data directory.
pub const INDEX_FILE: &str = "shards.json";

/// The train or validation split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training sequences.
    Train,
    /// Held-out sequences.
    Val,
}

impl Split {
    /// Directory and index key.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// One shard in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Path relative to the data directory.
    pub file: String,
    /// Sequences in the file.
    pub sequences: u64,
}

/// One split in the index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitIndex {
    /// Sequences in all shards.
    pub sequences: u64,
    /// Non-padding tokens.
    pub tokens: u64,
    /// The shard files in order.
    pub shards: Vec<ShardEntry>,
}

/// The index of all shards (`data/shards.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIndex {
    /// Format version.
    pub version: u32,
    /// Tokens per sequence.
    pub seq_len: u32,
    /// Token id of padding.
    pub pad_id: u32,
    /// Document id of padding.
    pub pad_doc: u32,
    /// Training split.
    pub train: SplitIndex,
    /// Validation split.
    pub val: SplitIndex,
}

/// Write `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| DataError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::io("rename", path, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Packs documents of one split into sequences and writes its shards.
pub struct Packer {
    data_dir: PathBuf,
    split: Split,
    seq_len: usize,
    shard_sequences: u64,
    pad_id: u32,
    tokens: Vec<u32>,
    docs: Vec<u32>,
    /// The flag channel (version 2), when written.
    flags: Option<Vec<u32>>,
    out: Option<(BufWriter<File>, PathBuf, u64)>,
    index: SplitIndex,
}

impl Packer {
    /// A packer writing `data_dir/<split>/shard-*.bin`.
    pub fn new(
        data_dir: &Path,
        split: Split,
        seq_len: usize,
        shard_sequences: usize,
        pad_id: u32,
    ) -> Result<Packer, DataError> {
        let dir = data_dir.join(split.name());
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io("create", &dir, e))?;
        Ok(Packer {
            data_dir: data_dir.to_path_buf(),
            split,
            seq_len,
            shard_sequences: shard_sequences as u64,
            pad_id,
            tokens: Vec::with_capacity(seq_len),
            docs: Vec::with_capacity(seq_len),
            flags: None,
            out: None,
            index: SplitIndex::default(),
        })
    }

    /// Write version 2: a flag per token.
    pub fn with_flags(mut self) -> Self {
        self.flags = Some(Vec::with_capacity(self.seq_len));
        self
    }

    /// Append one document's tokens (the caller adds eos); in version 2 each is a target.
    pub fn push(&mut self, doc: u32, tokens: &[u32]) -> Result<(), DataError> {
        self.index.tokens += tokens.len() as u64;
        let mut rest = tokens;
        while !rest.is_empty() {
            let room = self.seq_len - self.tokens.len();
            let take = room.min(rest.len());
            self.tokens.extend_from_slice(&rest[..take]);
            self.docs.extend(std::iter::repeat_n(doc, take));
            if let Some(f) = self.flags.as_mut() {
                f.extend(std::iter::repeat_n(super::chat::FLAG_TARGET, take));
            }
            rest = &rest[take..];
            if self.tokens.len() == self.seq_len {
                self.flush_sequence()?;
            }
        }
        Ok(())
    }

    /// Append one document with its flags (version 2) in a single sequence: a document that does
    /// not fit the rest of the current sequence starts the next (the rest is padding). Returns
    /// false, writing nothing, for a document longer than a sequence.
    pub fn push_whole(
        &mut self,
        doc: u32,
        tokens: &[u32],
        flags: &[u32],
    ) -> Result<bool, DataError> {
        if tokens.len() > self.seq_len || flags.len() != tokens.len() {
            return Ok(false);
        }
        if tokens.len() > self.seq_len - self.tokens.len() {
            self.pad_sequence()?;
        }
        let Some(f) = self.flags.as_mut() else {
            return Err(DataError::Config {
                message: "a document with flags for shards without them".into(),
            });
        };
        f.extend_from_slice(flags);
        self.index.tokens += tokens.len() as u64;
        self.tokens.extend_from_slice(tokens);
        self.docs.extend(std::iter::repeat_n(doc, tokens.len()));
        if self.tokens.len() == self.seq_len {
            self.flush_sequence()?;
        }
        Ok(true)
    }

    /// Pad the open sequence to `seq_len` and write it (nothing when it is empty).
    fn pad_sequence(&mut self) -> Result<(), DataError> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let pad = self.seq_len - self.tokens.len();
        self.tokens.extend(std::iter::repeat_n(self.pad_id, pad));
        self.docs.extend(std::iter::repeat_n(PAD_DOC, pad));
        if let Some(f) = self.flags.as_mut() {
            f.extend(std::iter::repeat_n(0, pad));
        }
        self.flush_sequence()
    }

    fn flush_sequence(&mut self) -> Result<(), DataError> {
        if self.out.is_none() {
            let n = self.index.shards.len();
            let rel = format!("{}/shard-{n:05}.bin", self.split.name());
            let path = self.data_dir.join(&rel);
            let tmp = tmp_path(&path);
            let f = File::create(&tmp).map_err(|e| DataError::io("create", &tmp, e))?;
            let mut w = BufWriter::new(f);
            w.write_all(&[0u8; HEADER_LEN as usize])
                .map_err(|e| DataError::io("write", &tmp, e))?;
            self.index.shards.push(ShardEntry {
                file: rel,
                sequences: 0,
            });
            self.out = Some((w, path, 0));
        }
        let Some((w, path, count)) = self.out.as_mut() else {
            return Ok(());
        };
        let mut buf = Vec::with_capacity(self.seq_len * 12);
        let flags = self.flags.as_deref().unwrap_or_default();
        for &t in self.tokens.iter().chain(&self.docs).chain(flags) {
            buf.extend_from_slice(&t.to_le_bytes());
        }
        w.write_all(&buf)
            .map_err(|e| DataError::io("write", tmp_path(path), e))?;
        *count += 1;
        self.index.sequences += 1;
        self.tokens.clear();
        self.docs.clear();
        if let Some(f) = self.flags.as_mut() {
            f.clear();
        }
        if *count == self.shard_sequences {
            self.close_shard()?;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<(), DataError> {
        let Some((w, path, count)) = self.out.take() else {
            return Ok(());
        };
        let tmp = tmp_path(&path);
        let mut f = w
            .into_inner()
            .map_err(|e| DataError::io("write", &tmp, e.into_error()))?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.version().to_le_bytes());
        header.extend_from_slice(&(self.seq_len as u32).to_le_bytes());
        header.extend_from_slice(&count.to_le_bytes());
        header.extend_from_slice(&[0u8; 8]);
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&header))
            .and_then(|_| f.sync_all())
            .map_err(|e| DataError::io("write", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| DataError::io("rename", &path, e))?;
        if let Some(last) = self.index.shards.last_mut() {
            last.sequences = count;
        }
        Ok(())
    }

    fn version(&self) -> u32 {
        match self.flags {
            Some(_) => VERSION_FLAGS,
            None => VERSION,
        }
    }

    /// Pad and write the last sequence, close the open shard, and return the split's index.
    pub fn finish(mut self) -> Result<SplitIndex, DataError> {
        self.pad_sequence()?;
        self.close_shard()?;
        Ok(self.index)
    }
}

/// Write the index atomically.
pub fn write_index(data_dir: &Path, index: &ShardIndex) -> Result<(), DataError> {
    let path = data_dir.join(INDEX_FILE);
    let json = serde_json::to_vec_pretty(index).map_err(|e| DataError::Shard {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &json)
}

/// One packed sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequence {
    /// `seq_len` token ids.
    pub tokens: Vec<u32>,
    /// The document id of each token ([`PAD_DOC`] for padding).
    pub doc_ids: Vec<u32>,
    /// The flags of each token (version 2; for version 1 every non-padding token is a target).
    pub flags: Vec<u32>,
}

/// All shards of a prepared data directory.
#[derive(Debug, Clone)]
pub struct ShardSet {
    dir: PathBuf,
    index: ShardIndex,
}

impl ShardSet {
    /// Open `data_dir` (the run's `data/` directory) through its `shards.json`.
    pub fn open(data_dir: &Path) -> Result<ShardSet, DataError> {
        let path = data_dir.join(INDEX_FILE);
        let text = std::fs::read(&path).map_err(|e| DataError::io("read", &path, e))?;
        let index: ShardIndex = serde_json::from_slice(&text).map_err(|e| DataError::Shard {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if index.version != VERSION && index.version != VERSION_FLAGS {
            return Err(DataError::Shard {
                path,
                message: format!(
                    "version {} (this build reads {VERSION} and {VERSION_FLAGS}): prepare the \
                     data again with this build",
                    index.version
                ),
            });
        }
        Ok(ShardSet {
            dir: data_dir.to_path_buf(),
            index,
        })
    }

    /// The index.
    pub fn index(&self) -> &ShardIndex {
        &self.index
    }

    /// A reader of one split.
    pub fn split(&self, split: Split) -> SplitReader {
        let idx = match split {
            Split::Train => &self.index.train,
            Split::Val => &self.index.val,
        };
        let mut starts = Vec::with_capacity(idx.shards.len());
        let mut acc = 0u64;
        for s in &idx.shards {
            starts.push(acc);
            acc += s.sequences;
        }
        SplitReader {
            dir: self.dir.clone(),
            split,
            seq_len: self.index.seq_len as usize,
            version: self.index.version,
            shards: idx.shards.clone(),
            starts,
            len: acc,
            open: None,
        }
    }
}

/// Random access and streaming over one split's sequences.
#[derive(Debug)]
pub struct SplitReader {
    dir: PathBuf,
    split: Split,
    seq_len: usize,
    /// The index's format version: 2 has a flag channel.
    version: u32,
    shards: Vec<ShardEntry>,
    starts: Vec<u64>,
    len: u64,
    open: Option<(usize, File)>,
}

impl SplitReader {
    /// Sequences in the split.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the split has no sequence.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Bytes of one sequence in a shard file: two or three channels of `seq_len` words.
    fn row_bytes(&self) -> u64 {
        let channels = if self.version == VERSION_FLAGS { 3 } else { 2 };
        channels * self.seq_len as u64 * 4
    }

    fn shard_file(&mut self, shard: usize) -> Result<&mut File, DataError> {
        if self.open.as_ref().map(|(i, _)| *i) != Some(shard) {
            let entry = &self.shards[shard];
            let path = self.dir.join(&entry.file);
            let mut f = File::open(&path).map_err(|e| DataError::io("open", &path, e))?;
            let mut header = [0u8; HEADER_LEN as usize];
            f.read_exact(&mut header)
                .map_err(|e| DataError::io("read", &path, e))?;
            let bad = |message: String| DataError::Shard {
                path: path.clone(),
                message,
            };
            if &header[..8] != MAGIC {
                return Err(bad("not a Tritter shard (bad magic)".into()));
            }
            let word = |at: usize| {
                u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
            };
            let mut count = [0u8; 8];
            count.copy_from_slice(&header[16..24]);
            let count = u64::from_le_bytes(count);
            if word(8) != self.version
                || word(12) as usize != self.seq_len
                || count != entry.sequences
            {
                return Err(bad(format!(
                    "header says version {} seq_len {} sequences {count}, index says version {} seq_len {} sequences {}",
                    word(8),
                    word(12),
                    self.version,
                    self.seq_len,
                    entry.sequences
                )));
            }
            let want = HEADER_LEN + count * self.row_bytes();
            let have = f
                .metadata()
                .map_err(|e| DataError::io("stat", &path, e))?
                .len();
            if have != want {
                return Err(bad(format!("{have} bytes, expected {want}")));
            }
            self.open = Some((shard, f));
        }
        match self.open.as_mut() {
            Some((_, f)) => Ok(f),
            None => Err(DataError::Shard {
                path: self.dir.clone(),
                message: "shard file not open".into(),
            }),
        }
    }

    /// Read sequence `index` into `out`.
    pub fn read(&mut self, index: u64, out: &mut Sequence) -> Result<(), DataError> {
        if index >= self.len {
            return Err(DataError::SequenceOutOfRange {
                index,
                split: self.split.name(),
                len: self.len,
            });
        }
        let shard = self.starts.partition_point(|&s| s <= index) - 1;
        let local = index - self.starts[shard];
        let seq_len = self.seq_len;
        let path = self.dir.join(&self.shards[shard].file);
        let row = self.row_bytes();
        let f = self.shard_file(shard)?;
        let mut buf = vec![0u8; row as usize];
        f.seek(SeekFrom::Start(HEADER_LEN + local * row))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| DataError::io("read", &path, e))?;
        let words = buf
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        out.tokens.clear();
        out.doc_ids.clear();
        out.flags.clear();
        for (i, w) in words.enumerate() {
            match i / seq_len {
                0 => out.tokens.push(w),
                1 => out.doc_ids.push(w),
                _ => out.flags.push(w),
            }
        }
        if self.version == VERSION {
            let target = |&d: &u32| {
                if d == PAD_DOC {
                    0
                } else {
                    super::chat::FLAG_TARGET
                }
            };
            out.flags.extend(out.doc_ids.iter().map(target));
        }
        Ok(())
    }

    /// Sequences `start..` in order (resume continues at an exact position).
    pub fn iter_from(mut self, start: u64) -> impl Iterator<Item = Result<Sequence, DataError>> {
        (start..self.len).map(move |i| {
            let mut s = Sequence::default();
            self.read(i, &mut s).map(|()| s)
        })
    }
}
