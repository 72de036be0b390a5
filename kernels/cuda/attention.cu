// KV cache on the GPU and decode/prefill attention over it, with a rolling window and
// attention sinks. Must match the host statement in kernels/src/gpu_ref.rs:
// - INT4 storage: per token, per KV head, groups of `G` channels; scale = (max - min) / 15 and
//   min are stored as f16 (round to nearest even) and the codes are computed with the stored
//   (rounded) values: q = clamp(rint((x - min) / scale), 0, 15) (0 when scale is 0);
//   x ≈ fma(q, scale, min). Channel 2i is the low nibble of byte i, 2i + 1 the high nibble.
// - Slots: position p lives in slot p without a window; with a window, sinks keep slots
//   0..sinks and later positions roll through slots sinks..cap: sinks + (p - sinks) % (cap - sinks).
//   `pos[slot]` holds the position stored there (-1 when empty).
// - Visibility (StreamingLLM, as kernels' CPU mask): key p is seen by query qp when
//   p <= qp and (window == 0 or p < sinks or qp - p < window - sinks).
// - Sinks keep StreamingLLM's positions in the cache: once the window has rolled past query
//   qp (shift = qp + 1 - window > 0), sink keys are scored as if rotated by `shift` more
//   positions (RoPE with base `theta`; theta = 0 turns this off). Implemented by scoring sinks
//   against the query rotated back by `shift`, which equals rotating the keys forward.
// - Softmax over the visible keys of each (query, head) in f32, split over blocks of 256 slots
//   (flash-decoding): each block writes (max, sum, Σ p·v), and `attn_combine` merges them.
#include "common.cuh"

#define KV_F32 0
#define KV_F16 1
#define KV_I4 2
#define SPLIT 256

__device__ __forceinline__ int slot_of(int p, int cap, int window, int sinks) {
    if (window == 0 || p < sinks) return p;
    return sinks + (p - sinks) % (cap - sinks);
}

// Quantises one group of `g` channels (g even) into `dst` (g / 2 bytes) and its (scale, min).
__device__ void quant_group_i4(const float* x, int g, uint8_t* dst, __half2* sm) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < g; i++) {
        mn = fminf(mn, x[i]);
        mx = fmaxf(mx, x[i]);
    }
    const float sc = __fdiv_rn(__fsub_rn(mx, mn), 15.0f);
    const __half hs = __float2half_rn(sc), hm = __float2half_rn(mn);
    const float s = __half2float(hs), m0 = __half2float(hm);
    for (int i = 0; i < g; i += 2) {
        int c[2];
        for (int j = 0; j < 2; j++) {
            int v = 0;
            if (s > 0.0f) {
                float r = rintf(__fdiv_rn(__fsub_rn(x[i + j], m0), s));
                v = (int)fminf(fmaxf(r, 0.0f), 15.0f);
            }
            c[j] = v;
        }
        dst[i / 2] = (uint8_t)(c[0] | (c[1] << 4));
    }
    *sm = __halves2half2(hs, hm);
}

// Appends T tokens at positions *base .. *base + T - 1. k, v: [T][hkv][d] f32 (keys already
// rotated). Grid (T, hkv); any block size.
extern "C" __global__ void kv_store(const float* __restrict__ k, const float* __restrict__ v,
                                    int T, int hkv, int d, int group, int kind, int cap,
                                    int window, int sinks, const int* __restrict__ base,
                                    void* kd, __half2* ks, void* vd, __half2* vs, int* pos) {
    PDL_ENTER;
    const int t = blockIdx.x, h = blockIdx.y;
    const int p = *base + t;
    const int slot = slot_of(p, cap, window, sinks);
    const size_t row = (size_t)slot * hkv + h;
    const float* kr = k + ((size_t)t * hkv + h) * d;
    const float* vr = v + ((size_t)t * hkv + h) * d;
    if (kind == KV_I4) {
        const int ng = d / group;
        for (int i = threadIdx.x; i < 2 * ng; i += blockDim.x) {
            const int g = i % ng;
            const bool isv = i >= ng;
            const float* src = (isv ? vr : kr) + g * group;
            uint8_t* dst = (uint8_t*)(isv ? vd : kd) + row * (d / 2) + g * (group / 2);
            __half2* sm = (isv ? vs : ks) + row * ng + g;
            quant_group_i4(src, group, dst, sm);
        }
    } else if (kind == KV_F16) {
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            ((__half*)kd)[row * d + i] = __float2half_rn(kr[i]);
            ((__half*)vd)[row * d + i] = __float2half_rn(vr[i]);
        }
    } else {
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            ((float*)kd)[row * d + i] = kr[i];
            ((float*)vd)[row * d + i] = vr[i];
        }
    }
    if (threadIdx.x == 0 && h == 0) pos[slot] = p;
}

