#!/usr/bin/env python3
"""Calibrating latent mode's confidence signal on a latent-trained model.

The signal (src/engine/model/latent.rs) is the top-1 cosine of a chain's weakest thought: each
continuous thought rounded to its nearest token embedding, the smallest of those cosines. This
script asks the real binary (`tritter -p QUESTION --json --latent on --model DIR`) each held-out
question of a `{question, steps, answer}` JSONL file, reads the thoughts and the reply from the
JSON, and reports how the signal is spread over right and wrong answers, and what accuracy and
coverage each threshold would give (answers whose chain scores under the threshold would go to
token mode under `/latent auto`), and how often the reply names one of the question's two options
at all.

Usage:
    python3 scripts/latent_confidence.py --bin target/release/tritter --model assets/latent-demo \\
        --data held-out.jsonl [--n 200] [--json]
Python standard library only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def ask(binary: str, model: str, question: str) -> dict:
    out = subprocess.run(
        [binary, "--model", model, "--latent", "on", "-p", question, "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )
    if out.returncode != 0:
        raise SystemExit(f"tritter failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def quantiles(xs: list[float]) -> list[float]:
    if not xs:
        return []
    s = sorted(xs)
    return [round(s[min(len(s) - 1, int(q * len(s)))], 3) for q in (0.0, 0.1, 0.5, 0.9)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/tritter")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    valid: list[bool] = []
    with open(a.data) as f:
        records = [json.loads(line) for line in f if line.strip()][: a.n]
    for r in records:
        got = ask(a.bin, a.model, r["question"])
        thoughts = got.get("thoughts") or []
        weakest = min((t[0]["score"] for t in thoughts if t), default=0.0)
        lines = [ln.strip() for ln in got["reply"].strip().splitlines() if ln.strip()]
        right = bool(lines) and lines[-1] == r["answer"].strip()
        # "... Is Tom a A or a B?": does the reply name the entity and one of the two options?
        ent, opts = r["question"].rsplit("Is ", 1)[1].split(" a ", 1)
        a_opt, b_opt = opts.rstrip("?").split(" or a ", 1)
        named = bool(lines) and lines[-1] in (f"{ent} is a {a_opt}.", f"{ent} is a {b_opt}.")
        valid.append(named)
        rows.append((weakest, right))
    right = [w for w, ok in rows if ok]
    wrong = [w for w, ok in rows if not ok]
    table = []
    for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        kept = [(w, ok) for w, ok in rows if w >= t]
        table.append({
            "threshold": t,
            "kept": len(kept),
            "accuracy_kept": round(sum(ok for _, ok in kept) / len(kept), 3) if kept else None,
        })
    report = {
        "n": len(rows),
        "accuracy": round(len(right) / max(1, len(rows)), 3),
        "names_an_option": round(sum(valid) / max(1, len(valid)), 3),
        "weakest_cosine_right_q0_10_50_90": quantiles(right),
        "weakest_cosine_wrong_q0_10_50_90": quantiles(wrong),
        "by_threshold": table,
    }
    if a.json:
        print(json.dumps(report))
    else:
        json.dump(report, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
