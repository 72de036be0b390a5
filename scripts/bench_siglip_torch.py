#!/usr/bin/env python3
"""Times transformers' SiglipVisionModel(SiglipVisionConfig()) — ViT-B/16 at 224², random
weights, torch CPU, float32, batch 1, under inference_mode — for comparison with Tritter's
`vision_speed` test (model/tests/vision_speed.rs). HF's forward also runs the pooling head, which
Tritter does not have; it is one query over 196 tokens, well under 1% of the time.

    TORCHDYNAMO_DISABLE=1 .venv/bin/python scripts/bench_siglip_torch.py [--runs N] [--warmup N]

Threads = number of cores. Prints one JSON line: {"ms_median", "ms_min", "threads", "runs",
"params_tower"} (params_tower: the tower without the pooling head, for Tritter's param_count).
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
from transformers import SiglipVisionConfig, SiglipVisionModel  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SiglipVisionModel(SiglipVisionConfig()).eval()
    px = torch.randn(1, 3, 224, 224)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            model(pixel_values=px)
            dt = (time.perf_counter() - t0) * 1e3
            if i >= args.warmup:
                times.append(dt)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))
    print(json.dumps({"ms_median": round(statistics.median(times), 2), "ms_min": round(min(times), 2),
                      "threads": threads, "runs": args.runs, "params_tower": params}))


if __name__ == "__main__":
    main()
