// Small f32 kernels of the transformer's inference path on the GPU: RMSNorm, RoPE, residual
// add, activations and the LM-head GEMV. Each matches the slice code of model/src/infer/ up
// to float summation order (tests compare within stated tolerances).
#include "common.cuh"

// y = x · w / sqrt(mean(x²) + eps) per row of `dim`; one block per row; in place allowed.
extern "C" __global__ void rmsnorm(const float* x, const float* __restrict__ w, int dim,
                                   float eps, float* y) {
    PDL_ENTER;
    __shared__ float red[32];
    const float* xr = x + (size_t)blockIdx.x * dim;
    float* yr = y + (size_t)blockIdx.x * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i] * xr[i];
    s = block_sum(s, red);
    const float inv = 1.0f / sqrtf(s / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * inv * w[i];
}

// HF rotate-half RoPE of x [T][nh][d] in place, token t at position *base + t.
extern "C" __global__ void rope(float* x, int T, int nh, int d, float theta,
                                const int* __restrict__ base) {
    PDL_ENTER;
    const int half = d / 2;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * nh * half) return;
    const int j = (int)(i % half);
    const size_t r = i / half;  // row = t·nh + head
    const int t = (int)(r / nh);
    const float inv = 1.0f / powf(theta, (float)(2 * j) / (float)d);
    const float ang = (float)(*base + t) * inv;
    float s, c;
    sincosf(ang, &s, &c);
    float* row = x + r * d;
    const float a = row[j], b = row[j + half];
    row[j] = a * c - b * s;
    row[j + half] = b * c + a * s;
}

// x += y (n elements).
extern "C" __global__ void add_inplace(float* x, const float* __restrict__ y, int n) {
    PDL_ENTER;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

__device__ __forceinline__ float act(float v, int kind) {
    if (kind == 0) {
        const float r = fmaxf(v, 0.0f);
        return r * r;  // relu²
    }
    return v / (1.0f + expf(-v));  // silu
}

// Gated MLP: gu is [T][2·f] holding (gate | up) per token; h[t][i] = up · act(gate).
extern "C" __global__ void gated_act(const float* __restrict__ gu, int T, int f, int kind,
                                     float* __restrict__ h) {
    PDL_ENTER;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * f) return;
    const size_t t = i / f, c = i % f;
    const float g = gu[t * 2 * f + c], u = gu[t * 2 * f + f + c];
    h[i] = u * act(g, kind);
}

// Ungated MLP: x = act(x) in place.
extern "C" __global__ void act_inplace(float* x, int n, int kind) {
    PDL_ENTER;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = act(x[i], kind);
}

#define HEAD_WARPS 8

// LM head for one token: out[v] = Σ_c w[v][c] · x[c]; w f16 row-major [V][c], c % 8 == 0.
// One warp per row; x staged in shared memory.
extern "C" __global__ void __launch_bounds__(HEAD_WARPS * 32)
head_gemv_f16(const __half* __restrict__ w, const float* __restrict__ x, int V, int c,
              float* __restrict__ out) {
    PDL_ENTER;
    extern __shared__ float xs[];
    for (int i = threadIdx.x; i < c; i += blockDim.x) xs[i] = x[i];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * HEAD_WARPS + (threadIdx.x >> 5);
    if (row >= V) return;
    const uint4* wr = reinterpret_cast<const uint4*>(w + (size_t)row * c);
    float acc = 0.0f;
    for (int i = lane; i < c / 8; i += 32) {
        const uint4 p = __ldg(wr + i);
        const __half2* h2 = reinterpret_cast<const __half2*>(&p);
        const float* xx = xs + i * 8;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float2 f = __half22float2(h2[j]);
            acc += f.x * xx[2 * j] + f.y * xx[2 * j + 1];
        }
    }
    acc = warp_sum(acc);
    if (lane == 0) out[row] = acc;
}

// The same with f32 weights (c % 4 == 0): the reference-precision head.
extern "C" __global__ void __launch_bounds__(HEAD_WARPS * 32)
head_gemv_f32(const float* __restrict__ w, const float* __restrict__ x, int V, int c,
              float* __restrict__ out) {
    PDL_ENTER;
    extern __shared__ float xs[];
    for (int i = threadIdx.x; i < c; i += blockDim.x) xs[i] = x[i];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * HEAD_WARPS + (threadIdx.x >> 5);
    if (row >= V) return;
    const float4* wr = reinterpret_cast<const float4*>(w + (size_t)row * c);
    float acc = 0.0f;
    for (int i = lane; i < c / 4; i += 32) {
        const float4 p = __ldg(wr + i);
        acc += p.x * xs[4 * i] + p.y * xs[4 * i + 1] + p.z * xs[4 * i + 2] + p.w * xs[4 * i + 3];
    }
    acc = warp_sum(acc);
    if (lane == 0) out[row] = acc;
}

// dst[t][c] = src[t·stride + col0 + c] for c < ncols: splits stacked projections (q | k | v).
extern "C" __global__ void copy_cols(const float* __restrict__ src, int stride, int col0,
                                     int ncols, int T, float* __restrict__ dst) {
    PDL_ENTER;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * ncols) return;
    const size_t t = i / ncols, c = i % ncols;
    dst[i] = src[t * stride + col0 + c];
}

// Splits stacked q|k|v rows ([T][(H + 2·hkv)·d]) into q [T][H][d] and k [T][hkv][d], both
// rotated (the `rope` kernel's expression, identical values) at positions *base + t, and
// v [T][hkv][d] copied: `copy_cols` ×3 + `rope` ×2 in one launch.
extern "C" __global__ void qkv_rope_split(const float* __restrict__ qkv, int T, int H, int hkv,
                                          int d, float theta, const int* __restrict__ base,
                                          float* __restrict__ q, float* __restrict__ k,
                                          float* __restrict__ v) {
    PDL_ENTER;
    const int half = d / 2;
    const size_t per = (size_t)(H + hkv) * half + (size_t)hkv * d;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * per) return;
    const int t = (int)(i / per);
    const size_t r = i % per;
    const float* src = qkv + (size_t)t * (H + 2 * hkv) * d;
    if (r < (size_t)(H + hkv) * half) {
        const int head = (int)(r / half), j = (int)(r % half);
        const float* row;
        float* dst;
        if (head < H) {
            row = src + (size_t)head * d;
            dst = q + ((size_t)t * H + head) * d;
        } else {
            row = src + (size_t)H * d + (size_t)(head - H) * d;
            dst = k + ((size_t)t * hkv + (head - H)) * d;
        }
        const float inv = 1.0f / powf(theta, (float)(2 * j) / (float)d);
        const float ang = (float)(*base + t) * inv;
        float sn, c;
        sincosf(ang, &sn, &c);
        const float a = row[j], b = row[j + half];
        dst[j] = a * c - b * sn;
        dst[j + half] = b * c + a * sn;
    } else {
        const size_t c = r - (size_t)(H + hkv) * half;
        v[(size_t)t * hkv * d + c] = src[(size_t)(H + hkv) * d + c];
    }
}
