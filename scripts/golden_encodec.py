#!/usr/bin/env python3
"""Golden fixtures for Tritter's EnCodec audio codec (model/src/audio/encodec/).

Two tiny random `EncodecModel`s, held against Hugging Face transformers, written to tests/golden/:

* `encodec_tiny/` — causal convs, weight norm, two LSTM layers, two residual blocks per level
  (dilations 1 and 2), conv shortcuts, 4 codebooks of 32 entries; strides [4, 2] (hop 8).
* `encodec_tiny_noncausal_gn/` — centred padding with an odd stride (strides [3, 2], hop 6),
  `time_group_norm`, one LSTM layer, identity shortcuts, 3 codebooks of 16 entries.

Each model is written with HF's own `save_pretrained` (config.json + model.safetensors, bf16
weights) and loaded back with `from_pretrained(dtype=float32)`; `expected.safetensors` holds the
input `input_values` F32 [2, 1, S] (S not a multiple of the hop), what `encode(x, bandwidth=max)`
returns (`audio_codes` I64 [2, n_q, T], frames dim dropped), the encoder output before
quantisation (`embeddings` F32 [2, hidden, T]) and `decode(codes, [None]).audio_values`
(`audio_values` F32 [2, 1, T·hop]).

Codebooks (HF's are EMA buffers, zero at init) are drawn from the residuals each codebook sees,
plus noise, so that codes spread over the whole codebook.

Usage: `python scripts/golden_encodec.py` (deterministic: fixed seeds, CPU, float32, one thread;
versions as in scripts/requirements-golden.txt).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import EncodecConfig, EncodecModel  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"
BATCH = 2

CASES = {
    "encodec_tiny": dict(
        seed=1501, samples=997,
        config=dict(
            sampling_rate=8000, audio_channels=1, hidden_size=8, num_filters=4,
            num_residual_layers=2, upsampling_ratios=[4, 2], norm_type="weight_norm",
            kernel_size=7, last_kernel_size=5, residual_kernel_size=3, dilation_growth_rate=2,
            use_causal_conv=True, pad_mode="reflect", compress=2, num_lstm_layers=2,
            trim_right_ratio=1.0, codebook_size=32, use_conv_shortcut=True,
            target_bandwidths=[5.0, 10.0, 20.0],
        ),
    ),
    "encodec_tiny_noncausal_gn": dict(
        seed=1502, samples=601,
        config=dict(
            sampling_rate=6000, audio_channels=1, hidden_size=8, num_filters=4,
            num_residual_layers=1, upsampling_ratios=[3, 2], norm_type="time_group_norm",
            kernel_size=7, last_kernel_size=7, residual_kernel_size=3, dilation_growth_rate=2,
            use_causal_conv=False, pad_mode="reflect", compress=2, num_lstm_layers=1,
            trim_right_ratio=1.0, codebook_size=16, use_conv_shortcut=False,
            target_bandwidths=[4.0, 12.0],
        ),
    ),
}


def bf16_exact(t: torch.Tensor) -> torch.Tensor:
    """t rounded to the nearest bfloat16 (so the bf16 file holds exactly the weights used)."""
    return t.to(torch.bfloat16).to(torch.float32)


def randomise(model: EncodecModel, gen: torch.Generator) -> None:
    """Weights that keep activations O(1): weight-norm `g` U[0.5, 1.5) (so the norm matters),
    `v` and plain conv weights N(0, 1/fan_in), biases N(0, 0.1²), GroupNorm weights U[0.5, 1.5),
    LSTM weights N(0, 1/H)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("original0"):
                v = 0.5 + torch.rand(p.shape, generator=gen)
            elif p.dim() == 3:
                fan_in = p.shape[1] * p.shape[2]
                v = torch.randn(p.shape, generator=gen) / fan_in**0.5
            elif "lstm.weight" in name:
                v = torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5
            elif "norm" in name and name.endswith("weight"):
                v = 0.5 + torch.rand(p.shape, generator=gen)
            else:
                v = torch.randn(p.shape, generator=gen) * 0.1
            p.copy_(bf16_exact(v))


