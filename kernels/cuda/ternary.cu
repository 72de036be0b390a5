// Ternary (BitNet b1.58) W2A8 kernels: per-token int8 activation quantisation, the decode GEMV
// and the prefill GEMM. Must match the CPU specification in kernels/src/quant.rs and
// kernels/src/matmul.rs bit for bit: integer accumulators are exact, and each output is
// `(float)(acc) / (x_scale * w_scale)` with IEEE division (no fast-math).
//
// Weight layout ("G2", built by kernels/src/gpu_ref.rs): row-major, `kw = k_pad / 16` u32
// words per row, `k_pad` a multiple of 64. Code c = w + 1 (0, 1, 2) of column k sits at bit
// 8·(k % 4) + 2·((k / 4) % 4) of word k / 16, so `(word >> 2j) & 0x03030303` holds the codes
// of columns 16·(k/16) + 4j .. +3 in bytes 0..3, lined up with the int8 activations of those
// columns. Padding columns hold code 1 (weight 0). dp4a of codes with activations gives
// Σ (w+1)·x; subtracting Σ x gives Σ w·x.
#include "common.cuh"

#define ACT_THREADS 256

// Per-token int8 activation quantiser with an optional RMSNorm fused in. One block of
// ACT_THREADS per token row; x: [m][k] f32 (row stride k); q: [m][k_pad] int8 (zero padded).
// With weights w: y = x · w / sqrt(mean(x²) + eps) (the `rmsnorm` kernel's expression and
// reduction, so identical values); `w == nullptr` takes y = x. Then scale[t] = 127 /
// max(max|y|, 1e-5), q = clamp(rint(y · scale), -128, 127), qsum[t] = Σ q.
extern "C" __global__ void __launch_bounds__(ACT_THREADS)
rms_act_quant_i8(const float* __restrict__ x, const float* __restrict__ w, float eps, int k,
                 int k_pad, int8_t* __restrict__ q, float* __restrict__ scale,
                 int* __restrict__ qsum) {
    PDL_ENTER;
    __shared__ float fs[32];
    __shared__ int is[32];
    const int t = blockIdx.x;
    const float* xr = x + (size_t)t * k;
    int8_t* qr = q + (size_t)t * k_pad;
    float inv = 1.0f;
    if (w != nullptr) {
        float ss = 0.0f;
        for (int i = threadIdx.x; i < k; i += blockDim.x) ss += xr[i] * xr[i];
        ss = block_sum(ss, fs);
        inv = 1.0f / sqrtf(ss / (float)k + eps);
    }
    float m = 0.0f;
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        const float y = w != nullptr ? xr[i] * inv * w[i] : xr[i];
        m = fmaxf(m, fabsf(y));
    }
    m = block_max(m, fs);
    const float s = 127.0f / fmaxf(m, 1e-5f);
    int sum = 0;
    for (int i = threadIdx.x; i < k_pad; i += blockDim.x) {
        int v = 0;
        if (i < k) {
            const float y = w != nullptr ? xr[i] * inv * w[i] : xr[i];
            float r = rintf(__fmul_rn(y, s));
            r = fminf(fmaxf(r, -128.0f), 127.0f);
            v = (int)r;
        }
        qr[i] = (int8_t)v;
        sum += v;
    }
    sum = block_sum_i(sum, is);
    if (threadIdx.x == 0) {
        scale[t] = s;
        qsum[t] = sum;
    }
}

__device__ __forceinline__ int dot16(uint32_t w, const int* x, int acc) {
    acc = __dp4a((int)(w & 0x03030303u), x[0], acc);
    acc = __dp4a((int)((w >> 2) & 0x03030303u), x[1], acc);
    acc = __dp4a((int)((w >> 4) & 0x03030303u), x[2], acc);
    acc = __dp4a((int)((w >> 6) & 0x03030303u), x[3], acc);
    return acc;
}

#define GEMV_WARPS 8

// The value written for an output: v, or out + v when `accum` is set (the residual add fused
// into the epilogue: the same f32 addition as `add_inplace`, so identical values).
__device__ __forceinline__ void store_out(float* out, size_t i, float v, int accum) {
    out[i] = accum ? out[i] + v : v;
}

