#!/usr/bin/env bash
# SigLIP-B/16 at 224 px on the CPU: Tritter's tower (`tritter bench vision --json`) and
# transformers' SiglipVisionModel on PyTorch (scripts/bench_siglip_torch.py), run back to back in
# one sitting, alternating twice; prints both and the ratio of the medians (torch / tritter).
#   scripts/bench_vision.sh        # needs the reference venv (.venv, scripts/requirements-golden.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
cargo build --release --bin tritter
for round in 1 2; do
  t=$(target/release/tritter bench vision --json)
  p=$(TORCHDYNAMO_DISABLE=1 "$PYTHON" scripts/bench_siglip_torch.py)
  echo "round $round tritter: $t"
  echo "round $round torch:   $p"
  "$PYTHON" -c 'import json,sys; t=json.loads(sys.argv[1]); p=json.loads(sys.argv[2]); print(f"torch/tritter median ratio {p[\"ms_median\"]/t[\"ms_median\"]:.2f}")' "$t" "$p"
done
grep -m1 'model name' /proc/cpuinfo
