#!/usr/bin/env bash
# Set up a CUDA 13.0 build environment from PyPI wheels, for `cargo build --features cuda`
# on a machine with no GPU and no system CUDA install.
#
# Usage (source it, so the exports stay in your shell):
#   source scripts/cuda-env.sh            # installs into .venv-cuda/ on first use
#   CUDA_COMPUTE_CAP=120 source scripts/cuda-env.sh   # RTX 5080 (Blackwell) instead of H100/H200
#   cargo build --release --features cuda
#
# What it does:
# - pip-installs `cuda-toolkit[...]==13.0.2` (nvcc, nvvm, crt headers, cudart, cccl, cuBLAS,
#   cuRAND, NVRTC) into a virtualenv; the 12.x `nvidia-cuda-nvcc-cu12` wheels carry no nvcc binary.
#   13.0 is pinned: cudarc 0.19 accepts CUDA up to 13.x and driver 580 compiles PTX ISA 9.0.
# - points CUDA_HOME/CUDA_PATH/PATH at the wheels' `nvidia/cu13` tree;
# - sets CUDA_COMPUTE_CAP (no nvidia-smi to detect it on a build machine): 90 for H100/H200,
#   120 for the RTX 5080, 80 for PTX that newer GPUs JIT-compile;
# - adds unversioned .so symlinks (the wheels ship only .so.13) so the linker finds
#   -lcudart -lcublas -lcublasLt -lcurand -lnvrtc;
# - builds a link-time stub libcuda.so from the driver API symbols the link needs (the real
#   libcuda.so.1 comes with the NVIDIA driver on the GPU machine; the stub is never shipped).
#
# The resulting binary links libcudart/cublas/cublasLt/curand/nvrtc .so.13 dynamically: put
# them beside it or on LD_LIBRARY_PATH on the GPU machine (scripts/gpu-check.sh finds them in
# a Python environment's `nvidia/cu13/lib` when one is installed there).

_tritter_cuda_main() {
  local root venv cu lib stubdir
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="${TRITTER_CUDA_VENV:-$root/.venv-cuda}"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || return 1
  fi
  if ! "$venv/bin/python" -c 'import importlib.metadata as m; assert m.version("cuda-toolkit")=="13.0.2"' 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "cuda-toolkit[nvcc,nvvm,crt,cudart,cccl,cublas,curand,nvrtc]==13.0.2" || return 1
  fi
  cu="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')" || return 1
  if [ ! -x "$cu/bin/nvcc" ]; then
    echo "cuda-env: no nvcc at $cu/bin/nvcc" >&2
    return 1
  fi
  lib="$cu/lib"
  [ -d "$lib" ] || lib="$cu/lib64"
  # Unversioned names for the linker.
  local name so
  for name in cudart cublas cublasLt curand nvrtc; do
    so="$(ls "$lib"/lib$name.so.* 2>/dev/null | sort | head -n1)"
    if [ -n "$so" ] && [ ! -e "$lib/lib$name.so" ]; then
      ln -sf "$(basename "$so")" "$lib/lib$name.so"
    fi
  done
  # nvcc looks for lib64 under CUDA_HOME; the wheels have lib/.
  [ -e "$cu/lib64" ] || ln -s lib "$cu/lib64"
  # Link-time stub for the driver API (libcuda.so): every cu* symbol cudarc may reference.
  stubdir="$venv/cuda-stub"
  if [ ! -e "$stubdir/libcuda.so" ]; then
    mkdir -p "$stubdir"
    _tritter_cuda_stub "$cu" "$stubdir" || return 1
  fi
  export CUDA_HOME="$cu" CUDA_PATH="$cu" CUDA_ROOT="$cu"
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
  export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-2}"
  case ":$PATH:" in *":$cu/bin:"*) ;; *) export PATH="$cu/bin:$PATH" ;; esac
  case ":${LIBRARY_PATH:-}:" in *":$stubdir:"*) ;; *) export LIBRARY_PATH="$lib:$stubdir${LIBRARY_PATH:+:$LIBRARY_PATH}" ;; esac
  # Sourcing twice must not change RUSTFLAGS (cargo would rebuild everything).
  case " ${RUSTFLAGS:-} " in
    *" -L native=$stubdir "*) ;;
    *) export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-L native=$lib -L native=$stubdir" ;;
  esac
  echo "cuda-env: nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA_HOME=$cu, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
}

# Build libcuda.so with one no-op function per driver-API name declared in cuda.h (cudarc's
# dynamic-linking mode references them by name). It only satisfies the linker; at run time
# the driver's libcuda.so.1 is loaded instead (same soname).
_tritter_cuda_stub() {
  local cu="$1" out="$2"
  grep -ohE '\bCUresult CUDAAPI (cu[A-Za-z0-9_]+)' "$cu/include/cuda.h" \
    | awk '{print $3}' | sort -u \
    | awk '{printf "int %s(void){return 999;}\n", $1}' >"$out/stub.c"
  # Versioned aliases (cuFoo_v2 …) are declared through #defines; add their targets too.
  grep -ohE '#define (cu[A-Za-z0-9_]+) +(cu[A-Za-z0-9_]+)' "$cu/include/cuda.h" \
    | awk '{print $3}' | sort -u \
    | awk '{printf "int %s(void){return 999;}\n", $1}' >>"$out/stub.c"
  sort -u "$out/stub.c" -o "$out/stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$out/libcuda.so" "$out/stub.c"
}

_tritter_cuda_main
