#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz + libFuzzer) for SECONDS each, one after the other,
# from the seeds in fuzz/seeds/TARGET plus what earlier runs kept in fuzz/corpus/TARGET, and
# prints a table: target, seconds, executions, crashes. A crash input is left in
# fuzz/artifacts/TARGET/; copy it to tests/data/fuzz-crashes/TARGET/ once fixed (see README,
# Reliability).
#
#   scripts/fuzz.sh 600                 # all targets, 10 minutes each
#   scripts/fuzz.sh 60 image audio      # only these
#
# Needs the nightly toolchain and cargo-fuzz: `rustup toolchain install nightly` and
# `cargo install cargo-fuzz`. Builds without a sanitizer (`-s none`): the targets are safe Rust
# over safe parsers, and a plain build runs several times faster; panics, timeouts, overflows
# (debug assertions are on) and memory over -rss_limit_mb are still caught.
set -uo pipefail
cd "$(dirname "$0")/.."

secs="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(config_json safetensors shard_index tokenizer_json toml_configs session chat_template image audio)
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: needs cargo-fuzz and a nightly toolchain (rustup toolchain install nightly; cargo install cargo-fuzz)" >&2
  exit 2
fi
flags=(-s none --codegen-units 4)
if [ -n "${CARGO_TARGET_DIR:-}" ]; then flags+=(--target-dir "$CARGO_TARGET_DIR"); fi
cargo +nightly fuzz build "${flags[@]}" || exit 2

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
status=0
rows=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/logs"
  log="fuzz/logs/$t.log"
  start=$(date +%s)
  cargo +nightly fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=2560 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  # libFuzzer's own time ("Done N runs in S second(s)"); the wall time if it crashed first.
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  took=${took:-$(($(date +%s) - start))}
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$rc" -eq 0 ]; then crash=0; else crash=1; status=1; fi
  rows+=("| $t | ${took} s | ${execs:-?} | $crash | $cpu |")
  echo "$t: ${took} s, ${execs:-?} executions, exit $rc (log $log)" >&2
done
echo "| target | time | executions | crashes | CPU |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $status
