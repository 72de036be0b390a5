//! LSH with a memory budget: band keys are buffered in memory, spilled to sorted runs on disk
//! when the budget is reached, and merged band by band into buckets; signatures are written to
//! files and read back by document key to verify candidates.
//!
//! A document key is `(file << 32) | index in file` ([`doc_key`]), so keys sort in reading
//! order. A record is `(bucket hash, key)`, 16 bytes per document and band. A run file holds one
//! section per band, each sorted by `(hash, key)`; merging a band reads every run's section of
//! it through a 64 KiB buffer. Memory is therefore the budget while signatures are added, and
//! `runs × 64 KiB` per band being merged (plus one bucket's signatures) afterwards. The buckets
//! and pairs are the same as [`find_duplicate_pairs`](super::lsh::find_duplicate_pairs) finds
//! in memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Take, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use super::lsh::{band_key, DuplicatePair, LshParams};
use super::minhash::estimated_jaccard;
use super::DataError;

/// A document's key: its input file in the high 32 bits, its index there in the low 32.
pub type DocKey = u64;

/// A candidate pair `(earlier key, later key, estimated Jaccard)`.
pub type KeyPair = (DocKey, DocKey, f64);

/// The key of document `index` of input file `file`.
pub fn doc_key(file: u32, index: u32) -> DocKey {
    ((file as u64) << 32) | index as u64
}

/// `(file, index)` of a key.
pub fn key_parts(key: DocKey) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// Bytes of one spilled record.
pub const RECORD_BYTES: usize = 16;
const READ_BUFFER: usize = 64 << 10;

/// Band keys of the documents added since the last spill (one vector per band).
pub struct BandBuffer {
    bands: Vec<Vec<(u64, DocKey)>>,
    cap: usize,
    parallel_sort: bool,
}

impl BandBuffer {
    /// Records buffered, over all bands.
    pub fn len(&self) -> usize {
        self.bands.iter().map(Vec::len).sum()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One spilled run: its file and the byte offset of each band's section (`bands + 1` entries).
struct Run {
    path: PathBuf,
    offsets: Vec<u64>,
}

/// The on-disk band index: the runs spilled so far, in a scratch directory the caller owns.
pub struct LshIndex {
    dir: PathBuf,
    params: LshParams,
    runs: Mutex<Vec<Run>>,
    next_run: AtomicUsize,
    spilled: AtomicU64,
}

impl LshIndex {
    /// An empty index writing its runs into `dir` (which must exist).
    pub fn new(dir: &Path, params: LshParams) -> LshIndex {
        LshIndex {
            dir: dir.to_path_buf(),
            params,
            runs: Mutex::new(Vec::new()),
            next_run: AtomicUsize::new(0),
            spilled: AtomicU64::new(0),
        }
    }

    /// The band/row split.
    pub fn params(&self) -> LshParams {
        self.params
    }

    /// A buffer of at most `bytes` of records (at least one document's). With `parallel_sort`,
    /// a spill sorts the bands in parallel (for a caller that adds from one thread).
    pub fn buffer(&self, bytes: usize, parallel_sort: bool) -> BandBuffer {
        let bands = self.params.bands.max(1);
        let cap = (bytes / RECORD_BYTES / bands).max(1);
        BandBuffer {
            bands: (0..bands).map(|_| Vec::with_capacity(cap)).collect(),
            cap,
            parallel_sort,
        }
    }

    /// Add the band keys of signature `sig` under `key`, spilling the buffer first if full.
    pub fn insert(&self, buf: &mut BandBuffer, key: DocKey, sig: &[u32]) -> Result<(), DataError> {
        if buf.bands.first().is_some_and(|b| b.len() >= buf.cap) {
            self.spill(buf)?;
        }
        for (band, v) in buf.bands.iter_mut().enumerate() {
            v.push((band_key(sig, self.params, band), key));
        }
        Ok(())
    }

    /// Spill what `buf` holds (nothing if it is empty).
    pub fn flush(&self, buf: &mut BandBuffer) -> Result<(), DataError> {
        if buf.is_empty() {
            return Ok(());
        }
        self.spill(buf)
    }

    /// Sort every band of `buf` and write them as one run file; empties `buf`.
    fn spill(&self, buf: &mut BandBuffer) -> Result<(), DataError> {
        if buf.parallel_sort {
            buf.bands.par_iter_mut().for_each(|v| v.sort_unstable());
        } else {
            buf.bands.iter_mut().for_each(|v| v.sort_unstable());
        }
        let n = self.next_run.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("run-{n:06}.bin"));
        let file = File::create(&path).map_err(|e| DataError::io("create", &path, e))?;
        let mut w = BufWriter::with_capacity(READ_BUFFER, file);
        let mut offsets = Vec::with_capacity(buf.bands.len() + 1);
        let mut at = 0u64;
        for v in &mut buf.bands {
            offsets.push(at);
            for &(h, k) in v.iter() {
                let mut rec = [0u8; RECORD_BYTES];
                rec[..8].copy_from_slice(&h.to_le_bytes());
                rec[8..].copy_from_slice(&k.to_le_bytes());
                w.write_all(&rec)
                    .map_err(|e| DataError::io("write", &path, e))?;
            }
            at += (v.len() * RECORD_BYTES) as u64;
            v.clear();
        }
        offsets.push(at);
        w.flush().map_err(|e| DataError::io("write", &path, e))?;
        self.spilled.fetch_add(at, Ordering::Relaxed);
        self.runs
            .lock()
            .map_err(|_| poisoned(&path))?
            .push(Run { path, offsets });
        Ok(())
    }

    /// Run files written so far.
    pub fn runs(&self) -> usize {
        self.next_run.load(Ordering::Relaxed)
    }

    /// Bytes of records spilled so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled.load(Ordering::Relaxed)
    }

