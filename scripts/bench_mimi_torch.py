#!/usr/bin/env python3
"""Times transformers' MimiModel(MimiConfig(frame_rate=12.5)) — the kyutai/mimi shape, random
weights — encoding a 10 s clip at 24 kHz (batch 1, torch CPU, float32, inference_mode), and saves
that model with `save_pretrained` to --out so that Tritter's `mimi_speed` test
(model/tests/mimi_speed.rs) times the same weights on the same clip (`bench_io.safetensors`:
`samples`, HF's `audio_codes` and `audio_values` = `decode(audio_codes)`, which the test compares
with its own):

    TORCHDYNAMO_DISABLE=1 .venv/bin/python scripts/bench_mimi_torch.py --out DIR [--n-q 8]
    MIMI_BENCH_DIR=DIR MIMI_BENCH_NQ=8 cargo test -p tritter-model --test mimi_speed \
        -- --ignored --nocapture

Threads = number of cores. Prints one JSON line: {"ms_median", "ms_min", "threads", "runs",
"n_q", "frames", "params"}.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import MimiConfig, MimiModel  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-q", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = MimiModel(MimiConfig(frame_rate=12.5)).eval()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("embed_sum"):
                buf.copy_(torch.randn(buf.shape) * 0.05)
        for m in model.modules():
            if hasattr(m, "_embed"):
                m._embed = None
    model.save_pretrained(args.out)
    x = torch.randn(1, 1, 240_000) * 0.1
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            codes = model.encode(x, num_quantizers=args.n_q).audio_codes
            dt = (time.perf_counter() - t0) * 1e3
            if i >= args.warmup:
                times.append(dt)
    # The clip, HF's codes and their decoding, for the Rust test to compare with its own.
    with torch.inference_mode():
        audio = model.decode(codes).audio_values
    save_file({"samples": x.contiguous(), "audio_codes": codes.contiguous(),
               "audio_values": audio.contiguous()},
              os.path.join(args.out, "bench_io.safetensors"))
    print(json.dumps({
        "ms_median": round(statistics.median(times), 1), "ms_min": round(min(times), 1),
        "threads": threads, "runs": args.runs, "n_q": args.n_q, "frames": codes.shape[-1],
        "params": model.num_parameters(),
    }))


if __name__ == "__main__":
    main()
