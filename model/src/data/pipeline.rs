//! The data pipeline run by `tritter --train CONFIG --prepare-only`: read every source, filter,
//! drop exact and near duplicates, train or load the tokenizer, pack sequences into shards, and
//! write `data/manifest.json`.
//!
//! Deterministic for a config: documents get ids in reading order, parallel stages (filter +
//! MinHash per batch, LSH bands, encoding) return results in input order, and the train/val
//! split is a seeded hash of each document's content. Memory holds per-document metadata but
//! never the corpus: accepted texts are spooled to a temporary file (`spool`) that the later
//! stages stream, and MinHash signatures and LSH band keys go to an on-disk index
//! (`lsh_disk`) that keeps at most `dedup.memory_mb` of band keys in memory.
//!
//! `run` lists the stages in order; each is one method of `Run` that reports its progress and
//! returns what the later stages read.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use rayon::prelude::*;
use tokenizers::Tokenizer;

pub use super::config::lsh_params;
use super::config::{DataConfig, DedupConfig, FilterConfig, SourceKind};
use super::filter::{FilterRule, QualityFilter};
use super::hash::{content_hash, hash_bytes, unit_interval};
use super::lsh::{greedy_keep, LshParams};
use super::lsh_disk::SigSink;
use super::manifest::{
    DedupSummary, DuplicateEntry, Manifest, SourceStats, TokenCounts, TokenizerSummary,
    MAX_LISTED_ISSUES,
};
use super::minhash::{shingle_hashes, MinHasher};
use super::pack::Selection;
use super::shard;
use super::source::{open_source, Document, Issue, SourceEvent};
use super::spool::{SpoolReader, SpoolWriter};
use super::tokenizer;
use super::{DataError, Progress, Stage};
use crate::vocab::{Special, VocabLayout};

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

/// What every later stage knows of an accepted document (its text is in the spool).
struct DocMeta {
    source: usize,
    path: String,
    hash: u128,
    bytes: u64,
}

/// What the read stage leaves for the later ones.
struct ReadOutput {
    /// Counts per source; near dedup and the split add theirs.
    stats: Vec<SourceStats>,
    /// The first [`MAX_LISTED_ISSUES`] issues, and how many there were in all.
    issues: Vec<Issue>,
    issues_total: u64,
    /// The accepted documents, indexed by id.
    metas: Vec<DocMeta>,
    exact_duplicates: Vec<DuplicateEntry>,
    /// The on-disk LSH index of the signatures (near dedup on); signature `i` is of document
    /// `sig_doc[i]`.
    sink: Option<SigSink>,
    sig_doc: Vec<u32>,
}

/// The near-dedup stage's part of the manifest.
struct NearDedup {
    lsh: LshParams,
    duplicate_pairs: u64,
    duplicates: Vec<DuplicateEntry>,
}

/// One pipeline run: what every stage reads (config, output directory, spool, progress sink).
struct Run<'a> {
    cfg: &'a DataConfig,
    data_dir: &'a Path,
    spool_path: &'a Path,
    /// Scratch directory of the LSH index.
    lsh_dir: &'a Path,
    progress: &'a dyn Progress,
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
    let lsh_dir = data_dir.join("lsh.tmp");
    let _ = std::fs::remove_dir_all(&lsh_dir);
    std::fs::create_dir_all(&lsh_dir).map_err(|e| DataError::io("create", &lsh_dir, e))?;
    let result = run(cfg, &data_dir, &spool_path, &lsh_dir, progress);
    // The spool and the LSH index are scratch space either way.
    let _ = std::fs::remove_file(&spool_path);
    let _ = std::fs::remove_dir_all(&lsh_dir);
    result
}

/// The stages in order; each reports its progress and leaves what the next ones read.
fn run(
    cfg: &DataConfig,
    data_dir: &Path,
    spool_path: &Path,
    lsh_dir: &Path,
    progress: &dyn Progress,
) -> Result<Manifest, DataError> {
    let run = Run {
        cfg,
        data_dir,
        spool_path,
        lsh_dir,
        progress,
    };
    // Stage 1: read, filter, exact dedup, MinHash.
    let mut read = run.read_sources()?;
    // Stage 2: near dedup.
    let (near_dropped, near) = run.near_dedup(&mut read)?;
    // Train/val split by seeded content hash.
    let sel = run.split(&mut read, near_dropped)?;
    // Stage 3: tokenizer.
    let (tok, layout, trained) = run.tokenizer(&sel)?;
    // Stage 4: tokenise and pack.
    let counts = run.pack(&tok, &layout, &sel)?;
    run.write_manifest(read, near, counts, &layout, trained)
}

