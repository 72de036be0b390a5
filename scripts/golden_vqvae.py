#!/usr/bin/env python3
"""Golden fixtures for Tritter's Chameleon VQ-VAE image tokenizer (model/src/vqvae/).

Two cases, written to tests/golden/:

* `chameleon_vqvae/` — held against Hugging Face transformers. A tiny random `ChameleonVQVAE`
  written with HF's own `save_pretrained` (config.json + model.safetensors, bf16 weights), loaded
  back with `from_pretrained(dtype=float32)`; `expected.safetensors` holds the input pixels and
  what HF's `encode` returns: the encoder output, the `quant_conv` latents, the codes and the
  embedding loss.
* `chameleon_vqvae_decoder/` — held against our own PyTorch statement. HF's `ChameleonVQVAE` has
  no decoder; Chameleon's original VQGAN decoder (taming-transformers layout, `decoder.*`) is stated
  here as `RefDecoder`, built from torch.nn modules and HF's resnet / attention block classes.
  `decoder.safetensors` holds what decoding reads (`quantize.embedding.weight`,
  `post_quant_conv.*`, `decoder.*`, bf16); `expected.safetensors` holds codes and the pixels.

Usage: `python scripts/golden_vqvae.py` (deterministic: fixed seeds, CPU, float32, one thread;
versions as in scripts/requirements-golden.txt).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import ChameleonVQVAE, ChameleonVQVAEConfig  # noqa: E402
from transformers.models.chameleon.modeling_chameleon import (  # noqa: E402
    ChameleonVQVAEEncoderAttnBlock,
    ChameleonVQVAEEncoderResnetBlock,
)
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"

# 32×32 images → a 16×16 latent grid = 256 codes per image. channel_multiplier [2, 1] puts a
# channel change (nin_shortcut) into both levels of the encoder; attention at resolution 16.
ENCODER_CASE = dict(
    embed_dim=8, num_embeddings=64, double_latent=False, latent_channels=8, resolution=32,
    in_channels=3, base_channels=32, channel_multiplier=[2, 1], num_res_blocks=1,
    attn_resolutions=[16], dropout=0.0, attn_type="vanilla",
)
# The decoder case keeps 32 channels everywhere so that its weights stay small.
DECODER_CASE = dict(ENCODER_CASE, channel_multiplier=[1, 1])
BATCH = 2


def bf16_exact(t: torch.Tensor) -> torch.Tensor:
    """t rounded to the nearest bfloat16 (so the bf16 file holds exactly the weights used)."""
    return t.to(torch.bfloat16).to(torch.float32)


def randomise(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights that keep activations O(1): convs N(0, 1/fan_in)·1.2, biases N(0, 0.1²),
    GroupNorm weights U[0.5, 1.5) (a misplaced norm shows), GroupNorm biases N(0, 0.1²)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                v = torch.randn(p.shape, generator=gen) * (1.2 / fan_in**0.5)
            elif "norm" in name and name.endswith("weight"):
                v = 0.5 + torch.rand(p.shape, generator=gen)
            else:
                v = torch.randn(p.shape, generator=gen) * 0.1
            p.copy_(bf16_exact(v))


def images(gen: torch.Generator, res: int) -> torch.Tensor:
    """Smooth random images in (-1, 1): a 4×4 colour field upsampled bilinearly, plus fine noise."""
    coarse = torch.randn(BATCH, 3, 4, 4, generator=gen) * 1.2
    smooth = F.interpolate(coarse, size=(res, res), mode="bilinear", align_corners=False)
    return torch.tanh(smooth + 0.3 * torch.randn(BATCH, 3, res, res, generator=gen))


def code_margins(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Per position: second-nearest minus nearest squared distance (float64)."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double()
    d = torch.cdist(flat, codebook.double()) ** 2
    two = d.topk(2, dim=1, largest=False).values
    return two[:, 1] - two[:, 0]


def encoder_case() -> None:
    out = GOLDEN / "chameleon_vqvae"
    gen = torch.Generator().manual_seed(1401)
    cfg = ChameleonVQVAEConfig(**ENCODER_CASE)
    model = ChameleonVQVAE(cfg).eval()
    randomise(model, gen)
    pixels = images(gen, cfg.resolution)
    with torch.no_grad():
        # Codebook on the latents' scale so that the codes spread over the whole codebook.
        z = model.quant_conv(model.encoder(pixels))
        mean, std = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
        book = mean + std * torch.randn(cfg.num_embeddings, cfg.embed_dim, generator=gen)
        model.quantize.embedding.weight.copy_(bf16_exact(book))
    with tempfile.TemporaryDirectory() as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp)
        saved = load_file(os.path.join(tmp, "model.safetensors"))
        hf = ChameleonVQVAE.from_pretrained(tmp, dtype=torch.float32).eval()
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(tmp, f), out / f)
    names = {n for n, _ in hf.named_parameters()}
    assert set(saved) == names, sorted(set(saved) ^ names)
    assert all(t.dtype == torch.bfloat16 for t in saved.values())
    with torch.no_grad():
        enc = hf.encode(pixels)
        latents = hf.quant_conv(enc.last_hidden_state)
    codes = enc.image_tokens.reshape(BATCH, -1)
    # Self-checks: codes index the nearest entry of the latents; the quantised output is its entry
    # (up to the rounding of HF's straight-through `z + (q - z)`).
    book = hf.quantize.embedding.weight
    near = torch.cdist(latents.permute(0, 2, 3, 1).reshape(-1, cfg.embed_dim).double(), book.double())
    agree = (near.argmin(dim=1) == codes.reshape(-1)).double().mean().item()
    q = book[codes.reshape(-1)].reshape(BATCH, 16, 16, -1).permute(0, 3, 1, 2)
    assert torch.allclose(q, enc.quantized_last_hidden_state, rtol=0, atol=1e-6)
    margins = code_margins(latents, book)
    save_file(
        {
            "pixels": pixels.contiguous(),
            "hidden": enc.last_hidden_state.contiguous(),
            "latents": latents.contiguous(),
            "codes": codes.to(torch.int64).contiguous(),
            "embedding_loss": enc.embedding_loss.reshape(1).contiguous(),
        },
        out / "expected.safetensors",
    )
    print(
        f"chameleon_vqvae: {sum(t.numel() for t in saved.values())} weights, "
        f"{codes.unique().numel()}/{cfg.num_embeddings} codes used, float64 argmin agrees on "
        f"{agree:.4f}, min code margin {margins.min().item():.3e} "
        f"(latent scale {latents.abs().max().item():.3f}), "
        f"|hidden|max {enc.last_hidden_state.abs().max().item():.3f}"
    )


class RefUpsample(torch.nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv (taming-transformers `Upsample`, with_conv)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(ch, ch, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class RefDecoder(torch.nn.Module):
    """Chameleon's VQGAN decoder (taming-transformers `Decoder`) over HF's block classes."""

    def __init__(self, cfg: ChameleonVQVAEConfig):
        super().__init__()
        mult = cfg.channel_multiplier
        self.levels = len(mult)
        self.blocks = cfg.num_res_blocks + 1
        ch = cfg.base_channels * mult[-1]
        res = cfg.resolution // 2 ** (self.levels - 1)
        self.conv_in = torch.nn.Conv2d(cfg.latent_channels, ch, kernel_size=3, stride=1, padding=1)
        self.mid = torch.nn.Module()
        self.mid.block_1 = ChameleonVQVAEEncoderResnetBlock(cfg, ch, ch)
        self.mid.attn_1 = ChameleonVQVAEEncoderAttnBlock(ch)
        self.mid.block_2 = ChameleonVQVAEEncoderResnetBlock(cfg, ch, ch)
        ups = []
        for level in reversed(range(self.levels)):
            up = torch.nn.Module()
            up.block, up.attn = torch.nn.ModuleList(), torch.nn.ModuleList()
            out = cfg.base_channels * mult[level]
            for _ in range(self.blocks):
                up.block.append(ChameleonVQVAEEncoderResnetBlock(cfg, ch, out))
                ch = out
                if res in (cfg.attn_resolutions or []):
                    up.attn.append(ChameleonVQVAEEncoderAttnBlock(ch))
            if level != 0:
                up.upsample = RefUpsample(ch)
                res *= 2
            ups.insert(0, up)
        self.up = torch.nn.ModuleList(ups)
        self.norm_out = torch.nn.GroupNorm(num_groups=32, num_channels=ch, eps=1e-6, affine=True)
        self.conv_out = torch.nn.Conv2d(ch, cfg.in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(range(self.levels)):
            for i in range(self.blocks):
                h = self.up[level].block[i](h)
                if len(self.up[level].attn) > 0:
                    h = self.up[level].attn[i](h)
            if level != 0:
                h = self.up[level].upsample(h)
        h = self.norm_out(h)
        return self.conv_out(h * torch.sigmoid(h))


class RefDecodePath(torch.nn.Module):
    """codes → codebook vectors → post_quant_conv → decoder, with the checkpoint's names."""

    def __init__(self, cfg: ChameleonVQVAEConfig):
        super().__init__()
        self.quantize = torch.nn.Module()
        self.quantize.embedding = torch.nn.Embedding(cfg.num_embeddings, cfg.embed_dim)
        self.post_quant_conv = torch.nn.Conv2d(cfg.embed_dim, cfg.latent_channels, 1)
        self.decoder = RefDecoder(cfg)

    def forward(self, codes, grid):
        q = self.quantize.embedding(codes).reshape(codes.shape[0], *grid, -1).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(q))


