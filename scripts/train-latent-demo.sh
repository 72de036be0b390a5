#!/usr/bin/env bash
# Rebuild the latent (Coconut) demo model (assets/latent-demo/) and its three-way comparison:
# ProsQA-style problems (scripts/make_prosqa.py; training seed 0, held-out seed 1, never used in
# training), then three ternary models of the same size trained on them (scripts/latent-demo.toml):
#   coconut  the curriculum, stages 0..=4, continuous thoughts replacing the written steps;
#   cot      stage 0 alone for as many steps: the steps written out (the CoT baseline);
#   no-cot   stage 0 on the answers alone (the steps removed from the records).
# Each model is evaluated on the held-out problems with `tritter eval` (accuracy, mean generated
# tokens) and the table is written to target/runs/latent-demo/table.json. The runs are
# independent and single-threaded (RAYON_NUM_THREADS=1: on this model size one thread per run
# is faster than two), so they go in parallel, one per core.
#
#   scripts/train-latent-demo.sh                          # N=20000 TEST=500, 600 steps a stage
#   STAGE_STEPS=50 N=2000 TEST=50 scripts/train-latent-demo.sh   # a quick run
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN=$ROOT/target/runs/latent-demo
OUT=$ROOT/assets/latent-demo
N=${N:-20000}
TEST=${TEST:-500}
STAGE_STEPS=${STAGE_STEPS:-600}
STAGES=4
BASELINE_STEPS=$((STAGE_STEPS * (STAGES + 1)))
NOCOT_STEPS=${NOCOT_STEPS:-$BASELINE_STEPS}

cargo build --release --bin tritter
BIN=$ROOT/target/release/tritter
rm -rf "$RUN"
mkdir -p "$RUN"
python3 scripts/make_prosqa.py --seed 0 --n "$N" > "$RUN/train.jsonl"
python3 scripts/make_prosqa.py --seed 1 --n "$TEST" > "$RUN/test.jsonl"
python3 - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
with open(f"{run}/train.jsonl") as f, open(f"{run}/train-nocot.jsonl", "w") as g:
    for line in f:
        r = json.loads(line)
        r["steps"] = []
        g.write(json.dumps(r) + "\n")
PY
train() { # name data steps stages
  RAYON_NUM_THREADS=1 "$BIN" --train scripts/latent-demo.toml --set "run.dir=$RUN/$1" \
    --set "data.train=$RUN/$2" --set "data.test=$RUN/test.jsonl" --set "train.steps=$3" \
    --set "latent.stages=$4" > "$RUN/$1.log" 2>&1
}
train coconut train.jsonl "$STAGE_STEPS" "$STAGES" &
(train cot train.jsonl "$BASELINE_STEPS" 0 && train nocot train-nocot.jsonl "$NOCOT_STEPS" 0) &
wait
ev() { "$BIN" eval --model "$RUN/$1/final" --data "$RUN/test.jsonl" --mode "$2" --json; }
{
  echo "{\"no-cot\": $(ev nocot no-cot), \"cot\": $(ev cot cot), \"coconut\": $(ev coconut latent)}"
} > "$RUN/table.json"
mkdir -p "$OUT"
find "$OUT" -mindepth 1 ! -name README.md -delete   # README.md is kept
cp -r "$RUN/coconut/final/." "$OUT/"
cp "$RUN/coconut/metrics.jsonl" "$RUN/table.json" "$OUT/"
mkdir -p "$OUT/examples"
head -3 "$RUN/test.jsonl" > "$OUT/examples/held-out.jsonl"
cat "$RUN/table.json"