// Reads back rows of an INT4 cache as f32 ([rows][d], rows = cap · hkv), for tests.
extern "C" __global__ void kv_dequant_i4(const uint8_t* __restrict__ data,
                                         const __half2* __restrict__ sm, int rows, int d,
                                         int group, float* __restrict__ out) {
    PDL_ENTER;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * d) return;
    const size_t r = i / d;
    const int c = (int)(i % d);
    const uint8_t b = data[r * (d / 2) + c / 2];
    const int q = (c & 1) ? (b >> 4) : (b & 15);
    const __half2 s = sm[r * (d / group) + c / group];
    out[i] = fmaf((float)q, __low2float(s), __high2float(s));
}

template <int KIND>
__device__ __forceinline__ float k_dot(const float* qs, const void* kd, const __half2* ks,
                                       size_t row, int d, int group) {
    float acc = 0.0f;
    if (KIND == KV_F32) {
        const float4* kr = reinterpret_cast<const float4*>((const float*)kd + row * d);
        for (int i = 0; i < d / 4; i++) {
            const float4 v = kr[i];
            acc += qs[4 * i] * v.x + qs[4 * i + 1] * v.y + qs[4 * i + 2] * v.z +
                   qs[4 * i + 3] * v.w;
        }
    } else if (KIND == KV_F16) {
        const __half2* kr = reinterpret_cast<const __half2*>((const __half*)kd + row * d);
        for (int i = 0; i < d / 2; i++) {
            const float2 v = __half22float2(kr[i]);
            acc += qs[2 * i] * v.x + qs[2 * i + 1] * v.y;
        }
    } else {
        const uint32_t* kr =
            reinterpret_cast<const uint32_t*>((const uint8_t*)kd + row * (d / 2));
        const __half2* sr = ks + row * (d / group);
        const int words_per_group = group / 8;
        for (int g = 0; g < d / group; g++) {
            const __half2 sm = sr[g];
            const float s = __low2float(sm), m0 = __high2float(sm);
            for (int wi = 0; wi < words_per_group; wi++) {
                const uint32_t w = kr[g * words_per_group + wi];
                const float* qq = qs + g * group + wi * 8;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const float kv = fmaf((float)((w >> (4 * j)) & 15u), s, m0);
                    acc += qq[j] * kv;
                }
            }
        }
    }
    return acc;
}

// Channel c of a cached row (keys or values), as f32.
template <int KIND>
__device__ __forceinline__ float v_at(const void* vd, const __half2* vs, size_t row, int d,
                                      int group, int c) {
    if (KIND == KV_F32) return ((const float*)vd)[row * d + c];
    if (KIND == KV_F16) return __half2float(((const __half*)vd)[row * d + c]);
    const uint8_t b = ((const uint8_t*)vd)[row * (d / 2) + c / 2];
    const int q = (c & 1) ? (b >> 4) : (b & 15);
    const __half2 sm = vs[row * (d / group) + c / group];
    return fmaf((float)q, __low2float(sm), __high2float(sm));
}

