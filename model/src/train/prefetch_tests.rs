//! The loader thread against building each batch in place: same batches in the same order from
//! any start position (a resume), across epochs, and its errors arrive as errors.

use super::*;
use crate::data::shard::{write_index, Packer, ShardIndex, Split, PAD_DOC, VERSION};
use crate::data::ShardSet;

/// A data directory of `docs` documents of 5 tokens each, packed into sequences of `seq_len`.
fn data(dir: &std::path::Path, docs: u32, seq_len: usize) -> SplitReader {
    let mut p = Packer::new(dir, Split::Train, seq_len, 3, 0).unwrap();
    for d in 0..docs {
        let toks: Vec<u32> = (0..5).map(|i| 1 + d * 5 + i).collect();
        p.push(d, &toks).unwrap();
    }
    let train = p.finish().unwrap();
    let val = Packer::new(dir, Split::Val, seq_len, 3, 0)
        .unwrap()
        .finish()
        .unwrap();
    let index = ShardIndex {
        version: VERSION,
        seq_len: seq_len as u32,
        pad_id: 0,
        pad_doc: PAD_DOC,
        train,
        val,
    };
    write_index(dir, &index).unwrap();
    ShardSet::open(dir).unwrap().split(Split::Train)
}

#[test]
fn prefetched_batches_equal_batches_built_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let reader = data(dir.path(), 23, 8);
    let len = reader.len();
    assert!(len >= 10, "{len} sequences");
    let (b, t, seed) = (3usize, 8usize, 42u64);
    // The reference: one stream read in place, batch after batch over several epochs.
    let mut direct = Stream::new(data(dir.path(), 23, 8), seed);
    let want: Vec<HostBatch> = (0..12u64)
        .map(|k| direct.batch(k * b as u64, b, t).unwrap())
        .collect();
    // Two epochs hold different orders (else this test would not see an epoch boundary bug).
    let per_epoch = len as usize / b;
    assert_ne!(want[0].ids, want[per_epoch + 1].ids);
    for start in [0u64, 4, 7] {
        let mut pre = Prefetch::start(
            Stream::new(reader_again(&dir), seed),
            start * b as u64,
            b,
            t,
        )
        .unwrap();
        for (k, w) in want.iter().enumerate().skip(start as usize) {
            let got = pre.next(k as u64 * b as u64).unwrap();
            assert_eq!(&got, w, "batch {k} from start {start}");
        }
    }
    // Another seed, another order.
    let mut other = Prefetch::start(Stream::new(reader_again(&dir), seed + 1), 0, b, t).unwrap();
    let firsts: Vec<Vec<u32>> = (0..4u64)
        .map(|k| other.next(k * b as u64).unwrap().ids)
        .collect();
    assert!(firsts.iter().zip(&want).any(|(a, w)| *a != w.ids));
}

fn reader_again(dir: &tempfile::TempDir) -> SplitReader {
    ShardSet::open(dir.path()).unwrap().split(Split::Train)
}

#[test]
fn loader_errors_reach_the_trainer_and_positions_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let _ = data(dir.path(), 9, 8);
    // Sequences of 8 tokens asked for 16: the loader's error, then no more batches.
    let mut pre = Prefetch::start(Stream::new(reader_again(&dir), 1), 0, 2, 16).unwrap();
    let e = pre.next(0).unwrap_err();
    assert!(e.to_string().contains("shorter than train.seq_len"), "{e}");
    assert!(pre.next(0).is_err());
    // Out of order: refused rather than handing over the wrong batch.
    let mut pre = Prefetch::start(Stream::new(reader_again(&dir), 1), 0, 2, 8).unwrap();
    let e = pre.next(2).unwrap_err();
    assert!(e.to_string().contains("asked for 2"), "{e}");
    assert!(pre.next(0).is_ok() && pre.next(2).is_ok());
}
