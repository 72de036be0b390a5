#!/usr/bin/env python3
"""Loads a Tritter export with Hugging Face transformers and compares its logits with Tritter's.

`tritter export --format hf` writes a checkpoint that `BitNetForCausalLM.from_pretrained(DIR)`
must load as it is. This script loads it that way (float32 compute, eager attention), runs one
forward pass over the ids, and compares with the logits `tritter logits --model DIR --ids ...`
wrote. With a tokenizer in DIR it also loads it through `AutoTokenizer` and renders a fixed
conversation with `apply_chat_template`, so the caller can compare it with Tritter's format.

Usage:
    python scripts/check_export.py --model DIR --logits tritter.safetensors --ids 1,2,3 [--tol 1e-4]

Prints one JSON object: rel (max|d|/max|ref|), max_abs, argmax_agree, linear_class,
quantization_mode, chat (the rendered conversation or null), ok. Exit 0 when rel <= tol.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# HF's BitNet quantisers are decorated with @torch.compile; eager mode runs the same ops on CPU
# without a C++ toolchain (as scripts/make_golden.py does).
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoTokenizer, BitNetForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

# The conversation rendered for the chat-template check (the Rust test renders the same).
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello\nthere"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "fn main() {}"},
]


def hf_logits(model_dir: Path, ids: list[int]) -> tuple[torch.Tensor, dict]:
    model = BitNetForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    q = model.config.quantization_config
    info = {
        "linear_class": getattr(q, "linear_class", None),
        "quantization_mode": getattr(q, "quantization_mode", None),
    }
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.int64)).logits[0]
    return out.float(), info


def chat(model_dir: Path) -> str | None:
    if not (model_dir / "tokenizer.json").exists():
        return None
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="the exported checkpoint")
    ap.add_argument("--logits", type=Path, required=True, help="Tritter's f32 `logits` [T, V]")
    ap.add_argument("--ids", required=True, help="comma-separated token ids")
    ap.add_argument("--tol", type=float, default=1e-4, help="max|d|/max|ref| allowed")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    ids = [int(x) for x in a.ids.split(",") if x.strip()]
    t0 = time.time()
    ref, info = hf_logits(a.model, ids)
    got = load_file(str(a.logits))["logits"].float()
    if got.shape != ref.shape:
        print(f"error: logits shape {list(got.shape)} != transformers' {list(ref.shape)}",
              file=sys.stderr)
        return 1
    d = (got - ref).abs().max().item()
    rel = d / max(ref.abs().max().item(), 1e-30)
    res = {
        "rel": rel,
        "max_abs": d,
        "argmax_agree": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
        **info,
        "chat": chat(a.model),
        "seconds": round(time.time() - t0, 2),
        "ok": rel <= a.tol,
    }
    print(json.dumps(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