// One block per (head, query token, split of 256 slots); 256 threads, one slot each for the
// scores, then (channel, part) pairs for Σ p·v. q: [T][H][d] f32 (rotated). Partial outputs
// are indexed [(t·H + h)·S + split].
template <int KIND>
__device__ void attn_partial(const float* __restrict__ q, int T, int H, int hkv, int d,
                             int group, const void* kd, const __half2* ks, const void* vd,
                             const __half2* vs, const int* __restrict__ pos, int cap,
                             const int* __restrict__ base, int window, int sinks,
                             float theta, float sm_scale, int skip_empty, float* pm, float* pl,
                             float* pacc) {
    __shared__ float qs[256];
    __shared__ float qsink[256];
    __shared__ float pw[SPLIT];
    __shared__ float red[32];
    __shared__ float part[256];
    const int h = blockIdx.x, t = blockIdx.y, sp = blockIdx.z, S = gridDim.z;
    const int kvh = h / (H / hkv);
    const int qp = *base + t;
    const size_t o = ((size_t)t * H + h) * S + sp;
    // With `skip_empty`, a split whose slots all lie past the query's position exits at once:
    // while qp < cap, position p ≤ qp lives in slot p (with or without a window), so slots
    // > qp hold only later positions or nothing, which the mask hides anyway. The split's
    // result (max −inf, sum 0) is what the full computation gives, and `attn_combine` skips it.
    if (skip_empty && qp < cap && sp * SPLIT > qp) {
        if (threadIdx.x == 0) {
            pm[o] = -INFINITY;
            pl[o] = 0.0f;
        }
        return;
    }
    for (int i = threadIdx.x; i < d; i += blockDim.x) qs[i] = q[((size_t)t * H + h) * d + i];
    __syncthreads();
    const int shift = (window > 0 && sinks > 0 && theta > 0.0f) ? qp + 1 - window : 0;
    const int half = d / 2;
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        float a = qs[j], b = qs[j + half];
        if (shift > 0) {
            // Rotate by -shift·inv_freq (angles in double: positions can be large).
            const double ang = (double)shift * pow((double)theta, -2.0 * j / (double)d);
            const float c = (float)cos(ang), sn = (float)sin(ang);
            const float a2 = a * c + b * sn, b2 = b * c - a * sn;
            a = a2;
            b = b2;
        }
        qsink[j] = a;
        qsink[j + half] = b;
    }
    __syncthreads();
    const int slot = sp * SPLIT + threadIdx.x;
    float score = -INFINITY;
    if (slot < cap) {
        const int p = pos[slot];
        const bool vis = p >= 0 && p <= qp &&
                         (window == 0 || p < sinks || qp - p < window - sinks);
        if (vis)
            score = k_dot<KIND>(p < sinks ? qsink : qs, kd, ks, (size_t)slot * hkv + kvh, d,
                                group) *
                    sm_scale;
    }
    const float mx = block_max(score, red);
    const float e = score == -INFINITY ? 0.0f : expf(score - mx);
    const float l = block_sum(e, red);
    pw[threadIdx.x] = e;
    __syncthreads();
    const int nparts = SPLIT / d;
    const int c = threadIdx.x % d, pi = threadIdx.x / d;
    float acc = 0.0f;
    if (pi < nparts) {
        for (int i = pi; i < SPLIT; i += nparts) {
            const float wgt = pw[i];
            if (wgt != 0.0f)
                acc += wgt * v_at<KIND>(vd, vs, (size_t)(sp * SPLIT + i) * hkv + kvh, d, group, c);
        }
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.x < d) {
        float s = 0.0f;
        for (int j = 0; j < nparts; j++) s += part[j * d + threadIdx.x];
        pacc[o * d + threadIdx.x] = s;
    }
    if (threadIdx.x == 0) {
        pm[o] = mx;
        pl[o] = l;
    }
}