    /// Call `f` with the keys (ascending) of every bucket of `band` that holds two or more
    /// documents, in bucket-hash order. Every buffer must have been flushed.
    pub fn for_each_bucket(
        &self,
        band: usize,
        mut f: impl FnMut(&[DocKey]) -> Result<(), DataError>,
    ) -> Result<(), DataError> {
        let mut cursors = self.open_band(band)?;
        let mut heap = BinaryHeap::with_capacity(cursors.len());
        for (i, c) in cursors.iter_mut().enumerate() {
            if let Some(rec) = c.next_record()? {
                heap.push(Reverse((rec, i)));
            }
        }
        let mut bucket: Vec<DocKey> = Vec::new();
        let mut hash = None;
        while let Some(Reverse(((h, key), i))) = heap.pop() {
            if hash != Some(h) {
                if bucket.len() > 1 {
                    f(&bucket)?;
                }
                bucket.clear();
                hash = Some(h);
            }
            bucket.push(key);
            if let Some(rec) = cursors[i].next_record()? {
                heap.push(Reverse((rec, i)));
            }
        }
        if bucket.len() > 1 {
            f(&bucket)?;
        }
        Ok(())
    }

    /// A cursor on every run's section of `band`.
    fn open_band(&self, band: usize) -> Result<Vec<RunCursor>, DataError> {
        let runs = self.runs.lock().map_err(|_| poisoned(&self.dir))?;
        let mut cursors = Vec::with_capacity(runs.len());
        for run in runs.iter() {
            let (Some(&lo), Some(&hi)) = (run.offsets.get(band), run.offsets.get(band + 1)) else {
                continue;
            };
            if hi == lo {
                continue;
            }
            let mut file =
                File::open(&run.path).map_err(|e| DataError::io("open", &run.path, e))?;
            file.seek(SeekFrom::Start(lo))
                .map_err(|e| DataError::io("seek", &run.path, e))?;
            cursors.push(RunCursor {
                reader: BufReader::with_capacity(READ_BUFFER, file.take(hi - lo)),
                path: run.path.clone(),
            });
        }
        Ok(cursors)
    }
}

fn poisoned(path: &Path) -> DataError {
    DataError::io(
        "lock",
        path,
        std::io::Error::other("a thread panicked while holding the run list"),
    )
}

/// Reads one band section of one run, record by record.
struct RunCursor {
    reader: BufReader<Take<File>>,
    path: PathBuf,
}

impl RunCursor {
    fn next_record(&mut self) -> Result<Option<(u64, DocKey)>, DataError> {
        let mut rec = [0u8; RECORD_BYTES];
        match self.reader.read_exact(&mut rec) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(DataError::io("read", &self.path, e)),
        }
        let mut h = [0u8; 8];
        let mut k = [0u8; 8];
        h.copy_from_slice(&rec[..8]);
        k.copy_from_slice(&rec[8..]);
        Ok(Some((u64::from_le_bytes(h), u64::from_le_bytes(k))))
    }
}

/// Appends the signatures of one input file (`num_perm` little-endian `u32` each) to
/// `sig-FFFFFF.bin` in the scratch directory; document `i` of the file is signature `i`.
pub struct SigWriter {
    w: BufWriter<File>,
    path: PathBuf,
    count: u32,
}

fn sig_path(dir: &Path, file: u32) -> PathBuf {
    dir.join(format!("sig-{file:06}.bin"))
}