// Decode: one token. One warp per output row; the token's int8 activations are staged in
// shared memory (k_pad bytes). out[row] = (acc - Σq) / (x_scale · w_scale[row]).
extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)
ternary_gemv(const uint32_t* __restrict__ w, const float* __restrict__ wscale, int n, int kw,
             const int8_t* __restrict__ xq, const float* __restrict__ xs,
             const int* __restrict__ xsum, float* __restrict__ out, int accum) {
    PDL_ENTER;
    extern __shared__ int4 sx4[];
    const int nx4 = kw;  // int4 (16 bytes) of activations per token: k_pad / 16 = kw
    const int4* xg = reinterpret_cast<const int4*>(xq);
    for (int i = threadIdx.x; i < nx4; i += blockDim.x) sx4[i] = xg[i];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= n) return;
    const uint4* wr = reinterpret_cast<const uint4*>(w + (size_t)row * kw);
    const int* sx = reinterpret_cast<const int*>(sx4);
    const int nv = kw / 4;  // uint4 of weights per row (64 columns each)
    int acc = 0;
    for (int v = lane; v < nv; v += 32) {
        const uint4 p = __ldg(wr + v);
        const int* xv = sx + v * 16;
        acc = dot16(p.x, xv, acc);
        acc = dot16(p.y, xv + 4, acc);
        acc = dot16(p.z, xv + 8, acc);
        acc = dot16(p.w, xv + 12, acc);
    }
    acc = warp_sum_i(acc);
    if (lane == 0) {
        const float denom = xs[0] * wscale[row];
        store_out(out, row, (float)(acc - xsum[0]) / denom, accum);
    }
}

// Decode GEMV with the activations held in registers: no shared-memory staging (whose
// 64-byte-per-lane reads conflict on banks) and no block barrier. Each warp computes
// GR_ROWS rows; lane l handles weight vectors (64 columns) v = l + 32·j for j < NV, so
// k_pad ≤ NV · 2048. The weights do not depend on earlier kernels, so they are requested
// before `pdl_wait`. Integer sums and the final expression are those of `ternary_gemv`.
#define GR_WARPS 4
#define GR_ROWS 2
template <int NV>
__device__ __forceinline__ void gemv_regs(const uint32_t* __restrict__ w,
                                          const float* __restrict__ wscale, int n, int kw,
                                          const int8_t* xq, const float* xs, const int* xsum,
                                          float* out, int accum) {
    const int lane = threadIdx.x & 31;
    const int row0 = (blockIdx.x * GR_WARPS + (threadIdx.x >> 5)) * GR_ROWS;
    const int nv = kw / 4;
    uint4 wv[GR_ROWS][NV];
#pragma unroll
    for (int r = 0; r < GR_ROWS; r++) {
        const int row = row0 + r;
        const uint4* wr = reinterpret_cast<const uint4*>(w + (size_t)(row < n ? row : 0) * kw);
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int v = lane + 32 * j;
            wv[r][j] = make_uint4(0u, 0u, 0u, 0u);
            if (row < n && v < nv) wv[r][j] = __ldg(wr + v);
        }
    }
    PDL_ENTER;
    const int4* xg = reinterpret_cast<const int4*>(xq);
    int acc[GR_ROWS];
#pragma unroll
    for (int r = 0; r < GR_ROWS; r++) acc[r] = 0;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int v = lane + 32 * j;
        if (v < nv) {
            int x[16];
#pragma unroll
            for (int p = 0; p < 4; p++) {
                const int4 a = xg[(size_t)v * 4 + p];
                x[4 * p] = a.x;
                x[4 * p + 1] = a.y;
                x[4 * p + 2] = a.z;
                x[4 * p + 3] = a.w;
            }
#pragma unroll
            for (int r = 0; r < GR_ROWS; r++) {
                acc[r] = dot16(wv[r][j].x, x, acc[r]);
                acc[r] = dot16(wv[r][j].y, x + 4, acc[r]);
                acc[r] = dot16(wv[r][j].z, x + 8, acc[r]);
                acc[r] = dot16(wv[r][j].w, x + 12, acc[r]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GR_ROWS; r++) acc[r] = warp_sum_i(acc[r]);
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < GR_ROWS; r++) {
            const int row = row0 + r;
            if (row < n) {
                const float denom = xs[0] * wscale[row];
                store_out(out, row, (float)(acc[r] - xsum[0]) / denom, accum);
            }
        }
    }
}

