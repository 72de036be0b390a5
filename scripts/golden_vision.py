#!/usr/bin/env python3
"""Golden fixtures for Tritter's vision path (model/src/vision/), from HF transformers.

Writes, under tests/golden/:

* siglip_tiny/        a random tiny SiglipVisionModel (save_pretrained), a
                      preprocessor_config.json, three input PNGs, and expected.safetensors:
                      the SiglipImageProcessor pixel_values of each PNG and the tower's
                      last_hidden_state for the first.
* siglip_full_tiny/   a random tiny SiglipModel (vision + text towers, as the Hub's
                      google/siglip-* checkpoints are laid out: vision_model.*, text_model.*,
                      logit_scale, logit_bias) and the vision tower's last_hidden_state for
                      siglip_tiny's pixel_values.
* idefics3_connector/ transformers' Idefics3Connector (scale_factor 4) on a random config
                      whose vision width is siglip_tiny's, its weight, and its output for
                      siglip_tiny's last_hidden_state.

Deterministic: fixed seeds, CPU, float32, one thread. Run from the repository root:
    TORCHDYNAMO_DISABLE=1 .venv/bin/python scripts/golden_vision.py
"""

import json
import os

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import transformers  # noqa: E402
from transformers import Idefics3Config, SiglipConfig, SiglipVisionConfig, SiglipVisionModel  # noqa: E402
from transformers import SiglipModel  # noqa: E402
from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector  # noqa: E402
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
TOWER = dict(
    image_size=32,
    patch_size=4,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
)


def photo(w, h, seed):
    """A photo-like RGB image: smooth colour gradients, soft shapes, a few sharp edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / w * 3.1 + 0.5) * np.cos(y / h * 2.3)
    g = 40 + 180 * (x + y) / (w + h)
    b = 200 - 150 * np.exp(-(((x - 0.6 * w) / (0.3 * w)) ** 2 + ((y - 0.4 * h) / (0.3 * h)) ** 2))
    img = np.stack([r, g, b], -1) + rng.normal(0, 4, (h, w, 3))
    im = Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    d.ellipse([w * 0.1, h * 0.15, w * 0.45, h * 0.7], fill=(240, 220, 30))
    d.rectangle([w * 0.55, h * 0.55, w * 0.9, h * 0.9], fill=(20, 30, 160))
    d.line([0, h - 1, w - 1, 0], fill=(255, 255, 255), width=2)
    return im


def rgba(size, seed):
    """An RGBA image with graded transparency (exercises compositing onto white)."""
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    px[: size // 4, :, 3] = 255
    px[size // 4 : size // 2, :, 3] = 0
    return Image.fromarray(px, "RGBA")


def tower_case(proc):
    out = os.path.join(ROOT, "siglip_tiny")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = SiglipVisionModel(SiglipVisionConfig(**TOWER)).eval()
    # Non-trivial norms and biases, so a misplaced or transposed one shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    images = {
        "image_40x28.png": photo(40, 28, 1),  # wider and lower than 32²: shrink + enlarge
        "photo_96x72.png": photo(96, 72, 2),  # shrink 3x / 2.25x
        "rgba_32.png": rgba(32, 3),  # at size: compositing only, no resampling
    }
    expected = {}
    for name, im in images.items():
        im.save(os.path.join(out, name))
        again = Image.open(os.path.join(out, name))
        pv = proc(images=again, return_tensors="pt")["pixel_values"]
        expected["pixel_values" + {"image_40x28.png": "", "photo_96x72.png": "_photo",
                                   "rgba_32.png": "_rgba"}[name]] = pv.contiguous()
    # The photo through PIL's other filters (resample 2 bilinear, 1 lanczos, 0 nearest).
    photo_png = Image.open(os.path.join(out, "photo_96x72.png"))
    for code, label in [(2, "bilinear"), (1, "lanczos"), (0, "nearest")]:
        other = SiglipImageProcessorPil(size={"height": 32, "width": 32}, resample=code)
        pv = other(images=photo_png, return_tensors="pt")["pixel_values"]
        expected["pixel_values_photo_" + label] = pv.contiguous()
    with torch.no_grad():
        hidden = model(pixel_values=expected["pixel_values"]).last_hidden_state
    expected["last_hidden_state"] = hidden.contiguous()
    save_file(expected, os.path.join(out, "expected.safetensors"), metadata={"format": "pt"})
    return model, expected["pixel_values"], hidden


def full_case(pixel_values):
    out = os.path.join(ROOT, "siglip_full_tiny")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1)
    text = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=8, bos_token_id=1,
                eos_token_id=2, pad_token_id=0)
    vision = dict(TOWER, hidden_act="gelu", num_hidden_layers=1, layer_norm_eps=1e-5)
    model = SiglipModel(SiglipConfig(vision_config=vision, text_config=text)).eval()
    model.save_pretrained(out, safe_serialization=True)
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=pixel_values).last_hidden_state
    save_file({"pixel_values": pixel_values.contiguous(), "last_hidden_state": hidden.contiguous()},
              os.path.join(out, "expected.safetensors"), metadata={"format": "pt"})


def connector_case(hidden):
    out = os.path.join(ROOT, "idefics3_connector")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(2)
    cfg = Idefics3Config(
        scale_factor=4,
        vision_config=dict(hidden_size=TOWER["hidden_size"], image_size=32, patch_size=4,
                           num_hidden_layers=1, num_attention_heads=4, intermediate_size=64),
        text_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, vocab_size=64),
    )
    conn = Idefics3Connector(cfg).eval()
    with torch.no_grad():
        result = conn(hidden)
    weights = {"model.connector." + k: v.contiguous() for k, v in conn.state_dict().items()}
    save_file(weights, os.path.join(out, "connector.safetensors"), metadata={"format": "pt"})
    meta = {"scale_factor": cfg.scale_factor, "vision_hidden_size": cfg.vision_config.hidden_size,
            "text_hidden_size": cfg.text_config.hidden_size}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    save_file({"input": hidden.contiguous(), "output": result.contiguous()},
              os.path.join(out, "expected.safetensors"), metadata={"format": "pt"})


def main():
    torch.set_num_threads(1)
    proc = SiglipImageProcessorPil(size={"height": 32, "width": 32})  # bicubic, mean = std = 0.5
    _, pixel_values, hidden = tower_case(proc)
    full_case(pixel_values)
    connector_case(hidden)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: fixtures written")


if __name__ == "__main__":
    main()
