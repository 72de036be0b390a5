//! Single-token decode steps captured as a CUDA graph and replayed (the position lives in
//! device memory, so one graph serves every step), and switching the speed variants, which
//! drops the graph.

use super::{kerr, GpuModel};
use crate::error::Result;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;
use tritter_kernels::cuda::Tuning;
use tritter_kernels::KernelError;

/// A captured decode step.
pub(super) struct Graph(pub(super) CudaGraph);

// SAFETY: the graph is owned by one `GpuModel` and launched only through `&mut self`, so never
// from two threads at once; `CudaGraph::launch` binds the context to the calling thread first.
unsafe impl Send for Graph {}

impl GpuModel {
    /// GPU time of one replay of the captured decode step in milliseconds (CUDA events, median
    /// of `reps`; replays recompute the last step in place), if a graph was captured.
    pub fn graph_step_ms(&self, reps: usize) -> Result<Option<f64>> {
        let Some(graph) = &self.graph else {
            return Ok(None);
        };
        let ms = self
            .gpu
            .time_ms(2, reps, || {
                graph
                    .0
                    .launch()
                    .map_err(|e| KernelError::Cuda(e.to_string()))
            })
            .map_err(kerr)?;
        Ok(Some(ms))
    }

    /// Switches the speed variants (kernel tuning, fused residual add); a captured decode graph
    /// is dropped and captured again with the new kernels on the next step.
    pub fn retune(&mut self, tuning: Tuning, fuse_residual: bool) -> Result<()> {
        self.gpu.sync().map_err(kerr)?;
        self.gpu.set_tuning(tuning).map_err(kerr)?;
        self.opts.tuning = tuning;
        self.opts.fuse_residual = fuse_residual;
        self.graph = None;
        self.graph_failed = false;
        Ok(())
    }

    /// Captures one single-token step (layers, final norm, head of row 0) as a graph.
    pub(super) fn capture(&mut self) -> Result<()> {
        let stream = self.gpu.stream().clone();
        self.gpu.sync().map_err(kerr)?;
        if stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .is_err()
        {
            self.graph_failed = true;
            return Ok(());
        }
        let ran = self.layers_pass(1).and_then(|()| {
            self.gpu
                .head(&self.head, &self.s.h, 0, &self.s.logits, 0)
                .map_err(kerr)
        });
        let graph = stream
            .end_capture(CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH);
        match (ran, graph) {
            (Ok(()), Ok(Some(g))) => self.graph = Some(Graph(g)),
            (Err(e), _) => return Err(e),
            _ => self.graph_failed = true,
        }
        Ok(())
    }
}
