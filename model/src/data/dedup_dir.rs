//! Near-duplicate clustering of a directory of input shards (JSONL or Parquet files) in bounded
//! memory: MinHash signatures are computed in parallel across the input files (one rayon task
//! per file), band keys go to the on-disk LSH index (`lsh_disk`) with `dedup.memory_mb` split
//! between the threads, then the bands are merged in parallel and every candidate pair whose
//! estimated Jaccard reaches the threshold joins a union-find.
//!
//! Documents are numbered in input order (file by file, line by line); each cluster is
//! represented by its smallest number, which is the document kept. A pair is only verified when
//! its documents are not yet in one cluster, so the clusters are the connected components of
//! the verified candidate pairs whatever the order the bands are merged in. Memory: the band-key
//! budget while signatures are computed, 4 bytes per document for the union-find, and one
//! 64 KiB read buffer per run and band being merged; signatures live in scratch files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::config::{lsh_params, DedupConfig, SourceConfig, SourceKind};
use super::lsh::LshParams;
use super::lsh_disk::{doc_key, key_parts, BandBuffer, DocKey, LshIndex, SigReader, SigWriter};
use super::minhash::{estimated_jaccard, shingle_hashes, MinHasher};
use super::source::{open_source, SourceEvent};
use super::DataError;

/// Disjoint sets over document numbers; the root of a set is its smallest member.
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    /// `n` singletons.
    pub fn new(n: u32) -> UnionFind {
        UnionFind {
            parent: (0..n).collect(),
        }
    }

    /// The root (smallest member) of `x`'s set.
    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            let gp = self.parent[p as usize];
            self.parent[x as usize] = gp;
            x = gp;
        }
        x
    }

    /// Merge the sets of `a` and `b`; returns whether they were apart.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[hi as usize] = lo;
        true
    }
}

/// What a directory dedup did, for reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirDedupReport {
    /// Input files read.
    pub files: usize,
    /// Documents read (numbered `0..documents`).
    pub documents: u64,
    /// Documents with at least one shingle (the others never pair).
    pub signed: u64,
    /// Unreadable files and invalid records, skipped.
    pub issues: u64,
    /// The band/row split.
    pub lsh: Option<LshParams>,
    /// Run files spilled and their bytes.
    pub runs: usize,
    /// Bytes of band keys spilled.
    pub spilled_bytes: u64,
    /// Pairs met in a shared bucket (over all bands, with repeats).
    pub candidate_pairs: u64,
    /// Pairs whose signatures were compared (the others were already in one cluster).
    pub compared_pairs: u64,
    /// Compared pairs at or above the threshold.
    pub verified_pairs: u64,
    /// Documents in a cluster with a smaller document (dropped).
    pub duplicates: u64,
    /// Clusters of two or more documents.
    pub clusters: u64,
    /// Seconds reading and computing signatures (with the spills).
    pub signature_seconds: f64,
    /// Seconds merging the bands and verifying.
    pub merge_seconds: f64,
}

/// The outcome: every document's cluster root, and where each document came from.
#[derive(Debug, Clone)]
pub struct DirDedup {
    /// The report.
    pub report: DirDedupReport,
    /// The input files, in numbering order.
    pub files: Vec<PathBuf>,
    /// Number of the first document of each file (`files + 1` entries).
    pub file_offsets: Vec<u64>,
    /// The root (smallest member) of each document's cluster; itself when kept.
    pub root: Vec<u32>,
}

impl DirDedup {
    /// `(file index, index in file)` of document `id`.
    pub fn locate(&self, id: u32) -> (usize, u32) {
        let file = self.file_offsets.partition_point(|&o| o <= id as u64) - 1;
        (file, (id as u64 - self.file_offsets[file]) as u32)
    }
}

/// The `*.jsonl` and `*.parquet` files directly in `dir`, sorted by name.
pub fn input_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io("read", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io("read", dir, e))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if path.is_file() && (ext == "jsonl" || ext == "parquet") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Per-file counts from the signature stage.
#[derive(Debug, Default, Clone, Copy)]
struct FileCounts {
    documents: u32,
    signed: u64,
    issues: u64,
}