#define ATTN_ARGS                                                                           \
    const float *__restrict__ q, int T, int H, int hkv, int d, int group, const void *kd,   \
        const __half2 *ks, const void *vd, const __half2 *vs, const int *__restrict__ pos,  \
        int cap, const int *__restrict__ base, int window, int sinks, float theta,          \
        float sm_scale, int skip_empty,                                                     \
        float *pm, float *pl, float *pacc
#define ATTN_PASS q, T, H, hkv, d, group, kd, ks, vd, vs, pos, cap, base, window, sinks, theta, sm_scale, skip_empty, pm, pl, pacc

// One entry point per cache kind: NAME_f32, NAME_f16, NAME_i4 running FN<KIND>.
#define ATTN_KERNELS(NAME, FN, THREADS)                                                     \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME##_f32(ATTN_ARGS) {           \
        PDL_ENTER;                                                                          \
        FN<KV_F32>(ATTN_PASS);                                                              \
    }                                                                                       \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME##_f16(ATTN_ARGS) {           \
        PDL_ENTER;                                                                          \
        FN<KV_F16>(ATTN_PASS);                                                              \
    }                                                                                       \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME##_i4(ATTN_ARGS) {            \
        PDL_ENTER;                                                                          \
        FN<KV_I4>(ATTN_PASS);                                                               \
    }
ATTN_KERNELS(attn_partial, attn_partial, SPLIT)

// Merges the S partial results of each (token, head): out [T][H][d].
extern "C" __global__ void attn_combine(const float* __restrict__ pm, const float* __restrict__ pl,
                                        const float* __restrict__ pacc, int H, int d, int S,
                                        float* __restrict__ out) {
    PDL_ENTER;
    const int h = blockIdx.x, t = blockIdx.y;
    const size_t o = ((size_t)t * H + h) * S;
    float M = -INFINITY;
    for (int s = 0; s < S; s++) M = fmaxf(M, pm[o + s]);
    float L = 0.0f;
    for (int s = 0; s < S; s++)
        if (pm[o + s] != -INFINITY) L += pl[o + s] * expf(pm[o + s] - M);
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < S; s++)
            if (pm[o + s] != -INFINITY) acc += pacc[(o + s) * d + c] * expf(pm[o + s] - M);
        out[((size_t)t * H + h) * d + c] = L > 0.0f ? acc / L : 0.0f;
    }
}

// Grouped-query variant of `attn_partial` (host `Tuning::attn_group`): one block per (KV head,
// query token, split of 256 slots) serves all G = H / hkv query heads of that KV head, so each
// cached key and value is read once per block instead of once per query head. Keys are scored
// by 8 lanes each (d / 8 channels per lane, contiguous, reduced with three shuffles), four keys
// per warp at a time; values are accumulated per channel. Same visibility, sink shift, split
// results and `attn_combine` as `attn_partial`; the float sums run in another order (tested
// against the naive statement within the same tolerance). G ≤ 8, d ≤ 256, 128 threads.
#define AG_THREADS 128
#define AG_MAXG 8

