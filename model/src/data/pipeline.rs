//! The data pipeline run by `tritter --train CONFIG --prepare-only`: read every source, filter,
//! drop exact and near duplicates, train or load the tokenizer, pack sequences into shards, and
//! write `data/manifest.json`.
//!
//! Deterministic for a config: documents get ids in reading order, parallel stages (filter +
//! MinHash per batch, LSH bands, encoding) return results in input order, and the train/val
//! split is a seeded hash of each document's content. Memory holds per-document metadata and
//! MinHash signatures (`4 × num_perm` bytes each) but never the corpus: accepted texts are
//! spooled to a temporary file that the later stages stream.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use super::config::{DataConfig, DedupConfig};
use super::filter::{FilterRule, QualityFilter};
use super::hash::{content_hash, hash_bytes, unit_interval};
use super::lsh::{choose_bands, find_duplicate_pairs, greedy_keep, LshParams};
use super::manifest::{
    DedupSummary, DuplicateEntry, Manifest, SourceStats, TokenCounts, TokenizerSummary,
    MAX_LISTED_ISSUES,
};
use super::minhash::{shingle_hashes, MinHasher};
use super::shard::{self, Packer, ShardIndex, Split, PAD_DOC};
use super::source::{open_source, Document, Issue, SourceEvent};
use super::tokenizer;
use super::{DataError, Progress, Stage};
use crate::vocab::Special;

/// A document that passed the quality filters, with its dedup fingerprints.
#[derive(Debug, Clone)]
pub struct Screened {
    /// The accepted text.
    pub text: String,
    /// 128-bit content hash (exact dedup).
    pub hash: u128,
    /// MinHash signature; `None` when near dedup is off or the text has no words.
    pub signature: Option<Vec<u32>>,
}

/// Filter one document and compute its fingerprints (the per-document parallel work).
pub fn screen(
    bytes: Vec<u8>,
    filter: &QualityFilter,
    hasher: Option<&MinHasher>,
    dedup: &DedupConfig,
) -> Result<Screened, FilterRule> {
    let text = filter.check(bytes)?;
    let hash = content_hash(text.as_bytes());
    let signature = hasher.and_then(|h| {
        let shingles = shingle_hashes(&text, dedup.shingle_size, dedup.lowercase);
        (!shingles.is_empty()).then(|| h.signature(&shingles))
    });
    Ok(Screened {
        text,
        hash,
        signature,
    })
}

/// The LSH split the config asks for (explicit, or chosen for the threshold).
pub fn lsh_params(dedup: &DedupConfig) -> LshParams {
    match (dedup.bands, dedup.rows) {
        (Some(bands), Some(rows)) => LshParams { bands, rows },
        _ => choose_bands(dedup.threshold, dedup.num_perm),
    }
}

struct DocMeta {
    source: usize,
    path: String,
    hash: u128,
    bytes: u64,
}

/// Spool of accepted texts: records `u32 id, u64 len, bytes` (little-endian).
struct SpoolReader {
    path: PathBuf,
    r: BufReader<File>,
}

impl SpoolReader {
    fn open(path: &Path) -> Result<SpoolReader, DataError> {
        let f = File::open(path).map_err(|e| DataError::io("open", path, e))?;
        Ok(SpoolReader {
            path: path.to_path_buf(),
            r: BufReader::with_capacity(1 << 20, f),
        })
    }