/// Cluster the documents of `files` (JSONL with `content`, or Parquet with The Stack's
/// columns); scratch files go to `work` (which must exist and is left to the caller to remove).
/// Uses `dedup`'s shingling, permutations, threshold, band choice and `memory_mb`.
pub fn dedup_files(
    files: &[PathBuf],
    work: &Path,
    dedup: &DedupConfig,
    seed: u64,
) -> Result<DirDedup, DataError> {
    let nfiles = u32::try_from(files.len()).map_err(|_| DataError::Config {
        message: "more than 2^32 input files".into(),
    })?;
    let params = lsh_params(dedup);
    let index = LshIndex::new(work, params);
    let hasher = MinHasher::new(dedup.num_perm, seed);
    let threads = rayon::current_num_threads().max(1);
    let per_thread = dedup.memory_mb.saturating_mul(1 << 20) / threads;
    let buffers: Vec<Mutex<BandBuffer>> = (0..threads)
        .map(|_| Mutex::new(index.buffer(per_thread, false)))
        .collect();
    let t0 = Instant::now();
    let counts: Vec<Result<FileCounts, DataError>> = files
        .par_iter()
        .enumerate()
        .map(|(fi, path)| {
            // One file task per thread at a time (nothing nested), so a thread's buffer is free.
            let slot = rayon::current_thread_index().unwrap_or(0) % threads;
            let mut buf = buffers[slot].lock().map_err(|_| {
                DataError::io("lock", path, std::io::Error::other("a thread panicked"))
            })?;
            sign_file(fi as u32, path, work, &hasher, dedup, &index, &mut buf)
        })
        .collect();
    for b in &buffers {
        let mut buf = b
            .lock()
            .map_err(|_| DataError::io("lock", work, std::io::Error::other("a thread panicked")))?;
        index.flush(&mut buf)?;
    }
    drop(buffers);
    let mut report = DirDedupReport {
        files: files.len(),
        lsh: Some(params),
        ..DirDedupReport::default()
    };
    let mut file_offsets = vec![0u64];
    for c in counts {
        let c = c?;
        report.signed += c.signed;
        report.issues += c.issues;
        report.documents += c.documents as u64;
        file_offsets.push(report.documents);
    }
    let n = u32::try_from(report.documents).map_err(|_| DataError::Config {
        message: "more than 2^32 documents; dedup them in several runs".into(),
    })?;
    report.signature_seconds = t0.elapsed().as_secs_f64();
    report.runs = index.runs();
    report.spilled_bytes = index.spilled_bytes();

    let t1 = Instant::now();
    let sigs = SigReader::open(work, nfiles, dedup.num_perm)?;
    let dense = |k: DocKey| {
        let (f, i) = key_parts(k);
        (file_offsets[f as usize] + i as u64) as u32
    };
    let mut uf = cluster(&index, &sigs, dedup.threshold, &dense, n, &mut report)?;
    let root: Vec<u32> = (0..n).map(|i| uf.find(i)).collect();
    report.merge_seconds = t1.elapsed().as_secs_f64();
    report.duplicates = root
        .iter()
        .enumerate()
        .filter(|&(i, &r)| r != i as u32)
        .count() as u64;
    let mut is_root_of_cluster = vec![false; n as usize];
    for (i, &r) in root.iter().enumerate() {
        if r != i as u32 {
            is_root_of_cluster[r as usize] = true;
        }
    }
    report.clusters = is_root_of_cluster.iter().filter(|&&b| b).count() as u64;
    Ok(DirDedup {
        report,
        files: files.to_vec(),
        file_offsets,
        root,
    })
}