template <int KIND>
__device__ __forceinline__ void load_k_slice(const void* kd, const __half2* ks, size_t row, int d,
                                             int group, int c0, int cpl, float* out) {
    if (KIND == KV_F32) {
        const float* kr = (const float*)kd + row * d + c0;
        if (cpl == 16) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float4 v = reinterpret_cast<const float4*>(kr)[i];
                out[4 * i] = v.x;
                out[4 * i + 1] = v.y;
                out[4 * i + 2] = v.z;
                out[4 * i + 3] = v.w;
            }
        } else {
#pragma unroll
            for (int j = 0; j < 32; j++)
                if (j < cpl) out[j] = kr[j];
        }
    } else if (KIND == KV_F16) {
        const __half* kr = (const __half*)kd + row * d + c0;
        if (cpl == 16) {
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const uint4 u = reinterpret_cast<const uint4*>(kr)[i];
                const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const float2 f = __half22float2(h[j]);
                    out[8 * i + 2 * j] = f.x;
                    out[8 * i + 2 * j + 1] = f.y;
                }
            }
        } else {
#pragma unroll
            for (int j = 0; j < 32; j++)
                if (j < cpl) out[j] = __half2float(kr[j]);
        }
    } else {
        // c0 and cpl are multiples of 2 or cpl == 1 (d = 8): channel c is nibble c & 1 of
        // byte c / 2; one (scale, min) per group of channels.
        const uint8_t* kr = (const uint8_t*)kd + row * (d / 2);
        const __half2* sr = ks + row * (d / group);
        if (cpl == 16) {
            const uint2 u = *reinterpret_cast<const uint2*>(kr + c0 / 2);
            const __half2 sm = sr[c0 / group];
            const float s = __low2float(sm), m0 = __high2float(sm);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const uint32_t w = j < 4 ? u.x : u.y;
                const int sh = 8 * (j & 3);
                out[2 * j] = fmaf((float)((w >> sh) & 15u), s, m0);
                out[2 * j + 1] = fmaf((float)((w >> (sh + 4)) & 15u), s, m0);
            }
        } else {
#pragma unroll
            for (int j = 0; j < 32; j++) {
                if (j >= cpl) break;
                const int c = c0 + j;
                const uint8_t b = kr[c / 2];
                const int q = (c & 1) ? (b >> 4) : (b & 15);
                const __half2 sm = sr[c / group];
                out[j] = fmaf((float)q, __low2float(sm), __high2float(sm));
            }
        }
    }
}