    fn next_record(&mut self) -> Result<Option<(u32, String)>, DataError> {
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

/// Run the whole pipeline for `cfg`, writing into `run_dir/data/`. Returns the manifest (also
/// written to `data/manifest.json`).
pub fn prepare(
    cfg: &DataConfig,
    run_dir: &Path,
    progress: &dyn Progress,
) -> Result<Manifest, DataError> {
    cfg.validate()?;
    let data_dir = run_dir.join("data");
    std::fs::create_dir_all(&data_dir).map_err(|e| DataError::io("create", &data_dir, e))?;
    let spool_path = data_dir.join("spool.bin.tmp");
    let result = run(cfg, &data_dir, &spool_path, progress);
    // The spool is scratch space either way.
    let _ = std::fs::remove_file(&spool_path);
    result
}

fn run(
    cfg: &DataConfig,
    data_dir: &Path,
    spool_path: &Path,
    progress: &dyn Progress,
) -> Result<Manifest, DataError> {
    let filter = QualityFilter::new(&cfg.filter);
    let dedup = &cfg.dedup;
    let hasher = dedup.near.then(|| MinHasher::new(dedup.num_perm, cfg.seed));
    let mut stats: Vec<SourceStats> = cfg.sources.iter().map(SourceStats::for_source).collect();
    let mut issues: Vec<Issue> = Vec::new();
    let mut issues_total = 0u64;
    let mut metas: Vec<DocMeta> = Vec::new();
    let mut exact_seen: HashMap<u128, u32> = HashMap::new();
    let mut exact_duplicates = Vec::new();
    let mut sigs: Vec<u32> = Vec::new();
    let mut sig_doc: Vec<u32> = Vec::new();
    let spool_file =
        File::create(spool_path).map_err(|e| DataError::io("create", spool_path, e))?;
    let mut spool = BufWriter::with_capacity(1 << 20, spool_file);

    // Stage 1: read, filter, exact dedup, MinHash.
    progress.start(Stage::Read, None);
    for (si, scfg) in cfg.sources.iter().enumerate() {
        let mut events = open_source(si, scfg, cfg.filter.max_bytes);
        loop {
            let mut batch: Vec<Document> = Vec::with_capacity(cfg.batch_docs);
            for ev in events.by_ref() {
                match ev {
                    SourceEvent::Doc(d) => {
                        batch.push(d);
                        if batch.len() == cfg.batch_docs {
                            break;
                        }
                    }
                    SourceEvent::TooLarge { .. } => {
                        stats[si].documents += 1;
                        *stats[si].rejected.entry(FilterRule::TooLarge).or_default() += 1;
                    }
                    SourceEvent::LanguageSkipped => stats[si].language_skipped += 1,
                    SourceEvent::Issue(issue) => {
                        progress.issue(&issue);
                        *stats[si].issues.entry(issue.kind).or_default() += 1;
                        stats[si].lost_documents += issue.lost;
                        issues_total += 1;
                        if issues.len() < MAX_LISTED_ISSUES {
                            issues.push(issue);
                        }
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            let screened: Vec<(Document, Result<Screened, FilterRule>)> = batch
                .into_par_iter()
                .map(|mut d| {
                    let bytes = std::mem::take(&mut d.bytes);
                    let s = screen(bytes, &filter, hasher.as_ref(), dedup);
                    (d, s)
                })
                .collect();
            for (doc, outcome) in screened {
                let st = &mut stats[doc.source];
                st.documents += 1;
                let s = match outcome {
                    Ok(s) => s,
                    Err(rule) => {
                        *st.rejected.entry(rule).or_default() += 1;
                        continue;
                    }
                };
                if dedup.exact {
                    if let Some(&kept) = exact_seen.get(&s.hash) {
                        st.exact_duplicates += 1;
                        exact_duplicates.push(DuplicateEntry {
                            dropped: doc.path,
                            kept: metas[kept as usize].path.clone(),
                            jaccard: None,
                        });
                        continue;
                    }
                }
                let id = u32::try_from(metas.len()).map_err(|_| DataError::Config {
                    message: "more than 2^32 documents; split the corpus into several runs".into(),
                })?;
                exact_seen.insert(s.hash, id);
                if let Some(sig) = &s.signature {
                    sigs.extend_from_slice(sig);
                    sig_doc.push(id);
                }
                spool
                    .write_all(&id.to_le_bytes())
                    .and_then(|_| spool.write_all(&(s.text.len() as u64).to_le_bytes()))
                    .and_then(|_| spool.write_all(s.text.as_bytes()))
                    .map_err(|e| DataError::io("write", spool_path, e))?;
                metas.push(DocMeta {
                    source: doc.source,
                    path: doc.path,
                    hash: s.hash,
                    bytes: s.text.len() as u64,
                });
            }
            progress.advance(n);
        }
    }
    spool
        .flush()
        .map_err(|e| DataError::io("write", spool_path, e))?;
    drop(spool);
    drop(exact_seen);
    progress.finish(Stage::Read);

    // Stage 2: near dedup.
    let lsh = lsh_params(dedup);
    progress.start(Stage::NearDedup, Some(sig_doc.len() as u64));
    let pairs = if dedup.near {
        find_duplicate_pairs(&sigs, dedup.num_perm, lsh, dedup.threshold, dedup.verify)
    } else {
        Vec::new()
    };
    let mut near_dropped: Vec<bool> = vec![false; metas.len()];
    let mut near_duplicates = Vec::new();
    for (i, kept) in greedy_keep(sig_doc.len(), &pairs).into_iter().enumerate() {
        if let Some((k, j)) = kept {
            let dropped = sig_doc[i] as usize;
            let kept = sig_doc[k as usize] as usize;
            near_dropped[dropped] = true;
            stats[metas[dropped].source].near_duplicates += 1;
            near_duplicates.push(DuplicateEntry {
                dropped: metas[dropped].path.clone(),
                kept: metas[kept].path.clone(),
                jaccard: Some(j),
            });
        }
    }
    drop(sigs);
    progress.advance(sig_doc.len() as u64);
    progress.finish(Stage::NearDedup);

    // Train/val split by seeded content hash.
    let split_key = |m: &DocMeta| hash_bytes(cfg.seed ^ 0x5350_4C49_54, &m.hash.to_le_bytes());
    let mut is_val: Vec<bool> = metas
        .iter()
        .map(|m| unit_interval(split_key(m)) < cfg.val_fraction)
        .collect();
    let kept_ids: Vec<usize> = (0..metas.len()).filter(|&i| !near_dropped[i]).collect();
    if kept_ids.is_empty() {
        let read = stats.iter().map(|s| s.documents).sum();
        return Err(DataError::EmptyCorpus { read });
    }
    let any_val = kept_ids.iter().any(|&i| is_val[i]);
    if cfg.val_fraction > 0.0 && !any_val && kept_ids.len() >= 2 {
        // A tiny corpus still gets one validation document: the one with the smallest key.
        if let Some(&i) = kept_ids.iter().min_by_key(|&&i| split_key(&metas[i])) {
            is_val[i] = true;
        }
    }
    for &i in &kept_ids {
        let st = &mut stats[metas[i].source];
        st.kept += 1;
        st.kept_bytes += metas[i].bytes;
    }

    // Stage 3: tokenizer.
    progress.start(Stage::Tokenizer, None);
    let (mut tok, trained) = match &cfg.tokenizer.path {
        Some(p) => (tokenizer::load(p)?, false),
        None => {
            let failure: Mutex<Option<DataError>> = Mutex::new(None);
            let mut reader = SpoolReader::open(spool_path)?;
            let mut budget = cfg.tokenizer.max_train_bytes.unwrap_or(u64::MAX);
            let docs = std::iter::from_fn(|| loop {
                match reader.next_record() {
                    Ok(Some((id, text))) => {
                        let id = id as usize;
                        if near_dropped[id] || is_val[id] {
                            continue;
                        }
                        if budget == 0 {
                            return None;
                        }
                        budget = budget.saturating_sub(text.len() as u64);
                        return Some(text);
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            *f = Some(e);
                        }
                        return None;
                    }
                }
            });
            let tok = tokenizer::train_bpe(docs, &cfg.tokenizer)?;
            if let Some(e) = failure.into_inner().ok().flatten() {
                return Err(e);
            }
            (tok, true)
        }
    };
    let layout = tokenizer::attach_layout(
        &mut tok,
        cfg.tokenizer.image_codes,
        cfg.tokenizer.audio_codes,
    )?;
    let tok_path = data_dir.join("tokenizer.json");
    let tok_tmp = data_dir.join("tokenizer.json.tmp");
    tok.save(&tok_tmp, false)
        .map_err(|e| DataError::Tokenizer {
            message: format!("saving {}: {e}", tok_tmp.display()),
        })?;
    std::fs::rename(&tok_tmp, &tok_path).map_err(|e| DataError::io("rename", &tok_path, e))?;
    progress.finish(Stage::Tokenizer);

    // Stage 4: tokenise and pack.
    progress.start(Stage::Pack, Some(kept_ids.len() as u64));
    let encoder = tokenizer::data_encoder(&tok);
    let eos = layout.special_id(Special::Eos);
    let pad = layout.special_id(Special::Pad);
    let mut train = Packer::new(
        data_dir,
        Split::Train,
        cfg.seq_len,
        cfg.shard_sequences,
        pad,
    )?;
    let mut val = Packer::new(data_dir, Split::Val, cfg.seq_len, cfg.shard_sequences, pad)?;
    let mut counts = TokenCounts::default();
    let mut reader = SpoolReader::open(spool_path)?;
    loop {
        let mut batch = Vec::with_capacity(cfg.batch_docs);
        while batch.len() < cfg.batch_docs {
            match reader.next_record()? {
                Some((id, text)) if !near_dropped[id as usize] => batch.push((id, text)),
                Some(_) => {}
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        let encoded: Vec<Result<(u32, Vec<u32>), DataError>> = batch
            .par_iter()
            .map(|(id, text)| {
                let mut ids = tokenizer::encode(&encoder, text)?;
                ids.push(eos);
                Ok((*id, ids))
            })
            .collect();
        let n = encoded.len() as u64;
        for item in encoded {
            let (id, ids) = item?;
            if is_val[id as usize] {
                counts.val_documents += 1;
                val.push(id, &ids)?;
            } else {
                counts.train_documents += 1;
                train.push(id, &ids)?;
            }
        }
        progress.advance(n);
    }
    let train = train.finish()?;
    let val = val.finish()?;
    counts.train_tokens = train.tokens;
    counts.val_tokens = val.tokens;
    counts.train_sequences = train.sequences;
    counts.val_sequences = val.sequences;
    shard::write_index(
        data_dir,
        &ShardIndex {
            version: shard::VERSION,
            seq_len: cfg.seq_len as u32,
            pad_id: pad,
            pad_doc: PAD_DOC,
            train,
            val,
        },
    )?;
    progress.finish(Stage::Pack);

    let mut filter_rejections = std::collections::BTreeMap::new();
    for st in &stats {
        for (rule, n) in &st.rejected {
            *filter_rejections.entry(*rule).or_default() += n;
        }
    }
    let manifest = Manifest {
        sources: stats,
        filter_rejections,
        exact_duplicates,
        near_duplicates,
        dedup: DedupSummary {
            num_perm: dedup.num_perm,
            shingle_size: dedup.shingle_size,
            threshold: dedup.threshold,
            lsh,
            seed: cfg.seed,
            duplicate_pairs: pairs.len() as u64,
        },
        tokens: counts,
        tokenizer: TokenizerSummary {
            file: "tokenizer.json".into(),
            trained,
            text_vocab_size: layout.text_len(),
            vocab_size: layout.total(),
            special_tokens: Special::ALL
                .iter()
                .map(|s| (s.token().to_string(), layout.special_id(*s)))
                .collect(),
            image_codes: [layout.image_range().start, layout.image_range().end],
            audio_codes: [layout.audio_range().start, layout.audio_range().end],
        },
        seq_len: cfg.seq_len,
        issues,
        issues_total,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| DataError::Shard {
        path: data_dir.join("manifest.json"),
        message: e.to_string(),
    })?;
    shard::write_atomic(&data_dir.join("manifest.json"), &json)?;
    Ok(manifest)
}