impl SigWriter {
    /// Start the signature file of input file `file`.
    pub fn create(dir: &Path, file: u32) -> Result<SigWriter, DataError> {
        let path = sig_path(dir, file);
        let f = File::create(&path).map_err(|e| DataError::io("create", &path, e))?;
        Ok(SigWriter {
            w: BufWriter::with_capacity(READ_BUFFER, f),
            path,
            count: 0,
        })
    }

    /// Append `sig`; returns its index in the file.
    pub fn push(&mut self, sig: &[u32]) -> Result<u32, DataError> {
        let mut bytes = Vec::with_capacity(sig.len() * 4);
        for v in sig {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.w
            .write_all(&bytes)
            .map_err(|e| DataError::io("write", &self.path, e))?;
        let index = self.count;
        self.count = self.count.checked_add(1).ok_or_else(|| DataError::Config {
            message: format!(
                "{}: more than 2^32 documents in one file",
                self.path.display()
            ),
        })?;
        Ok(index)
    }

    /// Flush; returns how many signatures the file holds.
    pub fn finish(mut self) -> Result<u32, DataError> {
        self.w
            .flush()
            .map_err(|e| DataError::io("write", &self.path, e))?;
        Ok(self.count)
    }
}

/// Reads signatures back by document key (positioned reads: shareable between threads).
pub struct SigReader {
    files: Vec<(PathBuf, File)>,
    num_perm: usize,
}

impl SigReader {
    /// Open the signature files of input files `0..files`.
    pub fn open(dir: &Path, files: u32, num_perm: usize) -> Result<SigReader, DataError> {
        let mut out = Vec::with_capacity(files as usize);
        for i in 0..files {
            let path = sig_path(dir, i);
            let f = File::open(&path).map_err(|e| DataError::io("open", &path, e))?;
            out.push((path, f));
        }
        Ok(SigReader {
            files: out,
            num_perm,
        })
    }

    /// Signature length.
    pub fn num_perm(&self) -> usize {
        self.num_perm
    }

    /// The signature of `key` into `out` (`num_perm` entries).
    pub fn read(&self, key: DocKey, out: &mut [u32]) -> Result<(), DataError> {
        let (file, index) = key_parts(key);
        let (path, f) = self
            .files
            .get(file as usize)
            .ok_or_else(|| DataError::Config {
                message: format!("signature of key {key:#x}: no input file {file}"),
            })?;
        let len = self.num_perm * 4;
        let mut bytes = vec![0u8; len];
        read_at(f, &mut bytes, index as u64 * len as u64)
            .map_err(|e| DataError::io("read", path, e))?;
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }

    /// The signatures of `keys`, concatenated.
    pub fn read_many(&self, keys: &[DocKey]) -> Result<Vec<u32>, DataError> {
        let p = self.num_perm;
        let mut out = vec![0u32; keys.len() * p];
        for (k, o) in keys.iter().zip(out.chunks_exact_mut(p)) {
            self.read(*k, o)?;
        }
        Ok(out)
    }
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

#[cfg(windows)]
fn read_at(f: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(f, buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Every candidate pair of the index (all bands, merged in parallel), sorted by keys and without
/// repeats, with its estimated Jaccard; with `verify`, only pairs that reach `threshold`.
pub fn verified_pairs(
    index: &LshIndex,
    sigs: &SigReader,
    threshold: f64,
    verify: bool,
) -> Result<Vec<KeyPair>, DataError> {
    let p = sigs.num_perm;
    let per_band: Vec<Result<Vec<KeyPair>, DataError>> = (0..index.params.bands)
        .into_par_iter()
        .map(|band| {
            let mut out = Vec::new();
            index.for_each_bucket(band, |keys| {
                let s = sigs.read_many(keys)?;
                for i in 0..keys.len() {
                    for j in i + 1..keys.len() {
                        let est = estimated_jaccard(&s[i * p..(i + 1) * p], &s[j * p..(j + 1) * p]);
                        if !verify || est >= threshold {
                            out.push((keys[i], keys[j], est));
                        }
                    }
                }
                Ok(())
            })?;
            Ok(out)
        })
        .collect();
    let mut pairs = Vec::new();
    for band in per_band {
        pairs.extend(band?);
    }
    pairs.par_sort_unstable_by_key(|&(a, b, _)| (a, b));
    pairs.dedup_by_key(|&mut (a, b, _)| (a, b));
    Ok(pairs)
}

/// One stream of signatures (input file 0) into an index with a memory budget: the pipeline's
/// use, where documents arrive in reading order from one thread.
pub struct SigSink {
    index: LshIndex,
    buffer: BandBuffer,
    sigs: SigWriter,
    dir: PathBuf,
    num_perm: usize,
}

impl SigSink {
    /// A sink spilling into `dir` (which must exist) once `memory_bytes` of band keys are
    /// buffered.
    pub fn create(
        dir: &Path,
        params: LshParams,
        num_perm: usize,
        memory_bytes: usize,
    ) -> Result<SigSink, DataError> {
        let index = LshIndex::new(dir, params);
        let buffer = index.buffer(memory_bytes, true);
        Ok(SigSink {
            sigs: SigWriter::create(dir, 0)?,
            index,
            buffer,
            dir: dir.to_path_buf(),
            num_perm,
        })
    }

    /// Add a signature; returns its index (signatures are numbered from 0 in order).
    pub fn push(&mut self, sig: &[u32]) -> Result<u32, DataError> {
        let i = self.sigs.push(sig)?;
        self.index.insert(&mut self.buffer, doc_key(0, i), sig)?;
        Ok(i)
    }

    /// Spill what is left and verify: the duplicate pairs, as signature indices.
    pub fn pairs(mut self, threshold: f64, verify: bool) -> Result<Vec<DuplicatePair>, DataError> {
        self.index.flush(&mut self.buffer)?;
        drop(self.buffer);
        self.sigs.finish()?;
        let reader = SigReader::open(&self.dir, 1, self.num_perm)?;
        let pairs = verified_pairs(&self.index, &reader, threshold, verify)?;
        Ok(pairs
            .into_iter()
            .map(|(a, b, jaccard)| DuplicatePair {
                a: key_parts(a).1,
                b: key_parts(b).1,
                jaccard,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::hash::SplitMix64;
    use crate::data::lsh::find_duplicate_pairs;

    /// Signatures of `n` documents in groups that share most entries (so buckets form).
    fn signatures(n: usize, p: usize, seed: u64) -> Vec<u32> {
        let mut g = SplitMix64::new(seed);
        let mut out = Vec::with_capacity(n * p);
        let mut base: Vec<u32> = Vec::new();
        for i in 0..n {
            if i % 5 == 0 {
                base = (0..p).map(|_| g.next_u64() as u32).collect();
            }
            for &b in &base {
                // Each entry differs from the group's base with probability 1/4.
                out.push(if g.next_u64().is_multiple_of(4) {
                    g.next_u64() as u32
                } else {
                    b
                });
            }
        }
        out
    }

    #[test]
    fn spilled_runs_give_the_in_memory_pairs() {
        let (n, p) = (400, 64);
        let params = LshParams { bands: 16, rows: 4 };
        let sigs = signatures(n, p, 3);
        let expect = find_duplicate_pairs(&sigs, p, params, 0.5, true);
        let all = find_duplicate_pairs(&sigs, p, params, 0.5, false);
        assert!(expect.len() > 100 && all.len() > expect.len());
        // 1 KiB of band keys: 4 documents per run.
        for (budget, verify, want) in [(1 << 10, true, &expect), (1 << 30, false, &all)] {
            let dir = tempfile::tempdir().unwrap();
            let mut sink = SigSink::create(dir.path(), params, p, budget).unwrap();
            for s in sigs.chunks_exact(p) {
                sink.push(s).unwrap();
            }
            // A full buffer spills before the next document is added; the rest at the end.
            let spilled_before = if budget < 1 << 20 { n / 4 - 1 } else { 0 };
            assert_eq!(sink.index.runs(), spilled_before);
            let got = sink.pairs(0.5, verify).unwrap();
            assert_eq!(&got, want, "budget {budget}");
        }
    }

    #[test]
    fn buckets_come_out_sorted_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let params = LshParams { bands: 2, rows: 1 };
        let index = LshIndex::new(dir.path(), params);
        let mut buf = index.buffer(2 * 2 * RECORD_BYTES, false);
        // Band 0 value = doc % 3, band 1 value = doc (all distinct).
        for d in [5u32, 0, 4, 1, 3, 2, 6] {
            index
                .insert(&mut buf, doc_key(1, d), &[d % 3, 100 + d])
                .unwrap();
        }
        index.flush(&mut buf).unwrap();
        assert_eq!(index.runs(), 4);
        let mut buckets = Vec::new();
        index
            .for_each_bucket(0, |k| {
                buckets.push(k.iter().map(|&k| key_parts(k).1).collect::<Vec<_>>());
                Ok(())
            })
            .unwrap();
        buckets.sort();
        assert_eq!(buckets, vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
        index
            .for_each_bucket(1, |_| panic!("band 1 has no shared bucket"))
            .unwrap();
    }
}
