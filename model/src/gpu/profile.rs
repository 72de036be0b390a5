//! One decode step timed per operation with CUDA events (`tritter bench decode --device cuda`
//! reports it).

use super::{kerr, GpuModel};
use crate::error::{Error, Result};

impl GpuModel {
    /// Runs one single-token step (`id` appended to the sequence, eager launches) with a CUDA
    /// event after every operation, and returns the GPU milliseconds spent in each kind of
    /// operation over all layers, in first-seen order: `(op, ms, launches)`. The events
    /// serialise the stream between operations, so the total exceeds a graph-replayed step.
    pub fn profile_step(&mut self, id: u32) -> Result<Vec<(&'static str, f64, usize)>> {
        let vocab = self.cfg.vocab_size;
        if id as usize >= vocab {
            return Err(Error::TokenOutOfRange { id, vocab });
        }
        let x = self.embed_rows(&[id]);
        self.stage(&x)?;
        let mut marks = vec![("start", self.gpu.mark().map_err(kerr)?)];
        self.layers_pass_marked(1, &mut |op| {
            marks.push((op, self.gpu.mark().map_err(kerr)?));
            Ok(())
        })?;
        self.gpu
            .head(&self.head, &self.s.h, 0, &self.s.logits, 0)
            .map_err(kerr)?;
        marks.push(("head", self.gpu.mark().map_err(kerr)?));
        self.gpu.sync().map_err(kerr)?;
        self.seen += 1;
        let mut out: Vec<(&'static str, f64, usize)> = Vec::new();
        for w in marks.windows(2) {
            let ms = f64::from(
                w[0].1
                    .elapsed_ms(&w[1].1)
                    .map_err(|e| Error::Kernel(e.to_string()))?,
            );
            match out.iter_mut().find(|o| o.0 == w[1].0) {
                Some(o) => {
                    o.1 += ms;
                    o.2 += 1;
                }
                None => out.push((w[1].0, ms, 1)),
            }
        }
        Ok(out)
    }
}
