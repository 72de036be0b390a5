#!/usr/bin/env python3
"""Compare Tritter's MinHash-LSH near-dedup with datasketch's MinHashLSH on the same documents.

Runs (or reads) the Rust benchmark `dedup_bench`, which exports the documents that survive its
quality filters and exact dedup, then runs datasketch with identical parameters (5-word
shingles split on [^A-Za-z_0-9], lower-cased; 256 permutations; the same bands x rows; pairs
verified by estimated Jaccard >= threshold) on exactly those documents. Reports the agreement
of the duplicate pairs (with exact Jaccard as the arbiter for disagreements) and the speed ratio.

    python3 scripts/bench_dedup.py DIR [--rust-json OUT.json]
    (DIR defaults to this Python's standard library; datasketch must be importable)
"""
import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import time

from datasketch import MinHash, MinHashLSH

NON_ALPHA = re.compile(r"[^A-Za-z_0-9]+")


def shingles(text, n, lowercase):
    words = [w for w in NON_ALPHA.split(text) if w]
    if lowercase:
        words = [w.lower() for w in words]
    if not words:
        return set()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--rust-json", help="reuse this dedup_bench output instead of running it")
    ap.add_argument("--profile", default="release", help="cargo profile for dedup_bench")
    args = ap.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = args.rust_json or os.path.join(root, "target", "dedup_bench.json")
    if not args.rust_json:
        cmd = ["cargo", "run", "--profile", args.profile, "-q", "-p", "tritter-model",
               "--example", "dedup_bench", "--", args.dir, out]
        subprocess.run(cmd, cwd=root, check=True)
    rust = json.load(open(out))
    p = rust["params"]
    n, lower, t = p["shingle_size"], p["lowercase"], p["threshold"]
    paths = rust["kept_paths"]
    texts = []
    for path in paths:
        with open(path, "rb") as f:
            texts.append(f.read().decode("utf-8"))

    def run_datasketch(seed):
        start = time.perf_counter()
        lsh = MinHashLSH(threshold=t, num_perm=p["num_perm"], params=(p["bands"], p["rows"]))
        sets, mhs = [], []
        for i, text in enumerate(texts):
            s = shingles(text, n, lower)
            sets.append(s)
            if not s:
                mhs.append(None)
                continue
            m = MinHash(num_perm=p["num_perm"], seed=seed)
            m.update_batch([x.encode("utf-8") for x in s])
            mhs.append(m)
            lsh.insert(i, m)
        pairs = set()
        for i, m in enumerate(mhs):
            if m is None:
                continue
            for j in lsh.query(m):
                if j > i and m.jaccard(mhs[j]) >= t:
                    pairs.add((paths[i], paths[j]))
        return pairs, time.perf_counter() - start, sets

    py_pairs, py_s, sets = run_datasketch(p["seed"])
    # The same implementation at another seed: how much two correct runs differ by chance.
    py_pairs2, _, _ = run_datasketch(p["seed"] + 1)
    signed = sum(bool(x) for x in sets)

    def agreement(x, y):
        return len(x & y) / len(x | y) if x | y else 1.0

    rs_pairs = {(a, b) for a, b, _ in rust["pairs"]}
    both, only_rs, only_py = rs_pairs & py_pairs, rs_pairs - py_pairs, py_pairs - rs_pairs
    union = rs_pairs | py_pairs
    index = {path: i for i, path in enumerate(paths)}

    def exact(pair):
        a, b = sets[index[pair[0]]], sets[index[pair[1]]]
        return len(a & b) / len(a | b)

    def above(pairs):
        return sum(exact(q) >= t for q in pairs)

    bins = [(0.0, 0.6), (0.6, t), (t, 0.8), (0.8, 1.01)]

    def binned(pairs):
        return [sum(lo <= exact(q) < hi for q in pairs) for lo, hi in bins]

    rs_rate = rust["minhash_lsh_kept"]["docs_per_s"]
    rs1_rate = rust["minhash_lsh_kept"]["docs_per_s_1_thread"]
    py_rate = len(texts) / py_s
    report = {
        "documents": rust["documents"],
        "kept_after_filter_and_exact": len(texts),
        "with_shingles": signed,
        "bands_rows": [p["bands"], p["rows"]],
        "pairs_rust": len(rs_pairs),
        "pairs_datasketch": len(py_pairs),
        "pairs_both": len(both),
        "pairs_only_rust": len(only_rs),
        "pairs_only_datasketch": len(only_py),
        "pair_agreement_jaccard": agreement(rs_pairs, py_pairs),
        "datasketch_seed_vs_seed_agreement": agreement(py_pairs, py_pairs2),
        "exact_jaccard_ge_threshold": {
            "both": above(both), "only_rust": above(only_rs), "only_datasketch": above(only_py),
        },
        "by_exact_jaccard": {
            "bins": ["<0.6", "0.6-%g" % t, "%g-0.8" % t, ">=0.8"],
            "both": binned(both), "only_rust": binned(only_rs), "only_datasketch": binned(only_py),
        },
        "rust_full_docs_per_s": rust["full"]["docs_per_s"],
        "rust_threads": rust["threads"],
        "rust_minhash_lsh_docs_per_s": rs_rate,
        "rust_minhash_lsh_docs_per_s_1_thread": rs1_rate,
        "datasketch_seconds": py_s,
        "datasketch_docs_per_s": py_rate,
        "speed_ratio": rs_rate / py_rate,
        "speed_ratio_1_thread": rs1_rate / py_rate,
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
