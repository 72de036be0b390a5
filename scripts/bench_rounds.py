#!/usr/bin/env python3
"""Runs `tritter bench attention --json` several times and summarises each row over the runs.

On a shared, noisy host one report says little: a neighbour that takes a core for a few seconds
slows every row measured meanwhile, and the copy bandwidth each report divides by is itself one
measurement. This runs the report `--runs` times (several binaries alternated run by run, so each
sees the same conditions) and prints, per binary and row (cache, window, context), the median,
smallest and largest `of_copy_bandwidth` and the median µs per token, plus how many runs read at
or above `--goal` of copy. `--json FILE` also writes every report and the summary.

Usage (from anywhere):
    python3 scripts/bench_rounds.py --runs 10 --threads 2 BIN [BIN ...]
where each BIN is a `tritter` binary, optionally prefixed by environment assignments:
    python3 scripts/bench_rounds.py --runs 6 ./a 'TRITTER_ATTN_KERNELS=avx2 ./a'
Standard library only.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys


def run_once(spec, threads):
    """One report from `spec` ("VAR=value ... BINARY"); raises with the command's stderr."""
    words = shlex.split(spec)
    env = dict(os.environ)
    while words and "=" in words[0] and not words[0].startswith(("/", ".")):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if not words:
        raise SystemExit(f"bench_rounds: no binary in {spec!r}")
    cmd = words + ["bench", "attention", "--json", "--threads", str(threads)]
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    except OSError as e:
        raise SystemExit(f"bench_rounds: cannot run {words[0]}: {e.strerror}") from None
    if res.returncode != 0:
        raise SystemExit(f"bench_rounds: {' '.join(cmd)} failed: {res.stderr.strip()}")
    return json.loads(res.stdout)


def row_key(row):
    return (row["cache"], row["window"], row["context"])


def summarise(reports, goal):
    """Per row key: the runs' of-copy ratios and µs per token, summarised."""
    rows = {}
    for rep in reports:
        for row in rep["decode"]:
            entry = rows.setdefault(row_key(row), {"ratio": [], "us": []})
            entry["ratio"].append(row["of_copy_bandwidth"])
            entry["us"].append(row["us_per_token"])
    out = []
    for (cache, window, context), e in rows.items():
        out.append(
            {
                "cache": cache,
                "window": window,
                "context": context,
                "of_copy_median": statistics.median(e["ratio"]),
                "of_copy_min": min(e["ratio"]),
                "of_copy_max": max(e["ratio"]),
                "runs_at_goal": sum(r >= goal for r in e["ratio"]),
                "runs": len(e["ratio"]),
                "us_per_token_median": statistics.median(e["us"]),
            }
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bins", nargs="+", help="tritter binaries, optionally with VAR=value before")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--goal", type=float, default=0.5, help="of-copy ratio counted per row")
    ap.add_argument("--json", help="also write every report and the summary here")
    args = ap.parse_args()
    if args.runs < 1:
        raise SystemExit("bench_rounds: --runs must be at least 1")
    reports = {b: [] for b in args.bins}
    for i in range(args.runs):
        # The first binary of each run alternates, so none always runs after the same one.
        order = args.bins[i % len(args.bins):] + args.bins[: i % len(args.bins)]
        for b in order:
            reports[b].append(run_once(b, args.threads))
        print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
    summary = {}
    for b, reps in reports.items():
        copy = [r["copy_bandwidth_gbs"] for r in reps]
        summary[b] = {"copy_gbs": copy, "rows": summarise(reps, args.goal)}
        print(f"{b}: {args.runs} runs, {args.threads} threads, copy GB/s "
              f"{min(copy):.1f}-{max(copy):.1f}")
        print("  cache   window  context  of copy: median (min-max)  runs >= goal  us/token median")
        for r in summary[b]["rows"]:
            print(f"  {r['cache']:6} {r['window']:7} {r['context']:8}  "
                  f"{r['of_copy_median']:.2f} ({r['of_copy_min']:.2f}-{r['of_copy_max']:.2f})"
                  f"{'':13}{r['runs_at_goal']:2}/{r['runs']:<2}{'':9}{r['us_per_token_median']:,.0f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"reports": reports, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
