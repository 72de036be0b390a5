#!/usr/bin/env python3
"""Times transformers' EncodecModel at facebook/encodec_24khz's config (EncodecConfig()'s
defaults, built in code: random weights, nothing downloaded) encoding a 10 s mono clip at 24 kHz
with bandwidth 6 kbps (8 codebooks): torch CPU, float32, batch 1, under inference_mode. Compare
with Tritter's `audio::encodec::bench::encode_report` (`tritter bench audio`) in the same sitting.

    TORCHDYNAMO_DISABLE=1 .venv/bin/python scripts/bench_encodec_torch.py [--runs N] [--threads N]

Prints one JSON line: {"ms_median", "ms_min", "rtf", "threads", "runs", "frames", "codebooks",
"params"} (rtf: median encode time / 10 s; params: parameters plus the codebooks, the EMA buffers
aside, as Tritter's `param_count` counts them).
"""

import argparse
import json
import math
import os
import statistics
import time

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
from transformers import EncodecConfig, EncodecModel  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = EncodecConfig()  # facebook/encodec_24khz's values
    model = EncodecModel(cfg).eval()
    with torch.no_grad():
        for layer in model.quantizer.layers:  # HF initialises the codebooks to zeros
            layer.codebook.embed.normal_()
    n = int(args.seconds * cfg.sampling_rate)
    t = torch.arange(n, dtype=torch.float32) / cfg.sampling_rate
    x = (0.3 * torch.sin(2 * math.pi * 220 * t) + 0.1 * torch.sin(2 * math.pi * 1330 * t)).reshape(1, 1, n)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            codes = model.encode(x, bandwidth=6.0).audio_codes
            dt = (time.perf_counter() - t0) * 1e3
            if i >= args.warmup:
                times.append(dt)
    params = sum(p.numel() for p in model.parameters())
    params += sum(b.numel() for n_, b in model.named_buffers() if n_.endswith("codebook.embed"))
    median = statistics.median(times)
    print(json.dumps({"ms_median": round(median, 2), "ms_min": round(min(times), 2),
                      "rtf": round(median / (args.seconds * 1e3), 5), "threads": args.threads,
                      "runs": args.runs, "frames": codes.shape[-1], "codebooks": codes.shape[-2],
                      "params": params}))


if __name__ == "__main__":
    main()
