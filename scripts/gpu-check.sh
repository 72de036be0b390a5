#!/usr/bin/env bash
# One command for a GPU machine that has no Rust toolchain: runs the prebuilt CUDA tests
# (kernels vs their CPU statements; the model on CUDA vs CPU and Hugging Face's logits) and the
# GPU benchmarks and the PyTorch decode peer, and writes everything to OUT_DIR (9 files), in
# under 5 minutes on an H200:
#   summary.txt            pass/fail per step and the headline figures
#   test-kernels.txt       kernels/tests/cuda/ output
#   test-model.txt         model/tests/gpu.rs output
#   bench-kernels.json     tritter bench kernels --device cuda --json
#   bench-decode.json      tritter bench decode --device cuda --json
#   bench-attention.json   tritter bench attention --device cuda --json
#   bench-variants.jsonl   tritter bench variants --device cuda (one JSON line per measurement)
#   peer-torch.jsonl       scripts/torch_decode_peer.py: PyTorch's decode of the same shape
#                          (static cache, one step captured in a CUDA graph) on the machine's python3
#   cli.txt                nvidia-smi, `tritter -p ... --device cuda --json` (with the cache it sized
#                          to the card), logits CLI check, `tritter plan --gpu` for a 16 GiB RTX 5080
#
# Usage: scripts/gpu-check.sh BUNDLE_DIR OUT_DIR   (run from the repository root; the bundle is
# what scripts/gpu-bundle.sh builds). The machine needs the NVIDIA driver and the CUDA 13
# runtime libraries (cudart, cuBLAS, cuRAND, NVRTC): from a CUDA install or a Python
# environment with the nvidia-*-cu13 wheels (found automatically), or CUDA_LIBS=DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle="${1:?usage: gpu-check.sh BUNDLE_DIR OUT_DIR}"
out="${2:?usage: gpu-check.sh BUNDLE_DIR OUT_DIR}"
mkdir -p "$out"
bin="$(mktemp -d)"
for f in "$bundle"/*; do
  case "$f" in
    *.xz) xz -dc "$f" >"$bin/$(basename "${f%.xz}")" ;;
    *) cp "$f" "$bin/" ;;
  esac
done
chmod +x "$bin"/*

# CUDA runtime libraries.
libdirs=()
for d in ${CUDA_LIBS:-} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib; do
  [ -e "$d/libcublas.so.13" ] && libdirs+=("$d")
done
for py in python3; do
  command -v "$py" >/dev/null 2>&1 || continue
  while read -r d; do
    [ -n "$d" ] && libdirs+=("$d")
  done < <("$py" - <<'PY' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
seen = set()
for r in roots:
    for lib in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so.*"), recursive=True):
        d = os.path.dirname(lib)
        if d not in seen:
            seen.add(d)
            print(d)
PY
)
done
LD_LIBRARY_PATH="$(IFS=:; echo "${libdirs[*]:-}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
export TRITTER_REQUIRE_GPU=1 TRITTER_ROOT="$PWD"

summary="$out/summary.txt"
: >"$summary"
step() {
  local name="$1"
  shift
  local t0=$SECONDS
  if timeout "${STEP_TIMEOUT:-300}" "$@"; then
    echo "PASS $name ($((SECONDS - t0)) s)" | tee -a "$summary"
  else
    echo "FAIL $name (exit $?, $((SECONDS - t0)) s)" | tee -a "$summary"
  fi
}

{
  echo "== nvidia-smi"
  nvidia-smi --query-gpu=name,compute_cap,memory.total,memory.free,driver_version,clocks.sm,clocks.mem --format=csv 2>&1
  echo "== libraries"
  ldd "$bin/tritter" | grep -E 'cuda|cublas|curand|nvrtc'
} >"$out/cli.txt" 2>&1

step kernel-tests sh -c "'$bin/test-cuda' --test-threads=1 --nocapture >'$out/test-kernels.txt' 2>&1"
step model-tests sh -c "'$bin/test-gpu' --test-threads=1 --nocapture >'$out/test-model.txt' 2>&1"
step prompt-cuda sh -c "'$bin/tritter' -p 'def fibonacci(n):' --device cuda --json >'$out/prompt-cuda.json' 2>>'$out/cli.txt' && cat '$out/prompt-cuda.json' >>'$out/cli.txt'"
step plan-rtx5080 sh -c "for p in bitnet-b1.58-2b4t tritter-7b; do '$bin/tritter' plan --gpu --preset \$p --context 131072 --budget 16GiB || exit 1; done >>'$out/cli.txt' 2>&1"
step logits-cli sh -c "'$bin/tritter' logits --model tests/golden/packed_tied_gqa --ids 1,5,9,200,17,3 --device cuda --out '$bin/l_gpu.safetensors' >>'$out/cli.txt' 2>&1 && '$bin/tritter' logits --model tests/golden/packed_tied_gqa --ids 1,5,9,200,17,3 --out '$bin/l_cpu.safetensors' >>'$out/cli.txt' 2>&1 && python3 -c '
import sys
from safetensors.numpy import load_file
a = load_file(sys.argv[1])[\"logits\"]; b = load_file(sys.argv[2])[\"logits\"]
e = abs(a - b).max() / abs(b).max()
print(\"logits CLI cuda vs cpu: max rel\", e)
sys.exit(0 if e < 1e-3 else 1)' '$bin/l_gpu.safetensors' '$bin/l_cpu.safetensors' >>'$out/cli.txt' 2>&1"
step bench-kernels sh -c "'$bin/tritter' bench kernels --device cuda --json >'$out/bench-kernels.json' 2>>'$out/cli.txt'"
step bench-attention sh -c "'$bin/tritter' bench attention --device cuda --json >'$out/bench-attention.json' 2>>'$out/cli.txt'"
step bench-decode sh -c "'$bin/tritter' bench decode --device cuda --json >'$out/bench-decode.json' 2>>'$out/cli.txt'"
# PyTorch's own decode of the same shape (bf16, static cache, CUDA graph), beside candle's bf16
# path (in bench-decode.json): the peers Tritter's decode is compared with.
STEP_TIMEOUT=150 step peer-torch sh -c "python3 scripts/torch_decode_peer.py >'$out/peer-torch.jsonl' 2>>'$out/cli.txt'"
# The speed variants (off by default until they have run here): last, in their own process,
# one JSON line per measurement, so a failing variant leaves the default figures and the
# lines before it.
step bench-variants sh -c "'$bin/tritter' bench variants --device cuda >'$out/bench-variants.jsonl' 2>>'$out/cli.txt'"

grep -hE "CUDA vs|window 128|test result" "$out/test-model.txt" "$out/test-kernels.txt" >>"$summary" 2>/dev/null
python3 - "$out" >>"$summary" 2>&1 <<'PY'
import json, os, sys
out = sys.argv[1]
def load(n):
    try:
        return json.load(open(os.path.join(out, n)))
    except Exception as e:
        print(n, "unreadable:", e)
        return None
k = load("bench-kernels.json")
if k:
    print("device", k["device"]["name"], "copy GB/s %.0f" % k["copy_gbps"])
    for r in k["gemv"]:
        print("gemv %-20s %7.2f us %6.0f GB/s %.2f of copy, %.2fx candle bf16; gemm512 %.1f TOPS, %.2fx candle bf16"
              % (r["shape"], r["gemv_us"], r["gemv_gbps"], r["gemv_fraction_of_copy"],
                 r["gemv_speedup_vs_candle_bf16"], r["gemm512_tops"], r["gemm_speedup_vs_candle_bf16"]))
d = load("bench-decode.json")
if d:
    for r in d["decode"]:
        print("decode %s window %d: %.0f tok/s (eager %s), %.2f of bound %.0f; prefill %.0f tok/s"
              % (r["kv"], r["window"], r["tokens_per_s"], r["eager_tokens_per_s"], r["ratio_to_bound"],
                 r["bound_tokens_per_s"], r["prefill_tokens_per_s"]))
        prof = r.get("profile")
        if prof:
            print("  profile (eager, events between ops) %.2f ms: " % prof["total_ms"]
                  + ", ".join("%s %.0f%%" % (o["op"], 100 * o["share"]) for o in prof["ops"]))
    c = d["candle_bf16"]
    print("candle bf16 dense: decode %.0f tok/s, prefill %.0f tok/s; speedups decode %s prefill %s"
          % (c["tokens_per_s"], c["prefill_tokens_per_s"], d["decode_speedup_vs_candle_bf16"],
             d["prefill_speedup_vs_candle_bf16"]))
    for m in d["memory"]:
        print("memory %s window %d: measured %.3f GB planned %.3f GB ratio %.3f"
              % (m["kv"], m["window"], m["measured_bytes"] / 1e9, m["planned_bytes"] / 1e9,
                 m["ratio_measured_to_planned"]))
try:
    peers = [json.loads(l) for l in open(os.path.join(out, "peer-torch.jsonl")) if l.strip()]
except Exception as e:
    print("peer-torch.jsonl unreadable:", e)
    peers = []
for p in peers:
    if "error" in p:
        print("torch peer error:", p["error"])
    else:
        print("torch peer %s: decode %.1f tok/s%s" % (p["mode"], p["tokens_per_s"],
              "" if "prefill_tokens_per_s" not in p else ", prefill %.0f tok/s" % p["prefill_tokens_per_s"]))
if d:
    ours = [r for r in d["decode"] if r["kv"] == "Int4" and r["window"] == 0]
    graph = [p for p in peers if p.get("mode") == "cuda_graph"]
    if ours and graph:
        print("Tritter decode / PyTorch CUDA-graph decode: %.2fx (%.0f vs %.1f tok/s)"
              % (ours[0]["tokens_per_s"] / graph[0]["tokens_per_s"], ours[0]["tokens_per_s"], graph[0]["tokens_per_s"]))
    if ours:
        print("Tritter decode / candle bf16 decode: %.2fx (%.0f vs %.1f tok/s)"
              % (ours[0]["tokens_per_s"] / d["candle_bf16"]["tokens_per_s"], ours[0]["tokens_per_s"],
                 d["candle_bf16"]["tokens_per_s"]))
pc = load("prompt-cuda.json")
if pc:
    print("-p --device cuda: device %s, context_limit %s, gpu_cache %s"
          % (pc.get("device"), pc.get("context_limit"), json.dumps(pc.get("gpu_cache"))))
a = load("bench-attention.json")
if a:
    for r in a["attention"]:
        print("attention %s window %d ctx %d: %.1f us" % (r["kv"], r["window"], r["context"], r["us_per_step"]))
    print("64K/4K with window: f16 %s int4 %s; int4/f16 bytes %.3f"
          % (a["window4k_64k_over_4k_f16"], a["window4k_64k_over_4k_int4"], a["int4_bytes_over_f16"]))
try:
    lines = [json.loads(l) for l in open(os.path.join(out, "bench-variants.jsonl")) if l.strip()]
except Exception as e:
    print("bench-variants.jsonl unreadable:", e)
    lines = []
for v in lines:
    sec = v.get("section")
    if "error" in v:
        print("variant", sec, v.get("shape") or v.get("variant"), "error:", v["error"])
    elif sec == "gemv":
        print("variant gemv %-20s %-9s %s us, %s of copy"
              % (v["shape"], v["variant"], v.get("graph_us"), v.get("fraction_of_copy")))
    elif sec == "gemm512":
        print("variant gemm512 %-20s dp4a %.1f TOPS, mma %.1f TOPS (%.2fx)"
              % (v["shape"], v["dp4a_tops"], v["mma_tops"], v["speedup"]))
    elif sec == "attention":
        print("variant attention %s ctx %d: plain %.1f us, grouped %.1f us (%.2fx)"
              % (v["kv"], v["context"], v.get("plain_us", v.get("default_us")), v["grouped_us"], v["speedup"]))
    elif sec == "decode":
        prof = v.get("profile") or {}
        sp = v.get("speedup_vs_plain")
        print("variant decode %-15s %.0f tok/s%s, prefill %.0f tok/s, graph step %s ms; profile: %s"
              % (v["variant"], v["tokens_per_s"], "" if sp is None else " (%.2fx)" % sp, v["prefill_tokens_per_s"],
                 v.get("graph_step_gpu_ms"),
                 ", ".join("%s %.0f%%" % (o["op"], 100 * o["share"]) for o in prof.get("ops", []))))
PY
echo "gpu-check took $SECONDS s" >>"$summary"
rm -rf "$bin"
cat "$summary"
! grep -q '^FAIL' "$summary"
