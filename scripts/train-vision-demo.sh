#!/usr/bin/env bash
# Rebuild the vision demo model (assets/vision-demo/): synthetic pictures of coloured shapes and
# digits (scripts/make_shapes.py, Pillow), then `tritter --train scripts/vision-demo.toml`, which
# trains a SigLIP-layout tower, its connector and a ternary text model together and measures
# held-out exact-match accuracy with and without the image (eval.json).
#
#   scripts/train-vision-demo.sh               # TRAIN=20000 TEST=300, steps from the config
#   STEPS=300 scripts/train-vision-demo.sh     # shorter
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN=$ROOT/target/runs/vision-demo
PYTHON=${PYTHON:-python3}
OUT=$ROOT/assets/vision-demo
TRAIN=${TRAIN:-20000}
TEST=${TEST:-300}

cargo build --release --bin tritter
rm -rf "$RUN"
"$PYTHON" scripts/make_shapes.py "$RUN/data" --train "$TRAIN" --test "$TEST" --size 64 --seed 0
SET=()
if [[ -n "${STEPS:-}" ]]; then SET=(--set "train.steps=$STEPS"); fi
target/release/tritter --train scripts/vision-demo.toml "${SET[@]}"
mkdir -p "$OUT"
find "$OUT" -mindepth 1 ! -name README.md -delete   # README.md is kept
cp -r "$RUN/final/." "$OUT/"
cp "$RUN/eval.json" "$RUN/metrics.jsonl" "$OUT/"
mkdir -p "$OUT/examples"
for i in 00000 00001 00002 00003; do cp "$RUN/data/test/$i.png" "$OUT/examples/$i.png"; done
head -4 "$RUN/data/test.jsonl" > "$OUT/examples/answers.jsonl"
cat "$OUT/eval.json"