def decoder_case() -> None:
    out = GOLDEN / "chameleon_vqvae_decoder"
    gen = torch.Generator().manual_seed(1402)
    cfg = ChameleonVQVAEConfig(**DECODER_CASE)
    ref = RefDecodePath(cfg).eval()
    randomise(ref, gen)
    grid = (cfg.resolution // 2 ** (len(cfg.channel_multiplier) - 1),) * 2
    codes = torch.randint(0, cfg.num_embeddings, (BATCH, grid[0] * grid[1]), generator=gen)
    with torch.no_grad():
        pixels = ref(codes, grid)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg.save_pretrained(out)
    weights = {n: p.detach().to(torch.bfloat16).contiguous() for n, p in ref.named_parameters()}
    save_file(weights, out / "decoder.safetensors", metadata={"format": "pt"})
    save_file({"codes": codes.contiguous(), "pixels": pixels.contiguous()}, out / "expected.safetensors")
    print(
        f"chameleon_vqvae_decoder: {sum(t.numel() for t in weights.values())} weights, "
        f"pixels {tuple(pixels.shape)}, |pixels|max {pixels.abs().max().item():.3f}"
    )


def main() -> None:
    encoder_case()
    decoder_case()
    for case in ("chameleon_vqvae", "chameleon_vqvae_decoder"):
        size = sum(f.stat().st_size for f in (GOLDEN / case).iterdir())
        print(f"{case}: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
