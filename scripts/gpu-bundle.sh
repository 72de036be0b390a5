#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine, on a machine with no GPU: the
# `tritter` binary with the `cuda` feature and the CUDA test binaries (kernels vs their CPU
# statements, the model on CUDA vs CPU and Hugging Face), stripped and xz-compressed into
# DIR (default gpu-bundle/).
#
#   scripts/gpu-bundle.sh [DIR]        # CUDA_COMPUTE_CAP=90 (H100/H200) unless set
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-bundle}"
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target-cuda}"
cargo build --release --features cuda
mkdir -p "$out"
tests=$(cargo test --release --features cuda -p tritter-kernels -p tritter-model \
  --test cuda --test gpu --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
cp "$CARGO_TARGET_DIR/release/tritter" "$out/tritter"
while read -r name exe; do
  cp "$exe" "$out/test-$name"
done <<<"$tests"
for f in "$out"/tritter "$out"/test-*; do
  [ -f "$f" ] || continue
  case "$f" in *.xz) continue ;; esac
  strip "$f"
  xz -T2 -6 -f "$f"
done
ls -la "$out"
