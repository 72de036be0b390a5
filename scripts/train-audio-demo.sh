#!/usr/bin/env bash
# Rebuild the audio demo model (assets/audio-demo/): synthetic DTMF digit clips with noise and
# gain changes (scripts/make_dtmf.py; held-out clips from another seed), then a small codec
# (`task = "codec"`, scripts/codec-demo.toml) and a ternary text model that reads the clips as
# codec tokens (`task = "audio_text"`, scripts/audio-demo.toml), which measures held-out
# exact-match accuracy with each clip and with it silenced (eval.json).
#
#   scripts/train-audio-demo.sh                   # TRAIN=6000 TEST=300, steps from the configs
#   CODEC_STEPS=100 STEPS=100 scripts/train-audio-demo.sh   # shorter
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN=$ROOT/target/runs/audio-demo
# make_dtmf.py and probe_dtmf_codec.py need numpy (+ safetensors): the reference venv (scripts/requirements-golden.txt) has it.
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT=$ROOT/assets/audio-demo
TRAIN=${TRAIN:-6000}
TEST=${TEST:-300}

cargo build --release --bin tritter
rm -rf "$RUN"
"$PYTHON" scripts/make_dtmf.py --out "$RUN/data/train" --n "$TRAIN" --seed 0
"$PYTHON" scripts/make_dtmf.py --out "$RUN/data/test" --n "$TEST" --seed 1
CODEC_SET=()
if [[ -n "${CODEC_STEPS:-}" ]]; then CODEC_SET=(--set "train.steps=$CODEC_STEPS"); fi
target/release/tritter --train scripts/codec-demo.toml "${CODEC_SET[@]}"
# Do the codec's codes tell the ten keys apart? (key purity per codebook, on held-out noise)
"$PYTHON" scripts/probe_dtmf_codec.py --codec "$RUN/codec/final" --codebooks 2 | tee "$RUN/codec/probe.json"
SET=()
if [[ -n "${STEPS:-}" ]]; then SET=(--set "train.steps=$STEPS"); fi
target/release/tritter --train scripts/audio-demo.toml "${SET[@]}"
mkdir -p "$OUT"
find "$OUT" -mindepth 1 ! -name README.md -delete   # README.md is kept
cp -r "$RUN/text/final/." "$OUT/"
cp "$RUN/text/eval.json" "$RUN/text/metrics.jsonl" "$OUT/"
cp "$RUN/codec/eval.json" "$OUT/codec-eval.json"
cp "$RUN/codec/probe.json" "$OUT/codec-probe.json"
mkdir -p "$OUT/examples"
for i in 00000 00001 00002 00003; do cp "$RUN/data/test/$i.wav" "$OUT/examples/$i.wav"; done
head -4 "$RUN/data/test/records.jsonl" > "$OUT/examples/answers.jsonl"
cat "$OUT/codec-eval.json" "$OUT/codec-probe.json" "$OUT/eval.json"
