// Shared helpers for Tritter's CUDA kernels (included by every .cu file; compiled to PTX by
// kernels/build.rs). Reductions here are exact for integers and for max; float sums follow the
// warp-shuffle tree order (not the CPU's left-to-right order).
#pragma once
#include <cstdint>
#include <cuda_fp16.h>

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ int warp_sum_i(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Block-wide reductions for blockDim.x a multiple of 32 (at most 1024). `scratch` holds 32
// values; every thread gets the result.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < nw ? scratch[lane] : -INFINITY;
    return warp_max(r);
}

__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < nw ? scratch[lane] : 0.0f;
    return warp_sum(r);
}

__device__ __forceinline__ int block_sum_i(int v, int* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_i(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int r = lane < nw ? scratch[lane] : 0;
    return warp_sum_i(r);
}

// Programmatic dependent launch (compute capability 9.0+). Every kernel calls `pdl_wait()`
// before it touches memory that an earlier kernel writes or reads, then `pdl_launch()` so the
// next kernel may start its own prologue. Both are no-ops when the kernel was launched
// without the programmatic-serialization attribute (the host's `Tuning::pdl`) and on PTX
// built for older targets; `pdl_wait` returns only once the preceding grid has completed and
// its memory operations are visible, so the ordering of a plain launch is kept.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#define PDL_ENTER \
    pdl_wait();   \
    pdl_launch()
