//! The training data stream and its loader thread: the order of training sequences (epoch `e`
//! visits the split in a permutation seeded by `seed` and `e`, a pure function of the position,
//! so a resumed run reads what an uninterrupted one did), and a thread that builds the host
//! batches at consecutive positions ahead of the step that needs them (a bounded channel of
//! depth 2), so reading shards overlaps the forward and backward passes.
//!
//! Must match building each batch on the trainer's thread at the step's data position:
//! the same sequences in the same order (tested), and the loader's errors reach the trainer as
//! its errors, at the batch they belong to.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::batch::{batch_host, HostBatch};
use super::TrainError;
use crate::data::SplitReader;

/// Batches built ahead of the one the trainer is using.
const DEPTH: usize = 2;

/// Deterministic, seekable order of training sequences.
pub(crate) struct Stream {
    reader: SplitReader,
    seed: u64,
    perm: Option<(u64, Vec<u64>)>,
}

impl Stream {
    pub(crate) fn new(reader: SplitReader, seed: u64) -> Self {
        Stream {
            reader,
            seed,
            perm: None,
        }
    }

    /// The sequence at stream position `pos`.
    fn index(&mut self, pos: u64) -> u64 {
        let len = self.reader.len();
        let epoch = pos / len;
        if self.perm.as_ref().map(|p| p.0) != Some(epoch) {
            let mut v: Vec<u64> = (0..len).collect();
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            v.shuffle(&mut rng);
            self.perm = Some((epoch, v));
        }
        self.perm.as_ref().map_or(0, |p| p.1[(pos % len) as usize])
    }

    /// The batch of the `b` sequences at positions `pos..pos + b`, `t` tokens each.
    pub(crate) fn batch(&mut self, pos: u64, b: usize, t: usize) -> Result<HostBatch, TrainError> {
        let idx: Vec<u64> = (0..b as u64).map(|j| self.index(pos + j)).collect();
        batch_host(&mut self.reader, &idx, t)
    }
}

/// A [`Stream`] on its loader thread, read batch by batch in order.
pub(crate) struct Prefetch {
    rx: Option<Receiver<Result<HostBatch, TrainError>>>,
    thread: Option<JoinHandle<()>>,
    /// The position of the next batch to arrive.
    next: u64,
    batch: usize,
}

impl Prefetch {
    /// Start building the batches of `b` sequences of `t` tokens from position `pos` on.
    pub(crate) fn start(
        mut stream: Stream,
        pos: u64,
        b: usize,
        t: usize,
    ) -> Result<Self, TrainError> {
        let (tx, rx) = sync_channel(DEPTH);
        let thread = std::thread::Builder::new()
            .name("tritter-batches".into())
            .spawn(move || {
                let mut at = pos;
                loop {
                    let batch = stream.batch(at, b, t);
                    let failed = batch.is_err();
                    // The trainer is gone (dropped its receiver), or this was an error it will
                    // report: stop.
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                    at += b as u64;
                }
            })
            .map_err(|e| TrainError::Config(format!("cannot start the batch loader: {e}")))?;
        Ok(Prefetch {
            rx: Some(rx),
            thread: Some(thread),
            next: pos,
            batch: b,
        })
    }

    /// The batch at position `pos`, which must be the next one in order.
    pub(crate) fn next(&mut self, pos: u64) -> Result<HostBatch, TrainError> {
        if pos != self.next {
            return Err(TrainError::Config(format!(
                "the batch loader is at position {}, the trainer asked for {pos}",
                self.next
            )));
        }
        let got = self.rx.as_ref().map(|rx| rx.recv());
        match got {
            Some(Ok(Ok(batch))) => {
                self.next += self.batch as u64;
                Ok(batch)
            }
            Some(Ok(Err(e))) => Err(e),
            // Closed after an error already returned, or the thread panicked.
            _ => Err(TrainError::Config("the batch loader stopped".into())),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Dropping the receiver makes the loader's next send fail, and it returns.
        drop(self.rx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
#[path = "prefetch_tests.rs"]
mod tests;
