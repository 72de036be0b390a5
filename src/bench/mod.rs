//! `tritter bench kernels|decode|attention|vision|audio|train|repomap|tune [--json] [--threads N]`:
//! runs one of the benchmark reports (`kernels`, `decode`, `attention`, `vision`, `audio`, `train`,
//! `repomap`, `tune`: the prefetch sweep that also caches its choice) and prints it as one JSON object or as indented
//! JSON / a short table for people. With `--device cuda` the GPU reports run instead (`cuda`), and
//! `bench variants --device cuda` prints JSON lines as its measurements complete
//! (`cuda_variants`). This file is the binary's one place that names the `cuda` feature: the
//! GPU reports exist only in a CUDA build.

pub mod attention;
pub mod audio;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
mod cuda_variants;
pub mod decode;
pub mod host;
pub mod kernels;
pub mod profile;
pub mod repomap;
pub mod train;
pub mod tune;
pub mod vision;

use anyhow::Result;
use clap::ValueEnum;

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchWhat {
    /// Ternary GEMV/GEMM vs f32 and copy bandwidth.
    Kernels,
    /// End-to-end prefill/decode of random tritter-tiny and 2B4T-shaped models.
    Decode,
    /// Fused attention and KV caches.
    Attention,
    /// The SigLIP-B/16 vision tower at 224 px on the CPU (compare with transformers:
    /// scripts/bench_vision.sh).
    Vision,
    /// EnCodec (24 kHz shapes) encoding 10 s of audio to 8 codebooks on the CPU (compare with
    /// transformers: scripts/bench_encodec_torch.py).
    Audio,
    /// The CUDA path's speed variants against its default (`--device cuda` only; JSON lines).
    Variants,
    /// One training step of tritter-tiny, or `--preset tritter-small` (batch 8 × 256, ternary
    /// STE, AdamW) timed by phase (compare with PyTorch: scripts/torch_train_bench.py).
    Train,
    /// The repo map: build, rebuild and render times and map size, on the current folder and a
    /// synthetic 1,000-file tree (CPU only).
    Repomap,
    /// Sweeps the weight-streaming kernels' prefetch distance on this machine and caches the
    /// fastest in the cache folder's `tuning.json`, which later runs use (CPU only).
    Tune,
}

/// Threads to use: the flag, or every core.
pub fn threads_or_default(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Runs the benchmark and prints its report.
pub fn run(
    what: BenchWhat,
    json: bool,
    threads: Option<usize>,
    preset: Option<&str>,
    compute: crate::device::Compute,
) -> Result<()> {
    anyhow::ensure!(
        preset.is_none() || what == BenchWhat::Train,
        "--preset chooses the model of `bench train`; `bench {}` has its own shapes",
        format!("{what:?}").to_lowercase()
    );
    if let crate::device::Compute::Cuda(n) = compute {
        return run_cuda(what, json, n);
    }
    let threads = threads_or_default(threads);
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    if matches!(
        what,
        BenchWhat::Vision | BenchWhat::Audio | BenchWhat::Train
    ) {
        // The vision and audio CPU paths size their threads by candle's `get_num_threads`, which
        // reads RAYON_NUM_THREADS: set it before any of their threads start.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    let mut report = match what {
        BenchWhat::Kernels => crate::bench::kernels::kernels_report(threads)?,
        BenchWhat::Decode => crate::bench::decode::decode_report(threads)?,
        BenchWhat::Attention => crate::bench::attention::attention_report(threads)?,
        BenchWhat::Vision => serde_json::to_value(crate::bench::vision::vision_report(
            10,
            &candle_core::Device::Cpu,
        )?)?,
        BenchWhat::Audio => serde_json::to_value(crate::bench::audio::audio_report(
            5,
            &candle_core::Device::Cpu,
        )?)?,
        BenchWhat::Train => {
            crate::cli::train::tune_allocator();
            let preset = preset.unwrap_or("tritter-tiny");
            serde_json::to_value(crate::bench::train::train_report(
                preset, threads, 8, 256, 8,
            )?)?
        }
        BenchWhat::Variants => anyhow::bail!(
            "`bench variants` measures the CUDA path's speed variants: run it with --device cuda"
        ),
        BenchWhat::Repomap => crate::bench::repomap::repomap_report(1000)?,
        BenchWhat::Tune => crate::bench::tune::tune_report(threads)?,
    };
    if let Some(obj) = report.as_object_mut() {
        obj.insert("host".into(), crate::bench::host::host_json(threads));
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else if what == BenchWhat::Decode {
        print!("{}", crate::bench::decode::decode_text(&report));
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn run_cuda(what: BenchWhat, json: bool, ordinal: usize) -> Result<()> {
    use std::io::Write;
    let report = match what {
        BenchWhat::Kernels => crate::bench::cuda::kernels_report(ordinal)?,
        BenchWhat::Decode => crate::bench::cuda::decode_report(ordinal)?,
        BenchWhat::Attention => crate::bench::cuda::attention_report(ordinal)?,
        BenchWhat::Vision => serde_json::to_value(crate::bench::vision::vision_report(
            10,
            &candle_core::Device::new_cuda(ordinal)?,
        )?)?,
        BenchWhat::Audio => serde_json::to_value(crate::bench::audio::audio_report(
            5,
            &candle_core::Device::new_cuda(ordinal)?,
        )?)?,
        BenchWhat::Train => anyhow::bail!(
            "`bench train` times the CPU trainer; on a GPU, `tritter --train --device cuda` reports tokens/s"
        ),
        BenchWhat::Repomap => anyhow::bail!("`bench repomap` runs on the CPU only"),
        BenchWhat::Tune => anyhow::bail!("`bench tune` tunes the CPU kernels: run it without --device cuda"),
        BenchWhat::Variants => {
            // One JSON line per measurement, flushed, whatever `--json` says.
            return crate::bench::cuda_variants::variants_report(ordinal, &mut |line| {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
                out.flush()?;
                Ok(())
            });
        }
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(_: BenchWhat, _: bool, _: usize) -> Result<()> {
    anyhow::bail!(
        "--device cuda: {}",
        tritter_model::device::DeviceError::NoCuda
    )
}
