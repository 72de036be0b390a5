#!/usr/bin/env python3
"""Continues training a Tritter model in PyTorch, at any scale: transformers + accelerate (FSDP).

Takes the bf16 export of a Tritter checkpoint (`tritter export --model DIR --format hf --out IN
--form bf16`: master weights, `autobitlinear` / `online`), trains it further with the objective
Tritter's trainer uses — next-token cross-entropy with BitNet b1.58 QAT in the forward
(absmean ternary weights and per-token int8 activations, straight-through gradients: the online
`AutoBitLinear` of transformers), AdamW, linear warm-up then cosine decay, gradient clipping — and
saves the result in the same layout, which `tritter --model OUT` loads as it is:

    --form bf16    bf16 master weights (autobitlinear / online): train further again from here
    --form packed  uint8 packed ternary + weight_scale (bitlinear / offline): inference

One process on the CPU (the test), or under `accelerate launch` / `torchrun` across GPUs and
nodes: the script only calls `Accelerator`, so data parallelism, FSDP sharding and mixed
precision come from the launch (docs/SCALE.md has the multi-node commands).

Usage:
    python scripts/continue_pytorch.py --model IN --out OUT --data a.txt b.jsonl --steps 1000
    accelerate launch --config_file fsdp.yaml scripts/continue_pytorch.py --model IN ...

Data: plain-text files (one document per file) or JSONL with a `text` field (one document per
line), tokenised with IN's tokenizer, each document followed by the eos token, concatenated and
cut into windows of --seq + 1 tokens. `--random-data` draws uniform ids instead (models without
a tokenizer; tests). Prints one JSON object at the end: losses, steps, world size, seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

# HF's BitNet quantisers are decorated with @torch.compile; on a CPU without a C++ toolchain run
# them eagerly (same ops). On GPUs set TORCHDYNAMO_DISABLE=0 to let them compile.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoTokenizer, BitNetForCausalLM  # noqa: E402
from transformers.integrations.bitnet import pack_weights  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
COPIED = ("tokenizer.json", "tokenizer_config.json", "latent.json")


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def token_stream(a: argparse.Namespace, cfg: dict) -> torch.Tensor:
    """The training tokens, one long 1-D stream."""
    g = torch.Generator().manual_seed(a.seed)
    if a.random_data:
        return torch.randint(0, cfg["vocab_size"], (a.random_data,), generator=g)
    if a.shards:
        # Already tokenised by `tritter --train --prepare-only` (the export's tokenizer.json).
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from read_shards import ShardSet
        return torch.tensor(ShardSet(a.shards).token_stream("train"), dtype=torch.int64)
    if not a.data:
        fail("give --data FILE... (text or JSONL with `text`), --shards RUN/data or --random-data N")
    if not (a.model / "tokenizer.json").exists():
        fail(f"{a.model} has no tokenizer.json; use --random-data N or export a model with one")
    tok = AutoTokenizer.from_pretrained(str(a.model))
    eos = cfg.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    ids: list[int] = []
    for path in a.data:
        text = path.read_text(encoding="utf-8")
        docs = [json.loads(line)["text"] for line in text.splitlines() if line.strip()] \
            if path.suffix == ".jsonl" else [text]
        for d in docs:
            ids.extend(tok(d, add_special_tokens=False)["input_ids"])
            if eos is not None:
                ids.append(int(eos))
    return torch.tensor(ids, dtype=torch.int64)


def windows(stream: torch.Tensor, seq: int) -> torch.Tensor:
    n = (stream.numel() - 1) // seq
    if n < 1:
        fail(f"the data has {stream.numel()} tokens, fewer than one window of --seq {seq} + 1")
    return torch.stack([stream[i * seq:(i + 1) * seq + 1] for i in range(n)])


def lr_at(step: int, a: argparse.Namespace) -> float:
    """Linear warm-up to 1, then cosine to --min-lr-ratio (Tritter's default schedule)."""
    if step < a.warmup:
        return (step + 1) / a.warmup
    t = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def saved_tensors(state: dict, cfg: dict, form: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under HF names: bf16 master weights, or packed ternary."""
    out = {}
    for name, t in state.items():
        if name == "lm_head.weight" and cfg.get("tie_word_embeddings", True):
            continue
        t = t.detach().float().cpu()
        is_linear = name.startswith("model.layers.") and name.split(".")[-2] in LINEARS
        if form == "packed" and is_linear:
            # HF WeightQuant: scale = 1 / mean|W|, round half to even, clamp; bitlinear divides
            # by weight_scale, so it is stored as that scale.
            scale = 1.0 / t.abs().mean().clamp(min=1e-5)
            q = (t * scale).round().clamp(-1, 1)
            out[name] = pack_weights(q.to(torch.int8)).contiguous()
            out[name[: -len("weight")] + "weight_scale"] = scale.reshape(1).to(torch.bfloat16)
        else:
            out[name] = t.to(torch.bfloat16).contiguous()
    return out


def save(a: argparse.Namespace, state: dict, cfg: dict) -> None:
    """Writes OUT atomically: a temporary sibling directory, then a rename."""
    cfg = dict(cfg)
    q = dict(cfg.get("quantization_config") or {})
    q.update({"quant_method": "bitnet",
              "linear_class": "bitlinear" if a.form == "packed" else "autobitlinear",
              "quantization_mode": "offline" if a.form == "packed" else "online"})
    cfg["quantization_config"] = q
    cfg["dtype"] = "bfloat16"
    out = a.out.resolve()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(saved_tensors(state, cfg, a.form), str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in COPIED:
        if (a.model / f).exists():
            shutil.copyfile(a.model / f, tmp / f)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="bf16 export (tritter export --form bf16)")
    ap.add_argument("--out", type=Path, required=True, help="where to save (replaced if present)")
    ap.add_argument("--form", choices=("bf16", "packed"), default="bf16")
    ap.add_argument("--data", type=Path, nargs="*", default=[])
    ap.add_argument("--shards", type=Path, metavar="RUN/data",
                    help="train on the train split of tritter --train --prepare-only's shards")
    ap.add_argument("--random-data", type=int, default=0, metavar="N", help="N uniform random ids")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8, help="sequences per process per micro-step")
    ap.add_argument("--accum", type=int, default=1, help="gradient accumulation micro-steps")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--betas", default="0.9,0.95")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def main() -> int:
    a = parse()
    t0 = time.time()
    cfg = json.loads((a.model / "config.json").read_text())
    q = cfg.get("quantization_config") or {}
    if (q.get("linear_class"), q.get("quantization_mode")) != ("autobitlinear", "online"):
        fail(f"{a.model} is not the bf16 form (autobitlinear / online); export it with "
             "`tritter export --format hf --form bf16`")
    acc = Accelerator(gradient_accumulation_steps=a.accum)
    set_seed(a.seed)
    # float32 master weights; `accelerate launch --mixed_precision bf16` runs the forward in bf16.
    model = BitNetForCausalLM.from_pretrained(str(a.model), dtype=torch.float32)
    model.train()
    data = windows(token_stream(a, cfg), a.seq)
    loader = torch.utils.data.DataLoader(
        data, batch_size=a.batch, shuffle=True, drop_last=False,
        generator=torch.Generator().manual_seed(a.seed))
    b1, b2 = (float(x) for x in a.betas.split(","))
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(b1, b2), eps=1e-8,
                            weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, a))
    model, opt, loader, sched = acc.prepare(model, opt, loader, sched)
    losses: list[float] = []
    step, it = 0, iter(loader)
    while step < a.steps:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        with acc.accumulate(model):
            loss = model(input_ids=batch, labels=batch).loss
            acc.backward(loss)
            if acc.sync_gradients and a.grad_clip > 0:
                acc.clip_grad_norm_(model.parameters(), a.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad()
        if acc.sync_gradients:
            losses.append(acc.gather(loss.detach().reshape(1)).mean().item())
            step += 1
    state = acc.get_state_dict(model)
    if acc.is_main_process:
        save(a, state, cfg)
        print(json.dumps({"losses": losses, "steps": step, "world_size": acc.num_processes,
                          "form": a.form, "out": str(a.out), "seconds": round(time.time() - t0, 2)}))
    acc.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