#define GEMV_REGS(NV)                                                                        \
    extern "C" __global__ void __launch_bounds__(GR_WARPS * 32) ternary_gemv_regs##NV(       \
        const uint32_t* __restrict__ w, const float* __restrict__ wscale, int n, int kw,     \
        const int8_t* xq, const float* xs, const int* xsum, float* out, int accum) {         \
        gemv_regs<NV>(w, wscale, n, kw, xq, xs, xsum, out, accum);                           \
    }
GEMV_REGS(1)
GEMV_REGS(2)
GEMV_REGS(4)
GEMV_REGS(8)

// Prefill: m tokens. Block tile 64 rows × 32 tokens, 128 threads, each thread 4 rows × 4
// tokens; K is walked 64 columns (4 weight words, 16 activation words) at a time through
// shared memory. out[t·n + row] = (acc - Σq[t]) / (x_scale[t] · w_scale[row]) (+ out with
// `accum`).
#define GT_N 64
#define GT_M 32
extern "C" __global__ void __launch_bounds__(128)
ternary_gemm(const uint32_t* __restrict__ w, const float* __restrict__ wscale, int n, int kw,
             const int8_t* __restrict__ xq, const float* __restrict__ xs,
             const int* __restrict__ xsum, int m, float* __restrict__ out, int accum) {
    PDL_ENTER;
    __shared__ uint32_t ws[GT_N][5];
    __shared__ int xsm[GT_M][17];
    const int tid = threadIdx.x;
    const int n0 = blockIdx.x * GT_N, m0 = blockIdx.y * GT_M;
    const int rg = tid & 15, tg = tid >> 4;  // rows rg*4.., tokens tg*4..
    const size_t k_pad = (size_t)kw * 16;
    int acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int t = 0; t < 4; t++) acc[r][t] = 0;
    for (int c = 0; c < kw / 4; c++) {
        if (tid < GT_N) {
            const int row = n0 + tid;
            uint4 p = make_uint4(0x55555555u, 0x55555555u, 0x55555555u, 0x55555555u);
            if (row < n) p = __ldg(reinterpret_cast<const uint4*>(w + (size_t)row * kw) + c);
            ws[tid][0] = p.x;
            ws[tid][1] = p.y;
            ws[tid][2] = p.z;
            ws[tid][3] = p.w;
        }
        {
            const int tok = tid >> 2, part = tid & 3;
            int4 v = make_int4(0, 0, 0, 0);
            if (m0 + tok < m)
                v = __ldg(reinterpret_cast<const int4*>(xq + (size_t)(m0 + tok) * k_pad +
                                                       (size_t)c * 64) + part);
            xsm[tok][part * 4 + 0] = v.x;
            xsm[tok][part * 4 + 1] = v.y;
            xsm[tok][part * 4 + 2] = v.z;
            xsm[tok][part * 4 + 3] = v.w;
        }
        __syncthreads();
#pragma unroll
        for (int pw = 0; pw < 4; pw++) {
            uint32_t wv[4];
#pragma unroll
            for (int r = 0; r < 4; r++) wv[r] = ws[rg * 4 + r][pw];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int xv[4];
#pragma unroll
                for (int t = 0; t < 4; t++) xv[t] = xsm[tg * 4 + t][pw * 4 + j];
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    const int wc = (int)((wv[r] >> (2 * j)) & 0x03030303u);
#pragma unroll
                    for (int t = 0; t < 4; t++) acc[r][t] = __dp4a(wc, xv[t], acc[r][t]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int t = 0; t < 4; t++) {
        const int tok = m0 + tg * 4 + t;
        if (tok >= m) continue;
        const float sx = xs[tok];
        const int sq = xsum[tok];
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int row = n0 + rg * 4 + r;
            if (row < n) {
                const float denom = sx * wscale[row];
                store_out(out, (size_t)tok * n + row, (float)(acc[r][t] - sq) / denom, accum);
            }
        }
    }
}