/// Read input file `fi`, write its signatures and add their band keys to `index`.
fn sign_file(
    fi: u32,
    path: &Path,
    work: &Path,
    hasher: &MinHasher,
    dedup: &DedupConfig,
    index: &LshIndex,
    buf: &mut BandBuffer,
) -> Result<FileCounts, DataError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let kind = if ext == "parquet" {
        SourceKind::Parquet
    } else {
        SourceKind::Jsonl
    };
    let src = SourceConfig {
        kind,
        path: path.to_path_buf(),
        languages: Vec::new(),
        license: None,
        max_docs: None,
    };
    let mut writer = SigWriter::create(work, fi)?;
    let mut counts = FileCounts::default();
    let mut sig = vec![0u32; dedup.num_perm];
    for ev in open_source(fi as usize, &src, u64::MAX) {
        match ev {
            SourceEvent::Doc(d) => {
                let text = String::from_utf8_lossy(&d.bytes);
                let shingles = shingle_hashes(&text, dedup.shingle_size, dedup.lowercase);
                hasher.signature_into(&shingles, &mut sig);
                let i = writer.push(&sig)?;
                if !shingles.is_empty() {
                    index.insert(buf, doc_key(fi, i), &sig)?;
                    counts.signed += 1;
                }
                counts.documents = i + 1;
            }
            SourceEvent::Issue(_) | SourceEvent::TooLarge { .. } => counts.issues += 1,
            SourceEvent::LanguageSkipped => {}
            SourceEvent::Fatal(e) => return Err(e),
        }
    }
    writer.finish()?;
    Ok(counts)
}

/// Merge every band (in parallel) and union the candidate pairs that verify.
fn cluster(
    index: &LshIndex,
    sigs: &SigReader,
    threshold: f64,
    dense: &(dyn Fn(DocKey) -> u32 + Sync),
    n: u32,
    report: &mut DirDedupReport,
) -> Result<UnionFind, DataError> {
    let uf = Mutex::new(UnionFind::new(n));
    let lock_err = || DataError::Config {
        message: "a thread panicked during clustering".into(),
    };
    let (candidates, compared, verified) =
        (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let p = sigs.num_perm();
    let bands: Vec<Result<(), DataError>> = (0..index.params().bands)
        .into_par_iter()
        .map(|band| {
            index.for_each_bucket(band, |keys| {
                let ids: Vec<u32> = keys.iter().map(|&k| dense(k)).collect();
                let m = ids.len() as u64;
                candidates.fetch_add(m * (m - 1) / 2, Ordering::Relaxed);
                // Members not yet in the first one's cluster decide whether to read signatures.
                let apart = {
                    let mut u = uf.lock().map_err(|_| lock_err())?;
                    let r0 = u.find(ids[0]);
                    ids[1..].iter().any(|&i| u.find(i) != r0)
                };
                if !apart {
                    return Ok(());
                }
                let s = sigs.read_many(keys)?;
                for i in 0..ids.len() {
                    for j in i + 1..ids.len() {
                        let same = {
                            let mut u = uf.lock().map_err(|_| lock_err())?;
                            u.find(ids[i]) == u.find(ids[j])
                        };
                        if same {
                            continue;
                        }
                        compared.fetch_add(1, Ordering::Relaxed);
                        let est = estimated_jaccard(&s[i * p..(i + 1) * p], &s[j * p..(j + 1) * p]);
                        if est >= threshold {
                            verified.fetch_add(1, Ordering::Relaxed);
                            uf.lock().map_err(|_| lock_err())?.union(ids[i], ids[j]);
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for b in bands {
        b?;
    }
    report.candidate_pairs = candidates.into_inner();
    report.compared_pairs = compared.into_inner();
    report.verified_pairs = verified.into_inner();
    uf.into_inner().map_err(|_| lock_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_find_roots_are_smallest_members() {
        let mut u = UnionFind::new(6);
        assert!(u.union(4, 2));
        assert!(u.union(5, 4));
        assert!(!u.union(2, 5));
        assert!(u.union(1, 3));
        let roots: Vec<u32> = (0..6).map(|i| u.find(i)).collect();
        assert_eq!(roots, vec![0, 1, 2, 1, 2, 2]);
    }
}