template <int KIND>
__device__ void attn_group(const float* __restrict__ q, int T, int H, int hkv, int d, int group,
                           const void* kd, const __half2* ks, const void* vd, const __half2* vs,
                           const int* __restrict__ pos, int cap, const int* __restrict__ base,
                           int window, int sinks, float theta, float sm_scale, int skip_empty,
                           float* pm, float* pl, float* pacc) {
    __shared__ float qs[AG_MAXG][256];
    __shared__ float qsk[AG_MAXG][256];
    __shared__ float sc[AG_MAXG][SPLIT];
    __shared__ float vred[AG_MAXG][AG_THREADS];
    __shared__ float gmax[AG_MAXG], gsum[AG_MAXG];
    const int kvh = blockIdx.x, t = blockIdx.y, sp = blockIdx.z, S = gridDim.z;
    const int G = H / hkv;
    const int qp = *base + t;
    const int tid = threadIdx.x;
    if (skip_empty && qp < cap && sp * SPLIT > qp) {
        if (tid < G) {
            const size_t o = ((size_t)t * H + kvh * G + tid) * S + sp;
            pm[o] = -INFINITY;
            pl[o] = 0.0f;
        }
        return;
    }
    for (int i = tid; i < G * d; i += AG_THREADS) {
        const int g = i / d, c = i % d;
        qs[g][c] = q[((size_t)t * H + kvh * G + g) * d + c];
    }
    __syncthreads();
    const int shift = (window > 0 && sinks > 0 && theta > 0.0f) ? qp + 1 - window : 0;
    const bool need_sinks = shift > 0 && sp * SPLIT < sinks;
    if (need_sinks) {
        const int half = d / 2;
        for (int i = tid; i < G * half; i += AG_THREADS) {
            const int g = i / half, j = i % half;
            float a = qs[g][j], b = qs[g][j + half];
            const double ang = (double)shift * pow((double)theta, -2.0 * j / (double)d);
            const float c = (float)cos(ang), sn = (float)sin(ang);
            qsk[g][j] = a * c + b * sn;
            qsk[g][j + half] = b * c - a * sn;
        }
        __syncthreads();
    }
    // Scores: warp w, key group kg (4 per warp) take slots 16·i + 4·w + kg.
    const int lane = tid & 31, warp = tid >> 5, kg = lane >> 3, sub = lane & 7;
    const int cpl = d / 8, c0 = sub * cpl;
    for (int i = 0; i < SPLIT / 16; i++) {
        const int local = 16 * i + 4 * warp + kg;
        const int slot = sp * SPLIT + local;
        bool vis = false;
        int p = -1;
        if (slot < cap) {
            p = pos[slot];
            vis = p >= 0 && p <= qp && (window == 0 || p < sinks || qp - p < window - sinks);
        }
        float kv[32];
#pragma unroll
        for (int j = 0; j < 32; j++) kv[j] = 0.0f;
        if (vis) load_k_slice<KIND>(kd, ks, (size_t)slot * hkv + kvh, d, group, c0, cpl, kv);
        const bool sink = vis && p < sinks && need_sinks;
        for (int g = 0; g < G; g++) {
            const float* qq = sink ? &qsk[g][c0] : &qs[g][c0];
            float part = 0.0f;
#pragma unroll
            for (int j = 0; j < 32; j++)
                if (j < cpl) part = fmaf(qq[j], kv[j], part);
            part += __shfl_xor_sync(0xffffffffu, part, 4);
            part += __shfl_xor_sync(0xffffffffu, part, 2);
            part += __shfl_xor_sync(0xffffffffu, part, 1);
            if (sub == 0) sc[g][local] = vis ? part * sm_scale : -INFINITY;
        }
    }
    __syncthreads();
    // Softmax statistics per query head: warp w takes heads w, w + 4.
    for (int g = warp; g < G; g += AG_THREADS / 32) {
        float m = -INFINITY;
        for (int i = lane; i < SPLIT; i += 32) m = fmaxf(m, sc[g][i]);
        m = warp_max(m);
        float l = 0.0f;
        for (int i = lane; i < SPLIT; i += 32) {
            const float s = sc[g][i];
            const float e = s == -INFINITY ? 0.0f : expf(s - m);
            sc[g][i] = e;
            l += e;
        }
        l = warp_sum(l);
        if (lane == 0) {
            gmax[g] = m;
            gsum[g] = l;
        }
    }
    __syncthreads();
    // Σ p·v: cw = min(d, 128) channels per pass, `parts` threads per channel splitting the
    // slots (thread: channel cb + tid % cw, slots part, part + parts, ...).
    const int cw = d < AG_THREADS ? d : AG_THREADS;
    const int parts = AG_THREADS / cw;
    const int part = tid / cw;
    for (int cb = 0; cb < d; cb += cw) {
        const int c = cb + tid % cw;
        float acc[AG_MAXG];
#pragma unroll
        for (int g = 0; g < AG_MAXG; g++) acc[g] = 0.0f;
        if (part < parts && c < d) {
            for (int i = part; i < SPLIT; i += parts) {
                bool any = false;
                for (int g = 0; g < G; g++) any |= sc[g][i] != 0.0f;
                if (!any) continue;
                const float v = v_at<KIND>(vd, vs, (size_t)(sp * SPLIT + i) * hkv + kvh, d,
                                           group, c);
#pragma unroll
                for (int g = 0; g < AG_MAXG; g++)
                    if (g < G) acc[g] = fmaf(sc[g][i], v, acc[g]);
            }
        }
        __syncthreads();  // the previous pass has read vred
#pragma unroll
        for (int g = 0; g < AG_MAXG; g++)
            if (g < G) vred[g][tid] = acc[g];
        __syncthreads();
        if (tid < cw && c < d) {
            for (int g = 0; g < G; g++) {
                float s = 0.0f;
                for (int j = 0; j < parts; j++) s += vred[g][j * cw + tid];
                const size_t o = ((size_t)t * H + kvh * G + g) * S + sp;
                pacc[o * d + c] = s;
            }
        }
    }
    if (tid < G) {
        const size_t o = ((size_t)t * H + kvh * G + tid) * S + sp;
        pm[o] = gmax[tid];
        pl[o] = gsum[tid];
    }
}

ATTN_KERNELS(attn_group, attn_group, AG_THREADS)
