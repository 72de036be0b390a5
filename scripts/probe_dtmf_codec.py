#!/usr/bin/env python3
"""How well a codec's codes tell the ten DTMF keys apart: the check to run before training the
audio demo's text model on a codec (scripts/train-audio-demo.sh runs it).

Writes one clip of steady tones — every key at -20, -10 and 0 dB with white noise at 20 dB SNR,
300 ms each, 100 ms of silence between — at the codec's rate, encodes it with
`tritter encode audio --model CODEC --codebooks N`, and for the frames well inside each tone
(after 3 frames, before the last one) reports each codebook's *key purity*: the share of frames
whose code's most frequent key is their own key (1.0: every code names one key; 0.1: chance for
ten keys when codes carry no key), and the same for the tuple of the first N codes. The clip
holds every tone twice with different noise: the code → key map is read off the first pass and
scored on the second (a code not seen in the first pass counts as wrong), so purity cannot come
from codes that each occur once.

    .venv/bin/python scripts/probe_dtmf_codec.py --codec DIR [--codebooks 2] [--tritter BIN]

Prints one JSON line: {"codebook_purity": [...], "joint_purity", "codes_used": [...], "frames"}.
Needs numpy and safetensors (the reference venv, scripts/requirements-golden.txt).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_dtmf import KEYS, tone, wav_bytes  # noqa: E402


def probe_clip(rate: int, seed: int = 5) -> tuple[np.ndarray, list[tuple[str | None, int, int]]]:
    rng = np.random.default_rng(seed)
    parts, spans = [], []
    for rep in range(2):
        for key in sorted(KEYS):
            for gain in (-20.0, -10.0, 0.0):
                n = int(0.3 * rate)
                x = tone(key, n, rate, gain)
                x = x + rng.standard_normal(n) * np.sqrt(np.mean(x**2)) / 10
                parts.append(x)
                spans.append((key, n, rep))
                gap = int(0.1 * rate)
                parts.append(np.zeros(gap))
                spans.append((None, gap, rep))
    return np.concatenate(parts), spans


def purity(frames: list[tuple[str, tuple[int, ...], int]], key_of) -> float:
    by = collections.defaultdict(collections.Counter)
    for k, codes, rep in frames:
        if rep == 0:
            by[key_of(codes)][k] += 1
    best = {code: c.most_common(1)[0][0] for code, c in by.items()}
    scored = [(k, codes) for k, codes, rep in frames if rep == 1]
    right = sum(best.get(key_of(codes)) == k for k, codes in scored)
    return right / max(len(scored), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--codec", type=Path, required=True, help="codec checkpoint folder")
    ap.add_argument("--codebooks", type=int, default=2)
    ap.add_argument("--tritter", default="target/release/tritter")
    args = ap.parse_args()
    cfg = json.loads((args.codec / "config.json").read_text())
    rate = int(cfg["sampling_rate"])
    hop = int(np.prod(cfg["upsampling_ratios"]))
    x, spans = probe_clip(rate)
    with tempfile.TemporaryDirectory() as tmp:
        wav, out = Path(tmp) / "probe.wav", Path(tmp) / "probe.safetensors"
        wav.write_bytes(wav_bytes(x, rate))
        subprocess.run([args.tritter, "encode", "audio", "--model", str(args.codec), "--audio",
                        str(wav), "--codebooks", str(args.codebooks), "--out", str(out)],
                       check=True)
        codes = load_file(str(out))["codes"]
    frames, pos = [], 0
    for key, n, rep in spans:
        if key is not None:
            frames += [(key, tuple(int(c) for c in codes[:, t]), rep)
                       for t in range(pos // hop + 3, (pos + n) // hop - 1)]
        pos += n
    report = {
        "codebook_purity": [round(purity(frames, lambda c, q=q: c[q]), 3)
                            for q in range(codes.shape[0])],
        "joint_purity": round(purity(frames, lambda c: c), 3),
        "codes_used": [len({c[q] for _, c, _ in frames}) for q in range(codes.shape[0])],
        "frames": len(frames),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