// Prefill on int8 tensor cores (mma.sync m16n8k32, compute capability 8.0+): the same integer
// sums as `ternary_gemm` (codes 0..2 times int8 activations, exact in int32), the same
// epilogue. Block tile 64 rows × 64 tokens, 4 warps of 32 rows × 32 tokens; K walked 128
// columns at a time through shared memory. With the G2 layout, the A fragment of lane
// (group g, thread t) for columns 32·s + 4t .. +3 is `(word 2s >> 2t) & 0x03030303` of its
// row, and +16 columns is word 2s + 1: one shift and mask per register.
#define MM_N 64
#define MM_M 64
#define MM_KC 128
#define MM_WS (MM_KC / 16 + 1)  // words per weight row in shared memory (+1: no bank conflicts)
#define MM_XS (MM_KC / 4 + 4)   // ints per token row in shared memory (+4: no bank conflicts)
extern "C" __global__ void __launch_bounds__(128)
ternary_gemm_mma(const uint32_t* __restrict__ w, const float* __restrict__ wscale, int n, int kw,
                 const int8_t* __restrict__ xq, const float* __restrict__ xs,
                 const int* __restrict__ xsum, int m, float* __restrict__ out, int accum) {
    PDL_ENTER;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    __shared__ uint32_t ws[MM_N][MM_WS];
    __shared__ __align__(16) int xsm[MM_M][MM_XS];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tg = lane & 3;
    const int wr = (warp >> 1) * 32, wt = (warp & 1) * 32;  // the warp's rows and tokens
    const int n0 = blockIdx.x * MM_N, m0 = blockIdx.y * MM_M;
    const size_t k_pad = (size_t)kw * 16;
    int acc[2][4][4];
#pragma unroll
    for (int a = 0; a < 2; a++)
#pragma unroll
        for (int b = 0; b < 4; b++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[a][b][c] = 0;
    for (int c0 = 0; c0 < kw; c0 += MM_KC / 16) {
        {
            // Weights: 64 rows × 8 words, one uint4 per thread (kw is a multiple of 4).
            const int row = tid >> 1, part = tid & 1;
            const int word = c0 + part * 4;
            uint4 p = make_uint4(0u, 0u, 0u, 0u);
            if (n0 + row < n && word < kw)
                p = __ldg(reinterpret_cast<const uint4*>(w + (size_t)(n0 + row) * kw + word));
            ws[row][part * 4 + 0] = p.x;
            ws[row][part * 4 + 1] = p.y;
            ws[row][part * 4 + 2] = p.z;
            ws[row][part * 4 + 3] = p.w;
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            // Activations: 64 tokens × 128 bytes, four int4 per thread; zero past m and k_pad.
            const int idx = tid + 128 * i;
            const int tok = idx >> 3, part = idx & 7;
            const size_t col = (size_t)c0 * 16 + (size_t)part * 16;
            int4 v = make_int4(0, 0, 0, 0);
            if (m0 + tok < m && col < k_pad)
                v = *reinterpret_cast<const int4*>(xq + (size_t)(m0 + tok) * k_pad + col);
            *reinterpret_cast<int4*>(&xsm[tok][part * 4]) = v;
        }
        __syncthreads();
#pragma unroll
        for (int s = 0; s < MM_KC / 32; s++) {
            uint32_t af[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const int r = wr + mt * 16 + g;
                af[mt][0] = (ws[r][2 * s] >> (2 * tg)) & 0x03030303u;
                af[mt][1] = (ws[r + 8][2 * s] >> (2 * tg)) & 0x03030303u;
                af[mt][2] = (ws[r][2 * s + 1] >> (2 * tg)) & 0x03030303u;
                af[mt][3] = (ws[r + 8][2 * s + 1] >> (2 * tg)) & 0x03030303u;
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const int tok = wt + nt * 8 + g;
                const int b0 = xsm[tok][s * 8 + tg], b1 = xsm[tok][s * 8 + 4 + tg];
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    int* c = acc[mt][nt];
                    asm volatile(
                        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
                        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                        : "r"(af[mt][0]), "r"(af[mt][1]), "r"(af[mt][2]), "r"(af[mt][3]),
                          "r"(b0), "r"(b1));
                }
            }
        }
        __syncthreads();
    }
    // D fragment: c0, c1 at (row g, tokens 2t, 2t + 1), c2, c3 at row g + 8.
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int row = n0 + wr + mt * 16 + g + (i >= 2 ? 8 : 0);
                const int tok = m0 + wt + nt * 8 + 2 * tg + (i & 1);
                if (row < n && tok < m) {
                    const float denom = xs[tok] * wscale[row];
                    store_out(out, (size_t)tok * n + row, (float)(acc[mt][nt][i] - xsum[tok]) / denom,
                              accum);
                }
            }
#else
    __trap();  // the host launches this only on compute capability 8.0+
#endif
}