def clip(gen: torch.Generator, n: int) -> torch.Tensor:
    """A few random sinusoids plus noise, in about [-1, 1]."""
    t = torch.arange(n, dtype=torch.float32)
    x = torch.zeros(BATCH, 1, n)
    for b in range(BATCH):
        for _ in range(3):
            f = 0.01 + 0.2 * torch.rand(1, generator=gen)
            x[b, 0] += 0.3 * torch.sin(2 * torch.pi * f * t + 6.28 * torch.rand(1, generator=gen))
    return x + 0.05 * torch.randn(BATCH, 1, n, generator=gen)


def set_codebooks(model: EncodecModel, x: torch.Tensor, gen: torch.Generator) -> None:
    """Codebook q: random residual vectors of codebook q's input, plus noise."""
    with torch.no_grad():
        emb = model.encoder(x)
        residual = emb.permute(0, 2, 1).reshape(-1, emb.shape[1])
        for layer in model.quantizer.layers:
            n = layer.codebook.embed.shape[0]
            pick = torch.randint(0, residual.shape[0], (n,), generator=gen)
            book = residual[pick] + 0.3 * residual.std(0) * torch.randn(n, residual.shape[1], generator=gen)
            layer.codebook.embed.copy_(bf16_exact(book))
            layer.codebook.embed_avg.copy_(bf16_exact(book))
            layer.codebook.cluster_size.fill_(1.0)
            dist = torch.cdist(residual, layer.codebook.embed)
            residual = residual - layer.codebook.embed[dist.argmin(1)]


def margins(emb: torch.Tensor, model: EncodecModel, codes: torch.Tensor) -> float:
    """Smallest gap, over positions and codebooks, between the nearest and second-nearest
    squared distance (float64)."""
    residual = emb.permute(0, 2, 1).reshape(-1, emb.shape[1]).double()
    worst = float("inf")
    for q, layer in enumerate(model.quantizer.layers[: codes.shape[1]]):
        book = layer.codebook.embed.double()
        d = torch.cdist(residual, book) ** 2
        two = d.topk(2, dim=1, largest=False).values
        worst = min(worst, (two[:, 1] - two[:, 0]).min().item())
        residual = residual - book[codes[:, q].reshape(-1)]
    return worst


def write_case(name: str, case: dict) -> None:
    out = GOLDEN / name
    gen = torch.Generator().manual_seed(case["seed"])
    cfg = EncodecConfig(**case["config"])
    model = EncodecModel(cfg).eval()
    randomise(model, gen)
    x = clip(gen, case["samples"])
    set_codebooks(model, x, gen)
    with tempfile.TemporaryDirectory() as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp)
        saved = load_file(os.path.join(tmp, "model.safetensors"))
        hf = EncodecModel.from_pretrained(tmp, dtype=torch.float32).eval()
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(tmp, f), out / f)
    bandwidth = cfg.target_bandwidths[-1]
    with torch.no_grad():
        enc = hf.encode(x, bandwidth=bandwidth)
        codes = enc.audio_codes[0]
        audio = hf.decode(enc.audio_codes, enc.audio_scales).audio_values
        emb = hf.encoder(x)
    assert codes.shape[1] == cfg.num_quantizers, codes.shape
    save_file(
        {
            "input_values": x.contiguous(),
            "audio_codes": codes.to(torch.int64).contiguous(),
            "embeddings": emb.contiguous(),
            "audio_values": audio.contiguous(),
        },
        out / "expected.safetensors",
    )
    used = [codes[:, q].unique().numel() for q in range(codes.shape[1])]
    size = sum(f.stat().st_size for f in out.iterdir())
    print(
        f"{name}: {sum(t.numel() for t in saved.values())} tensors' elements, codes "
        f"{tuple(codes.shape)} (entries used per codebook {used}/{cfg.codebook_size}), min code "
        f"margin {margins(emb, hf, codes):.3e} (|emb|max {emb.abs().max().item():.3f}), "
        f"audio {tuple(audio.shape)} |audio|max {audio.abs().max().item():.3f}, {size / 1024:.0f} KiB"
    )


def main() -> None:
    for name, case in CASES.items():
        write_case(name, case)


if __name__ == "__main__":
    main()
