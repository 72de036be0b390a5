#!/usr/bin/env bash
# The layer-kind study of docs/RESEARCH.md (issue #23 item 5): trains the ten-layer width-128
# models of scripts/study/*.json on the corpus of scripts/hybrid-study.toml — attention, 9:1
# Mamba-2, 9:1 Gated DeltaNet and recurrent depth ternary, the first three also in full precision —
# each on one core, two at a time, then measures decode speed and cache memory at 4K/32K/128K
# (model/examples/hybrid_decode.rs), plans 2B-scale memory (scripts/study/2b/) and draws the plots
# (scripts/study_plots.py; needs scripts/requirements-study.txt in .venv).
#
#   scripts/hybrid-study.sh            # everything (about an hour on 2 cores)
#   STEPS=100 scripts/hybrid-study.sh  # a quick look
#
# Runs go to target/runs/study/KIND[-fp]; the decode figures to target/runs/study/decode.json;
# the plots to docs/study/.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${STEPS:-800}"
bin=target/release/tritter
cargo build --release --quiet
run() { # kind mode core
  local name="$1"
  [ "$2" = full_precision ] && name="$1-fp"
  local dir="target/runs/study/$name"
  rm -rf "$dir"
  RAYON_NUM_THREADS=1 taskset -c "$3" "$bin" --train scripts/hybrid-study.toml \
    --set "model.config=\"study/$1.json\"" --set "run.dir=\"../$dir\"" \
    --set "qat.mode=\"$2\"" --set "train.steps=$steps" >"$dir.log" 2>&1
  echo "$name: $(tail -2 "$dir.log" | head -1)"
}
mkdir -p target/runs/study
( run attention ternary 0; run mamba2 ternary 0; run gated_deltanet ternary 0; run mamba2 full_precision 0 ) &
( run depth ternary 1; run attention full_precision 1; run gated_deltanet full_precision 1 ) &
wait
# Decode speed of the trained models, one thread, alone on the machine.
RAYON_NUM_THREADS=1 cargo run --release --quiet -p tritter-model --example hybrid_decode -- --json \
  target/runs/study/{attention,mamba2,gated_deltanet,depth}/final >target/runs/study/decode.json
# Memory of the same kinds at 2B4T's size (config-only directories), f16 and INT4 caches.
for k in attention mamba2 gated_deltanet; do
  for kv in f16 int4; do
    for ctx in 4096 32768 131072 524288; do
      "$bin" plan --model "scripts/study/2b/$k" --context "$ctx" --kv "$kv" --json |
        python3 -c "import json,sys; d=json.load(sys.stdin); d['model']='$k'; print(json.dumps(d))"
    done
  done
done >target/runs/study/plan.jsonl
.venv/bin/python scripts/study_plots.py target/runs/study docs/study
