#!/usr/bin/env bash
# Builds the compute crates (tritter-kernels, tritter-model) for 64-bit ARM and runs their tests
# under an emulator: what Apple Silicon / ARM Linux users run is the portable code (no x86 SIMD
# back end there), and this is the only place it is compiled and tested for that target.
#
# Usage: scripts/cross-aarch64.sh --install   fetches what it needs and stops: the
#          aarch64-unknown-linux-gnu standard library (rustup) and Debian's gcc-aarch64-linux-gnu
#          (linker, C library) and qemu-user (apt-get); fails if any cannot be had.
#        scripts/cross-aarch64.sh             the checks below (missing tools are an error).
# Checks, in target-aarch64/ (its own build directory):
#   cargo clippy --target aarch64-unknown-linux-gnu -p tritter-kernels -p tritter-model
#       --all-targets -- -D warnings          (no x86-only code left dead or unused on ARM)
#   cargo test   --target aarch64-unknown-linux-gnu -p tritter-kernels -p tritter-model
#       (the kernels' property tests: Portable against the scalar specification; the model's
#        library and integration tests — attention and caches on the generic builds, the golden
#        fixtures, training), each test binary run by qemu-aarch64.
# Emulated, so it says nothing about speed. About 20 minutes on 2 cores from a cold build.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
if [ "${1:-}" = "--install" ]; then
  rustup target add "$target" >/dev/null
  if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user >/dev/null
  fi
  exit 0
fi
for tool in aarch64-linux-gnu-gcc qemu-aarch64; do
  command -v "$tool" >/dev/null 2>&1 || { echo "cross-aarch64: $tool not found (run with --install)" >&2; exit 1; }
done
rustup target list --installed | grep -qx "$target" ||
  { echo "cross-aarch64: the $target standard library is not installed (run with --install)" >&2; exit 1; }

export CARGO_TARGET_DIR=target-aarch64
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo clippy --target "$target" -p tritter-kernels -p tritter-model --all-targets -- -D warnings
cargo test --target "$target" -p tritter-kernels -p tritter-model