impl Run<'_> {
    /// Stage 1: read every source in batches, filter and fingerprint each batch in parallel,
    /// drop exact duplicates and spool the accepted texts.
    fn read_sources(&self) -> Result<ReadOutput, DataError> {
        let cfg = self.cfg;
        let code_filter = QualityFilter::new(&cfg.filter);
        // Chat data is prose and code in a conversation: only the size and binary rules apply.
        let chat_filter = QualityFilter::new(&FilterConfig {
            max_line_length: usize::MAX,
            max_mean_line_length: f64::INFINITY,
            min_alnum_fraction: 0.0,
            autogen_markers: Vec::new(),
            ..cfg.filter.clone()
        });
        let dedup = &cfg.dedup;
        let hasher = dedup.near.then(|| MinHasher::new(dedup.num_perm, cfg.seed));
        let mut out = ReadOutput {
            stats: cfg.sources.iter().map(SourceStats::for_source).collect(),
            issues: Vec::new(),
            issues_total: 0,
            metas: Vec::new(),
            exact_duplicates: Vec::new(),
            sink: match dedup.near {
                true => Some(SigSink::create(
                    self.lsh_dir,
                    lsh_params(dedup),
                    dedup.num_perm,
                    dedup.memory_mb.saturating_mul(1 << 20),
                )?),
                false => None,
            },
            sig_doc: Vec::new(),
        };
        let mut exact_seen: HashMap<u128, u32> = HashMap::new();
        let mut spool = SpoolWriter::create(self.spool_path)?;
        self.progress.start(Stage::Read, None);
        for (si, scfg) in cfg.sources.iter().enumerate() {
            let mut events = open_source(si, scfg, cfg.filter.max_bytes);
            let filter = match scfg.kind {
                SourceKind::Chat => &chat_filter,
                _ => &code_filter,
            };
            loop {
                let batch = self.next_batch(&mut *events, si, &mut out)?;
                if batch.is_empty() {
                    break;
                }
                let n = batch.len() as u64;
                let screened: Vec<(Document, Result<Screened, FilterRule>)> = batch
                    .into_par_iter()
                    .map(|mut d| {
                        let bytes = std::mem::take(&mut d.bytes);
                        let s = screen(bytes, filter, hasher.as_ref(), dedup);
                        (d, s)
                    })
                    .collect();
                for (doc, outcome) in screened {
                    out.accept(doc, outcome, dedup, &mut exact_seen, &mut spool)?;
                }
                self.progress.advance(n);
            }
        }
        spool.finish()?;
        drop(exact_seen);
        self.progress.finish(Stage::Read);
        Ok(out)
    }

    /// The next batch of up to `batch_docs` documents of source `si`, counting the other events
    /// (size rejections, skipped languages, issues) on the way; empty at the source's end; a
    /// fatal event (a chat source's bad line) is the error.
    fn next_batch(
        &self,
        events: &mut dyn Iterator<Item = SourceEvent>,
        si: usize,
        out: &mut ReadOutput,
    ) -> Result<Vec<Document>, DataError> {
        let mut batch: Vec<Document> = Vec::with_capacity(self.cfg.batch_docs);
        for ev in events {
            match ev {
                SourceEvent::Doc(d) => {
                    batch.push(d);
                    if batch.len() == self.cfg.batch_docs {
                        break;
                    }
                }
                SourceEvent::TooLarge { .. } => {
                    out.stats[si].documents += 1;
                    *out.stats[si]
                        .rejected
                        .entry(FilterRule::TooLarge)
                        .or_default() += 1;
                }
                SourceEvent::LanguageSkipped => out.stats[si].language_skipped += 1,
                SourceEvent::Fatal(e) => return Err(e),
                SourceEvent::Issue(issue) => {
                    self.progress.issue(&issue);
                    *out.stats[si].issues.entry(issue.kind).or_default() += 1;
                    out.stats[si].lost_documents += issue.lost;
                    out.issues_total += 1;
                    if out.issues.len() < MAX_LISTED_ISSUES {
                        out.issues.push(issue);
                    }
                }
            }
        }
        Ok(batch)
    }

    /// Stage 2: LSH over the signatures, verified pairs, greedy keeping in reading order. Returns
    /// which document ids are dropped, and the stage's part of the manifest.
    fn near_dedup(&self, read: &mut ReadOutput) -> Result<(Vec<bool>, NearDedup), DataError> {
        let dedup = &self.cfg.dedup;
        let sig_doc = &read.sig_doc;
        let lsh = lsh_params(dedup);
        self.progress
            .start(Stage::NearDedup, Some(sig_doc.len() as u64));
        let pairs = match read.sink.take() {
            Some(sink) => sink.pairs(dedup.threshold, dedup.verify)?,
            None => Vec::new(),
        };
        let mut near_dropped: Vec<bool> = vec![false; read.metas.len()];
        let mut near_duplicates = Vec::new();
        for (i, kept) in greedy_keep(sig_doc.len(), &pairs).into_iter().enumerate() {
            if let Some((k, j)) = kept {
                let dropped = sig_doc[i] as usize;
                let kept = sig_doc[k as usize] as usize;
                near_dropped[dropped] = true;
                read.stats[read.metas[dropped].source].near_duplicates += 1;
                near_duplicates.push(DuplicateEntry {
                    dropped: read.metas[dropped].path.clone(),
                    kept: read.metas[kept].path.clone(),
                    jaccard: Some(j),
                });
            }
        }
        self.progress.advance(sig_doc.len() as u64);
        self.progress.finish(Stage::NearDedup);
        let near = NearDedup {
            lsh,
            duplicate_pairs: pairs.len() as u64,
            duplicates: near_duplicates,
        };
        Ok((near_dropped, near))
    }

    /// The train/val split by seeded content hash of the documents near dedup kept (a tiny
    /// corpus still gets one validation document), and the kept counts per source.
    fn split(
        &self,
        read: &mut ReadOutput,
        near_dropped: Vec<bool>,
    ) -> Result<Selection, DataError> {
        let cfg = self.cfg;
        let metas = &read.metas;
        let split_key =
            |m: &DocMeta| hash_bytes(cfg.seed ^ 0x0053_504C_4954, &m.hash.to_le_bytes());
        let mut is_val: Vec<bool> = metas
            .iter()
            .map(|m| unit_interval(split_key(m)) < cfg.val_fraction)
            .collect();
        let kept_ids: Vec<usize> = (0..metas.len()).filter(|&i| !near_dropped[i]).collect();
        if kept_ids.is_empty() {
            let read = read.stats.iter().map(|s| s.documents).sum();
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
            let st = &mut read.stats[metas[i].source];
            st.kept += 1;
            st.kept_bytes += metas[i].bytes;
        }
        Ok(Selection {
            dropped: near_dropped,
            is_val,
            chat: metas
                .iter()
                .map(|m| cfg.sources[m.source].kind == SourceKind::Chat)
                .collect(),
            kept: kept_ids.len() as u64,
        })
    }

    /// Stage 3: load `tokenizer.path` or train a BPE on the train split, attach the vocabulary
    /// layout, and save `tokenizer.json`. Returns whether the tokenizer was trained.
    fn tokenizer(&self, sel: &Selection) -> Result<(Tokenizer, VocabLayout, bool), DataError> {
        let cfg = self.cfg;
        self.progress.start(Stage::Tokenizer, None);
        let (mut tok, trained) = match &cfg.tokenizer.path {
            Some(p) => (tokenizer::load(p)?, false),
            None => (self.train_tokenizer(sel)?, true),
        };
        let layout = tokenizer::attach_layout(
            &mut tok,
            cfg.tokenizer.image_codes,
            cfg.tokenizer.audio_codes,
        )?;
        let tok_path = self.data_dir.join("tokenizer.json");
        let tok_tmp = self.data_dir.join("tokenizer.json.tmp");
        tok.save(&tok_tmp, false)
            .map_err(|e| DataError::Tokenizer {
                message: format!("saving {}: {e}", tok_tmp.display()),
            })?;
        std::fs::rename(&tok_tmp, &tok_path).map_err(|e| DataError::io("rename", &tok_path, e))?;
        self.progress.finish(Stage::Tokenizer);
        Ok((tok, layout, trained))
    }

    /// Train the BPE on the spooled texts of the train split, up to `tokenizer.max_train_bytes`.
    fn train_tokenizer(&self, sel: &Selection) -> Result<Tokenizer, DataError> {
        let failure: Mutex<Option<DataError>> = Mutex::new(None);
        let mut reader = SpoolReader::open(self.spool_path)?;
        let mut budget = self.cfg.tokenizer.max_train_bytes.unwrap_or(u64::MAX);
        let docs = std::iter::from_fn(|| loop {
            match reader.next_record() {
                Ok(Some((id, text))) => {
                    let id = id as usize;
                    if sel.dropped[id] || sel.is_val[id] {
                        continue;
                    }
                    if budget == 0 {
                        return None;
                    }
                    budget = budget.saturating_sub(text.len() as u64);
                    // Chat markers are control tokens: the BPE learns the text between them.
                    return Some(match sel.chat[id] {
                        true => super::chat::without_markers(&text),
                        false => text,
                    });
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
        let tok = tokenizer::train_bpe(docs, &self.cfg.tokenizer)?;
        if let Some(e) = failure.into_inner().ok().flatten() {
            return Err(e);
        }
        Ok(tok)
    }

    /// Stage 4: encode the kept documents (`pack`) into the train and val shards.
    fn pack(
        &self,
        tok: &Tokenizer,
        layout: &VocabLayout,
        sel: &Selection,
    ) -> Result<TokenCounts, DataError> {
        self.progress.start(Stage::Pack, Some(sel.kept));
        let mut reader = SpoolReader::open(self.spool_path)?;
        let counts = super::pack::pack(
            self.cfg,
            self.data_dir,
            tok,
            layout,
            sel,
            &mut || next_kept(&mut reader, &sel.dropped, self.cfg.batch_docs),
            self.progress,
        )?;
        self.progress.finish(Stage::Pack);
        Ok(counts)
    }

    /// Assemble the manifest from every stage's results and write `manifest.json`.
    fn write_manifest(
        &self,
        read: ReadOutput,
        near: NearDedup,
        tokens: TokenCounts,
        layout: &VocabLayout,
        trained: bool,
    ) -> Result<Manifest, DataError> {
        let (cfg, dedup) = (self.cfg, &self.cfg.dedup);
        let mut filter_rejections = BTreeMap::new();
        for st in &read.stats {
            for (rule, n) in &st.rejected {
                *filter_rejections.entry(*rule).or_default() += n;
            }
        }
        let manifest = Manifest {
            sources: read.stats,
            filter_rejections,
            exact_duplicates: read.exact_duplicates,
            near_duplicates: near.duplicates,
            dedup: DedupSummary {
                num_perm: dedup.num_perm,
                shingle_size: dedup.shingle_size,
                threshold: dedup.threshold,
                lsh: near.lsh,
                seed: cfg.seed,
                duplicate_pairs: near.duplicate_pairs,
            },
            tokens,
            tokenizer: tokenizer_summary(layout, trained),
            seq_len: cfg.seq_len,
            issues: read.issues,
            issues_total: read.issues_total,
        };
        let path = self.data_dir.join("manifest.json");
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| DataError::Shard {
            path: path.clone(),
            message: e.to_string(),
        })?;
        shard::write_atomic(&path, &json)?;
        Ok(manifest)
    }
}

impl ReadOutput {
    /// Count one screened document and keep it (an id, its fingerprints, its text in the spool)
    /// unless a filter rejected it or it repeats an earlier document byte for byte.
    fn accept(
        &mut self,
        doc: Document,
        outcome: Result<Screened, FilterRule>,
        dedup: &DedupConfig,
        exact_seen: &mut HashMap<u128, u32>,
        spool: &mut SpoolWriter,
    ) -> Result<(), DataError> {
        let st = &mut self.stats[doc.source];
        st.documents += 1;
        let s = match outcome {
            Ok(s) => s,
            Err(rule) => {
                *st.rejected.entry(rule).or_default() += 1;
                return Ok(());
            }
        };
        if dedup.exact {
            if let Some(&kept) = exact_seen.get(&s.hash) {
                st.exact_duplicates += 1;
                self.exact_duplicates.push(DuplicateEntry {
                    dropped: doc.path,
                    kept: self.metas[kept as usize].path.clone(),
                    jaccard: None,
                });
                return Ok(());
            }
        }
        let id = u32::try_from(self.metas.len()).map_err(|_| DataError::Config {
            message: "more than 2^32 documents; split the corpus into several runs".into(),
        })?;
        exact_seen.insert(s.hash, id);
        if let (Some(sig), Some(sink)) = (&s.signature, self.sink.as_mut()) {
            sink.push(sig)?;
            self.sig_doc.push(id);
        }
        spool.push(id, &s.text)?;
        self.metas.push(DocMeta {
            source: doc.source,
            path: doc.path,
            hash: s.hash,
            bytes: s.text.len() as u64,
        });
        Ok(())
    }
}

/// The next up to `n` spooled documents that near dedup kept; empty at the end of the spool.
fn next_kept(
    reader: &mut SpoolReader,
    dropped: &[bool],
    n: usize,
) -> Result<Vec<(u32, String)>, DataError> {
    let mut batch = Vec::with_capacity(n);
    while batch.len() < n {
        match reader.next_record()? {
            Some((id, text)) if !dropped[id as usize] => batch.push((id, text)),
            Some(_) => {}
            None => break,
        }
    }
    Ok(batch)
}

/// The manifest's tokenizer section: vocabulary sizes, special-token ids, code ranges.
fn tokenizer_summary(layout: &VocabLayout, trained: bool) -> TokenizerSummary {
    TokenizerSummary {
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
    }
}
