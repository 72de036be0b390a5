#!/usr/bin/env python3
"""Plots and tables of the layer-kind study (docs/RESEARCH.md, issue #23 item 5).

    .venv/bin/pip install -r scripts/requirements-study.txt
    .venv/bin/python scripts/study_plots.py target/runs/study docs/study

Reads what scripts/hybrid-study.sh left in RUNS: KIND[-fp]/metrics.jsonl (training and held-out
loss), decode.json (model/examples/hybrid_decode) and plan.jsonl (`tritter plan --json` of the
2B-scale configs in scripts/study/2b/). Writes OUT/{loss,decode,memory,depth}.png and prints the
tables as Markdown.
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KINDS = ["attention", "mamba2", "gated_deltanet", "depth"]
LABEL = {
    "attention": "attention (10 layers)",
    "mamba2": "9:1 Mamba-2 : attention",
    "gated_deltanet": "9:1 Gated DeltaNet : attention",
    "depth": "recurrent depth (layers 4-5 x r)",
}
LABEL_2B = {
    "attention": "attention (30 layers)",
    "mamba2": "9:1 Mamba-2 (27) : attention (3)",
    "gated_deltanet": "9:1 Gated DeltaNet (27) : attention (3)",
}
COLOR = {"attention": "C0", "mamba2": "C1", "gated_deltanet": "C2", "depth": "C3"}


def metrics(run: Path):
    train, val, last = [], [], None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "val_loss" in r:
            val.append((r["step"], r["val_loss"]))
            last = r
        elif "loss" in r:
            train.append((r["tokens"], r["loss"], r["step"]))
    tokens_per_step = train[-1][0] / train[-1][2]
    return train, [(s * tokens_per_step, v) for s, v in val], last


def main(runs: Path, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    fig, ax = plt.subplots(figsize=(8, 5))
    for kind in KINDS:
        for fp in ("", "-fp"):
            run = runs / f"{kind}{fp}"
            if not (run / "metrics.jsonl").exists() or not (run / "final").is_dir():
                continue  # missing or still training
            train, val, last = metrics(run)
            rows[kind + fp] = (last, train[-1][0])
            # Training loss, 25-step moving average; the held-out loss at the end as a marker.
            k = 25
            xs = [train[i][0] for i in range(k - 1, len(train))]
            ys = [sum(r[1] for r in train[i - k + 1:i + 1]) / k for i in range(k - 1, len(train))]
            ax.plot(xs, ys, ls="--" if fp else "-", color=COLOR[kind],
                    label=LABEL[kind] + (" - full precision" if fp else " - ternary"))
            vx, vy = zip(*val)
            ax.plot(vx, vy, marker="D" if fp else "o", ms=6, ls="none", color=COLOR[kind])
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Training loss (25-step mean), held-out loss at the end (markers)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)

    print("| model | precision | held-out loss | perplexity | tokens |")
    print("|---|---|---|---|---|")
    for name, (last, tokens) in rows.items():
        kind = name.removesuffix("-fp")
        prec = "full precision" if name.endswith("-fp") else "ternary"
        print(f"| {LABEL[kind]} | {prec} | {last['val_loss']:.4f} | {last['val_ppl']:.2f} | {tokens:,} |")
    print()
    print("| kind | ternary | full precision | gap |")
    print("|---|---|---|---|")
    for kind in KINDS:
        if kind in rows and kind + "-fp" in rows:
            t, f = rows[kind][0]["val_loss"], rows[kind + "-fp"][0]["val_loss"]
            print(f"| {LABEL[kind]} | {t:.4f} | {f:.4f} | {t - f:+.4f} |")
    print()

    if "depth" in rows and "val_loss_by_iterations" in rows["depth"][0]:
        by_r = rows["depth"][0]["val_loss_by_iterations"]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(range(1, len(by_r) + 1), by_r, marker="o", color=COLOR["depth"], label=LABEL["depth"])
        if "attention" in rows:
            ax.axhline(rows["attention"][0]["val_loss"], color=COLOR["attention"], ls=":",
                       label=LABEL["attention"])
        ax.axvspan(1, 4, color="grey", alpha=0.1, label="r trained (1-4)")
        ax.set_xlabel("iterations r at evaluation")
        ax.set_ylabel("held-out loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "depth.png", dpi=110)
        print("| r | " + " | ".join(str(r) for r in range(1, len(by_r) + 1)) + " |")
        print("|---|" + "---|" * len(by_r))
        print("| held-out loss | " + " | ".join(f"{x:.4f}" for x in by_r) + " |")
        print()

    decode = runs / "decode.json"
    if decode.exists():
        d = json.loads(decode.read_text())
        fig, ax = plt.subplots(figsize=(7, 4.5))
        print(f"Decode on the candle path, {d['cpu']}, threads: {d['threads']}")
        print()
        print("| model | context | ms/token | tokens/s | KV cache | recurrent states |")
        print("|---|---|---|---|---|---|")
        for kind in KINDS:
            pts = [r for r in d["results"] if r["model"] == kind]
            if not pts:
                continue
            ax.plot([p["context"] for p in pts], [p["tok_per_s"] for p in pts], marker="o",
                    color=COLOR[kind], label=LABEL[kind])
            for p in pts:
                print(f"| {LABEL[kind]} | {p['context']:,} | {p['ms_per_token']:.2f} | "
                      f"{p['tok_per_s']:.1f} | {p['kv_bytes'] / 1e6:.1f} MB | "
                      f"{p['state_bytes'] / 1e6:.2f} MB |")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("decode tokens/s")
        ax.set_title(f"Decode, study models, candle path ({d['cpu']}, {d['threads']} thread)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "decode.png", dpi=110)
        print()

    plan = runs / "plan.jsonl"
    if plan.exists():
        pts = [json.loads(line) for line in plan.read_text().splitlines()]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        print("| 2B-scale model | KV | context | weights | KV cache | states | total | longest context in 16 GiB |")
        print("|---|---|---|---|---|---|---|---|")
        for kind in ["attention", "mamba2", "gated_deltanet"]:
            for kv, ls in (("f16", "-"), ("int4", "--")):
                p = sorted((x for x in pts if x["model"] == kind and x["kv_kind"] == kv),
                           key=lambda x: x["context"])
                if not p:
                    continue
                ax.plot([x["context"] for x in p], [x["total"] / 2**30 for x in p], ls=ls,
                        marker="o", color=COLOR[kind], label=f"{LABEL_2B[kind]}, {kv} KV")
                for x in p:
                    print(f"| {LABEL_2B[kind]} | {kv} | {x['context']:,} | {x['weights'] / 1e9:.2f} GB | "
                          f"{x['kv_cache'] / 1e9:.3f} GB | {x['recurrent_state'] / 1e6:.1f} MB | "
                          f"{x['total'] / 1e9:.2f} GB | {x['max_context']:,} |")
        ax.axhline(16, color="black", lw=1, ls=":", label="16 GiB card")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("planned memory (GiB)")
        ax.set_title("Memory of 2B4T-shaped models (tritter plan; the two hybrids overlap)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "memory.png", dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: study_plots.py RUNS_DIR OUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
