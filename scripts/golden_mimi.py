#!/usr/bin/env python3
"""Golden fixture for Tritter's Mimi audio codec (model/src/audio/mimi/), held against Hugging Face
transformers' `MimiModel`.

`mimi_tiny/`: a tiny random `MimiConfig` (every architectural knob at a non-trivial value: three
SEANet ratios, a 2x latent down/upsample, a transformer sliding window shorter than the clip, more
acoustic codebooks than asked for), written with HF's own `save_pretrained` (config.json +
model.safetensors, bf16 weights) and loaded back with `from_pretrained(dtype=float32)`.
`expected.safetensors` holds:

* `samples` F32 [B, 1, S] — the input clip; S is not a multiple of the frame size (48 samples);
* `seanet` F32 [B, H, T_enc] — the SEANet encoder output (`model.encoder.encoder_seanet`);
* `latents` F32 [B, H, T] — the embeddings before quantisation (`model.encoder(x).latents`);
* `audio_codes` I64 [B, N_Q, T] — `model.encode(x, num_quantizers=N_Q).audio_codes`, N_Q < the
  model's `num_quantizers` (codebook 0 is the semantic one);
* `audio_values` F32 [B, 1, S'] — `model.decode(audio_codes).audio_values`;
* `audio_codes_all` I64 [B, num_quantizers, T] and `audio_values_all` — the same with every codebook;
* `param_count` I64 [1] — `model.num_parameters()` (the codebook buffers are not parameters).

Usage: `python scripts/golden_mimi.py` (deterministic: fixed seeds, CPU, float32, one thread;
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
from transformers import MimiConfig, MimiModel  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"

# Hop 4*3*2 = 24 samples, latent stride 2: a frame is 48 samples (frame_rate 2400 / 48 = 50 Hz).
# 700 samples -> 30 encoder-transformer steps (> sliding_window 6) -> 15 code frames.
CASE = dict(
    sampling_rate=2400, audio_channels=1, hidden_size=16, num_filters=2, num_residual_layers=1,
    upsampling_ratios=[4, 3, 2], kernel_size=7, last_kernel_size=3, residual_kernel_size=3,
    dilation_growth_rate=2, use_causal_conv=True, pad_mode="constant", compress=2,
    trim_right_ratio=1.0, codebook_size=32, codebook_dim=8, num_quantizers=6,
    use_conv_shortcut=False, vector_quantization_hidden_dimension=8, num_semantic_quantizers=1,
    upsample_groups=16, num_hidden_layers=2, intermediate_size=16, num_attention_heads=2,
    num_key_value_heads=2, max_position_embeddings=256, sliding_window=6,
    layer_scale_initial_scale=0.01, attention_bias=False,
)
BATCH = 2
SAMPLES = 700
N_Q = 4


def bf16_exact(t: torch.Tensor) -> torch.Tensor:
    """t rounded to the nearest bfloat16 (so the bf16 file holds exactly the weights used)."""
    return t.to(torch.bfloat16).to(torch.float32)


def randomise(model: MimiModel, gen: torch.Generator) -> None:
    """Weights that keep activations O(1): convs / linears N(0, 1/fan_in), biases N(0, 0.1²),
    LayerNorm weights U[0.5, 1.5), layer scales U[0.3, 1.0) (HF's 0.01 would hide the transformer),
    cluster_usage U[0.5, 2.0) (so that embed = embed_sum / cluster_usage is exercised)."""
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("initialized") or not p.is_floating_point() or p.dim() == 0:
                continue
            if "cluster_usage" in name:
                v = 0.5 + 1.5 * torch.rand(p.shape, generator=gen)
            elif "layer_scale" in name:
                v = 0.3 + 0.7 * torch.rand(p.shape, generator=gen)
            elif "layernorm" in name and name.endswith("weight"):
                v = 0.5 + torch.rand(p.shape, generator=gen)
            elif p.dim() >= 2:
                fan_in = p[0].numel() if "upsample" not in name else p.shape[-1]
                v = torch.randn(p.shape, generator=gen) / fan_in**0.5
            else:
                v = torch.randn(p.shape, generator=gen) * 0.1
            p.copy_(bf16_exact(v))


def clip(gen: torch.Generator) -> torch.Tensor:
    """A few random sines plus noise, in (-1, 1)."""
    t = torch.arange(SAMPLES, dtype=torch.float32) / CASE["sampling_rate"]
    freqs = 50 + 900 * torch.rand(BATCH, 3, 1, generator=gen)
    phase = 6.28 * torch.rand(BATCH, 3, 1, generator=gen)
    x = torch.sin(6.2832 * freqs * t + phase).sum(dim=1, keepdim=True) / 3
    return (0.8 * x + 0.1 * torch.randn(BATCH, 1, SAMPLES, generator=gen)).clamp(-1, 1)


def fit_codebooks(model: MimiModel, latents: torch.Tensor, gen: torch.Generator) -> None:
    """Codebooks on the scale of what each quantiser sees, so that codes spread over the books."""
    q = model.quantizer
    for rvq in (q.semantic_residual_vector_quantizer, q.acoustic_residual_vector_quantizer):
        residual = rvq.input_proj(latents)  # [B, D, T]
        for layer in rvq.layers:
            flat = residual.permute(0, 2, 1).reshape(-1, residual.shape[1])
            mean, std = flat.mean(0), flat.std(0)
            book = mean + std * torch.randn(CASE["codebook_size"], flat.shape[1], generator=gen)
            cb = layer.codebook
            cb.embed_sum.copy_(bf16_exact(book * cb.cluster_usage[:, None]))
            cb._embed = None
            residual = residual - layer.decode(layer.encode(residual))


def code_margins(model: MimiModel, latents: torch.Tensor, n_q: int) -> float:
    """Smallest gap, over every quantised position, between the nearest and second-nearest
    squared distance (float64)."""
    q = model.quantizer
    gaps = []
    for rvq, k in ((q.semantic_residual_vector_quantizer, 1), (q.acoustic_residual_vector_quantizer, n_q - 1)):
        residual = rvq.input_proj(latents).double()
        for layer in rvq.layers[:k]:
            book = layer.codebook.embed.double()
            flat = residual.permute(0, 2, 1).reshape(-1, residual.shape[1])
            d = torch.cdist(flat, book) ** 2
            two = d.topk(2, dim=1, largest=False).values
            gaps.append((two[:, 1] - two[:, 0]).min().item())
            idx = d.argmin(1).reshape(residual.shape[0], residual.shape[2])
            residual = residual - book[idx].permute(0, 2, 1)
    return min(gaps)


def main() -> None:
    out = GOLDEN / "mimi_tiny"
    gen = torch.Generator().manual_seed(2405)
    cfg = MimiConfig(**CASE)
    model = MimiModel(cfg).eval()
    randomise(model, gen)
    samples = clip(gen)
    with torch.no_grad():
        # Of 16 codebook draws, the one whose nearest and second-nearest entries are farthest apart
        # (float noise then cannot flip a code).
        latents = model.encoder(samples).latents
        best = None
        for seed in range(16):
            fit_codebooks(model, latents, torch.Generator().manual_seed(7000 + seed))
            margin = code_margins(model, latents, cfg.num_quantizers)
            if best is None or margin > best[0]:
                best = (margin, seed)
        fit_codebooks(model, latents, torch.Generator().manual_seed(7000 + best[1]))
    with tempfile.TemporaryDirectory() as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp)
        hf = MimiModel.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager").eval()
        saved = load_file(os.path.join(tmp, "model.safetensors"))
        with torch.no_grad():
            seanet = hf.encoder.encoder_seanet(samples)
            latents = hf.encoder(samples).latents
            codes = hf.encode(samples, num_quantizers=N_Q).audio_codes
            values = hf.decode(codes).audio_values
            codes_all = hf.encode(samples).audio_codes
            values_all = hf.decode(codes_all).audio_values
            margin = code_margins(hf, latents, cfg.num_quantizers)
        assert torch.equal(codes_all[:, :N_Q], codes), "RVQ prefix property"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(tmp, name), out / name)
    save_file(
        {
            "samples": samples.contiguous(),
            "seanet": seanet.contiguous(),
            "latents": latents.contiguous(),
            "audio_codes": codes.contiguous(),
            "audio_values": values.contiguous(),
            "audio_codes_all": codes_all.contiguous(),
            "audio_values_all": values_all.contiguous(),
            "param_count": torch.tensor([hf.num_parameters()], dtype=torch.int64),
        },
        out / "expected.safetensors",
        metadata={"format": "pt"},
    )
    used = [len(torch.unique(codes_all[:, k])) for k in range(cfg.num_quantizers)]
    size = sum(f.stat().st_size for f in out.iterdir())
    print(
        f"mimi_tiny: {sum(t.numel() for t in saved.values())} weights in {len(saved)} tensors, "
        f"samples {tuple(samples.shape)}, seanet {tuple(seanet.shape)}, latents {tuple(latents.shape)}, "
        f"codes {tuple(codes_all.shape)} (distinct per book {used}), audio {tuple(values.shape)} "
        f"max|audio| {values.abs().max().item():.3f}, min code margin {margin:.3e}, {size / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()
