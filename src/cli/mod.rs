//! The command line (clap). `tritter` alone opens the TUI; `-p` runs one prompt headless.

pub mod embed;
pub mod encode;
pub mod encode_audio;
pub mod eval;
pub mod export;
pub mod headless;
pub mod logits;
pub mod plan;
pub mod prepare;
pub mod train;
pub mod train_audio;
pub mod train_codec;
pub mod train_latent;
pub mod train_vision;
pub mod train_vqvae;

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::device::{parse_compute, parse_device};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tritter",
    version,
    about = "Offline terminal coding assistant with an in-process ternary language model"
)]
pub struct Cli {
    /// Model directory (config.json, model.safetensors, tokenizer.json); default: the built-in model.
    #[arg(long, value_name = "DIR", global = true)]
    pub model: Option<PathBuf>,
    /// Compute device: cpu or cuda[:N].
    #[arg(long, value_name = "DEVICE", global = true)]
    pub device: Option<String>,
    /// Reopen the most recent saved conversation; with --train, continue from the newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Run one prompt without the TUI and stream the reply to stdout; `-p -` reads it from stdin.
    #[arg(short = 'p', long = "prompt", value_name = "PROMPT")]
    pub prompt: Option<String>,
    /// With -p: print one JSON object {reply, tokens, tok_per_s, first_token_ms, model, mode,
    /// thoughts, notices, raw, prompt_tokens, repo_map} instead.
    #[arg(long, requires = "prompt")]
    pub json: bool,
    /// With -p: continue the prompt's text as it stands (completion mode): no chat template,
    /// history, repo map or latent mode; the reply ends at the model's end-of-text token.
    #[arg(long, requires = "prompt")]
    pub raw: bool,
    /// With -p: attach an image (PNG/JPEG).
    #[arg(long, value_name = "FILE", requires = "prompt")]
    pub img: Vec<PathBuf>,
    /// With -p: attach audio (WAV/FLAC/MP3).
    #[arg(long, value_name = "FILE", requires = "prompt")]
    pub audio: Vec<PathBuf>,
    /// Latent-reasoning mode: on, off or auto (overrides config.toml's `latent`).
    #[arg(long, value_name = "on|off|auto")]
    pub latent: Option<crate::engine::LatentMode>,
    /// Colour theme (overrides config.toml).
    #[arg(long, value_name = "NAME")]
    pub theme: Option<String>,
    /// Train or QAT a model from a config (TOML).
    #[arg(long, value_name = "CONFIG.toml")]
    pub train: Option<PathBuf>,
    /// With --train: only run the data pipeline (filter, dedup, tokenizer, shards) and exit.
    #[arg(long, requires = "train")]
    pub prepare_only: bool,
    /// With --train: override a config key, e.g. --set train.steps=100 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "train")]
    pub overrides: Vec<String>,
    /// With --train: redraw RUN/loss.png from metrics.jsonl and exit.
    #[arg(long, requires = "train")]
    pub plot: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands beside the TUI and `-p`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a text embedding (mean-pooled hidden states) as JSON.
    Embed {
        /// The text to embed.
        text: String,
    },
    /// Write the f32 logits [T, V] of one forward pass over token ids (conformance probe).
    Logits {
        /// Comma-separated token ids, e.g. 1,2,3.
        #[arg(long)]
        ids: String,
        /// Output safetensors file (tensor `logits`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Export the checkpoint of --model DIR for other frameworks: `--format hf` writes a directory
    /// that transformers' BitNetForCausalLM.from_pretrained loads as it is.
    Export {
        /// Target format.
        #[arg(long, value_enum)]
        format: export::ExportFormat,
        /// Output directory (created, or replaced if it holds an earlier checkpoint).
        #[arg(long)]
        out: PathBuf,
        /// packed: uint8 ternary weights for inference; bf16: master weights for training on.
        #[arg(long, value_enum, default_value = "packed")]
        form: export::ExportForm,
    },
    /// Run a benchmark report: kernels, decode or attention.
    Bench {
        /// What to measure.
        #[arg(value_enum)]
        what: crate::bench::BenchWhat,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Worker threads (default: every core).
        #[arg(long)]
        threads: Option<usize>,
        /// train: the model preset (tritter-tiny, the default, or tritter-small), with the
        /// PyTorch script's 8014-token vocabulary.
        #[arg(long)]
        preset: Option<String>,
    },
    /// Write what the image path computes for one image (conformance probe): `pixel_values`,
    /// `last_hidden_state`, `projected`, and `codes` when the model has a VQ tokenizer.
    Encode {
        /// What to encode.
        #[arg(value_enum)]
        what: encode::EncodeWhat,
        /// image: the image file (PNG/JPEG), preprocessed as the model's processor does.
        #[arg(long, conflicts_with = "pixels")]
        image: Option<PathBuf>,
        /// image: already-preprocessed pixels, a safetensors file with `pixel_values` [1,3,H,W].
        #[arg(long)]
        pixels: Option<PathBuf>,
        /// audio: the clip (WAV/FLAC/MP3/OGG), decoded, downmixed and resampled to the codec's rate.
        #[arg(long, conflicts_with = "samples")]
        audio: Option<PathBuf>,
        /// audio: samples already at the codec's rate, a safetensors file with `samples` [S].
        #[arg(long)]
        samples: Option<PathBuf>,
        /// audio: codebooks to encode (default: as many as the model's language model sees).
        #[arg(long)]
        codebooks: Option<usize>,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Accuracy and generated tokens of a checkpoint (--model DIR) on reasoning problems
    /// (JSONL {question, steps, answer}) in latent, written (cot) or no-cot mode.
    Eval {
        /// The problems.
        #[arg(long)]
        data: PathBuf,
        /// How the prompt ends: no-cot / cot (`<bot><eot>`) or latent (K thoughts between).
        #[arg(long, value_enum)]
        mode: eval::EvalMode,
        /// Thoughts in latent mode (default: the checkpoint's latent.json, per record).
        #[arg(long)]
        thoughts: Option<usize>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Plan memory for a model preset: weights, KV cache, activations against a budget.
    Plan {
        /// Model preset (tritter-tiny, tritter-small, tritter-hybrid-tiny, tritter-depth-tiny,
        /// tritter-7b, bitnet-b1.58-2b4t); or plan the checkpoint of
        /// --model DIR (its image path counted when it has one).
        #[arg(long, required_unless_present = "model")]
        preset: Option<String>,
        /// Plan an image path the preset does not have: `siglip-b16` (SigLIP-B/16 at 224 px
        /// and a pixel-shuffle ×4 connector).
        #[arg(long, value_name = "TOWER")]
        vision: Option<String>,
        /// Context length in tokens.
        #[arg(long)]
        context: usize,
        /// Memory budget, e.g. 16GiB or 8GB.
        #[arg(long, default_value = "16GiB")]
        budget: String,
        /// Rolling attention window in tokens (0 = full attention); plans 4 sinks with it.
        #[arg(long, default_value_t = 0)]
        window: usize,
        /// KV cache kind: f32, f16, bf16, int4 (or int4-gG-rR); default f16, int4 with --gpu
        /// (what `--device cuda` runs).
        #[arg(long)]
        kv: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Plan the CUDA build's GPU memory instead (weights, f16 head, GPU KV cache, scratch,
        /// CUDA context) against the budget (an RTX 5080 has 16 GiB), and the cache
        /// `--device cuda` would choose on a card of that size.
        #[arg(long)]
        gpu: bool,
    },
}

/// Runs what the command line asks for: `--train`, a subcommand, `-p`, or the TUI. The clap
/// structs end here: everything below takes typed options.
pub fn run(cli: Cli) -> Result<()> {
    // A misspelt kernel cap would otherwise be ignored and measure the wrong kernels.
    tritter_kernels::isa_cap()?;
    // Before any kernel runs: the prefetch distance measured on this machine, if cached.
    if let Some(warning) = crate::bench::tune::apply_cached() {
        eprintln!("tritter: {warning}");
    }
    if let Some(config) = &cli.train {
        if !cli.prepare_only && !cli.plot {
            train::tune_allocator();
        }
        if cli.prepare_only {
            return prepare::prepare(config, &cli.overrides);
        }
        if cli.plot {
            return train::plot(config, &cli.overrides);
        }
        return match train::task_of(config)?.as_str() {
            "text" => train::train(config, &cli.overrides, cli.resume, cli.device.as_deref()),
            "image_text" => train_vision::train(config, &cli.overrides, cli.device.as_deref()),
            "audio_text" => train_audio::train(config, &cli.overrides, cli.device.as_deref()),
            "codec" => train_codec::train(config, &cli.overrides, cli.device.as_deref()),
            "vqvae" => train_vqvae::train(config, &cli.overrides, cli.device.as_deref()),
            "latent" => train_latent::train(
                config,
                &cli.overrides,
                cli.resume,
                cli.device.as_deref(),
            ),
            other => bail!(
                "{}: task = \"{other}\" is not one of text, image_text, audio_text, vqvae, codec, latent",
                config.display()
            ),
        };
    }
    if let Some(cmd) = &cli.command {
        return run_command(&cli, cmd);
    }
    match cli.prompt {
        Some(prompt) => headless::run(headless::HeadlessOptions {
            model_dir: cli.model,
            device: cli.device,
            prompt,
            json: cli.json,
            images: cli.img,
            audio: cli.audio,
            latent: cli.latent,
            raw: cli.raw,
        }),
        None => crate::tui::run(crate::tui::TuiOptions {
            model_dir: cli.model,
            device: cli.device,
            theme: cli.theme,
            resume: cli.resume,
            latent: cli.latent,
        }),
    }
}

/// Runs a subcommand.
fn run_command(cli: &Cli, cmd: &Command) -> Result<()> {
    let device = cli.device.as_deref();
    match cmd {
        Command::Embed { text } => embed::run(cli.model.as_deref(), text, &parse_device(device)?),
        Command::Logits { ids, out } => {
            let Some(model) = &cli.model else {
                bail!("logits: --model DIR is required");
            };
            logits::run(model, ids, out, parse_compute(device)?)
        }
        Command::Encode {
            what,
            image,
            pixels,
            audio,
            samples,
            codebooks,
            out,
        } => {
            let Some(model) = &cli.model else {
                bail!("encode: --model DIR is required");
            };
            match what {
                encode::EncodeWhat::Image => {
                    let src = match (image, pixels) {
                        (Some(p), _) => encode::PixelSource::Image(p),
                        (None, Some(p)) => encode::PixelSource::Pixels(p),
                        (None, None) => bail!("encode image: give --image FILE or --pixels FILE"),
                    };
                    encode::run(model, src, out)
                }
                encode::EncodeWhat::Audio => {
                    let src = match (audio, samples) {
                        (Some(p), _) => encode_audio::SampleSource::Audio(p),
                        (None, Some(p)) => encode_audio::SampleSource::Samples(p),
                        (None, None) => bail!("encode audio: give --audio FILE or --samples FILE"),
                    };
                    encode_audio::run(model, src, *codebooks, out)
                }
            }
        }
        Command::Export { format, out, form } => {
            let Some(model) = &cli.model else {
                bail!("export: --model DIR is required");
            };
            export::run(model, *format, out, *form)
        }
        Command::Bench {
            what,
            json,
            threads,
            preset,
        } => crate::bench::run(
            *what,
            *json,
            *threads,
            preset.as_deref(),
            parse_compute(device)?,
        ),
        Command::Eval {
            data,
            mode,
            thoughts,
            json,
        } => {
            let Some(model) = &cli.model else {
                bail!("eval: --model DIR is required");
            };
            eval::run(model, data, *mode, *thoughts, *json)
        }
        Command::Plan {
            preset,
            vision,
            context,
            budget,
            window,
            kv,
            json,
            gpu,
        } => plan::run(&plan::PlanArgs {
            preset: preset.clone(),
            model: cli.model.clone(),
            vision: vision.clone(),
            context: *context,
            budget: budget.clone(),
            window: *window,
            kv: kv
                .clone()
                .unwrap_or_else(|| if *gpu { "int4" } else { "f16" }.into()),
            json: *json,
            gpu: *gpu,
        }),
    }
}
