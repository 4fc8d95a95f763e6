// trellis.cu — bitshift trellis codes on the GPU (issue 12's candidate codec; src/trellis.rs is the
// reference and defines the stream): k_tbq_trellis_encode_L*_K* (Viterbi, one thread block per
// block of values) and k_tbq_trellis_decode_L*_K* (one thread per value). Not a ggml type yet: these
// kernels exist to measure what a trellis set_rows and its decode cost before a format is frozen.
//
// Encoder: 2^L states, G = 2^(L−k) threads. Thread t owns the H = 2^k states {t + G·c} — exactly
// the successors of group t, whose predecessors are {t·H + h} — so a step is, per thread: H loads of
// the previous costs, one H-way minimum (costs are non-negative floats: their bits order as
// integers, and the low k mantissa bits carry the argmin h), H fused multiply-adds against the
// state values held in registers, H stores; one barrier per step (two cost buffers).
// Costs live in shared memory swizzled by s ^ ((s >> 5) mod H): the reads {t·H + h} of a warp
// (stride H) and its writes {t + G·c} (consecutive) both hit 32 distinct banks.
// Traceback: one u8 argmin per group and step in shared memory, walked by one thread.
#include <stdint.h>

#include "tbq-format.cuh"

struct tbq_trellis_shape {
    int64_t n_blocks;
    int32_t b;           // values per block (even, 2..256)
    int32_t n_words;     // words per stream (src/trellis.rs: stream_words)
    int32_t tail_biting; // 0: free start, 1: circular stream (two passes)
    float code_mul;      // codebook multiplier a / σ (f32, as the reference computes it)
};

struct tbq_trellis_params {
    const float * y;     // [n_blocks, b] values (rotated domain)
    uint32_t * words;    // [n_blocks, n_words] code streams
    float * d;           // [n_blocks] least-squares scales
    float * cost;        // [n_blocks] path cost of y / rms (may be null)
    tbq_trellis_shape shape;
};

static __device__ __forceinline__ float tr_code(uint32_t s, float mul) {
    const uint32_t x = s * TBQ_TRELLIS_MAD_MUL + TBQ_TRELLIS_MAD_ADD;
    const int sum = (int) __dp4a(x, 0x01010101u, 0u); // the four bytes' sum
    return (float) (sum - TBQ_TRELLIS_MAD_MEAN) * mul;
}

template <int K>
static __device__ __forceinline__ int tr_phys(int s) {
    return s ^ ((s >> 5) & ((1 << K) - 1));
}

// Block-wide minimum of u64 keys (every thread gets it). red: 32 words of shared memory.
static __device__ __forceinline__ uint64_t tr_block_min(uint64_t v, uint64_t * red) {
    for (int o = 16; o > 0; o >>= 1) {
        const uint64_t w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w < v ? w : v;
    }
    const int warp = threadIdx.x / 32, nw = blockDim.x / 32;
    __syncthreads();
    if (threadIdx.x % 32 == 0) red[warp] = v;
    __syncthreads();
    v = red[0];
    for (int i = 1; i < nw; ++i) v = red[i] < v ? red[i] : v;
    return v;
}

static __device__ __forceinline__ float tr_block_sum(float v, float * red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, nw = blockDim.x / 32;
    __syncthreads();
    if (threadIdx.x % 32 == 0) red[warp] = v;
    __syncthreads();
    v = 0.0f;
    for (int i = 0; i < nw; ++i) v += red[i];
    return v;
}

struct tr_smem {
    float * cost0;
    float * cost1;
    float * ys;
    uint8_t * back;
    uint16_t * path;
    uint64_t * red;
    uint32_t * words;
};

// One Viterbi pass over ys (read from index `roll` on, circularly); fix >= 0 holds the path to a
// tail-biting overlap. Walks the survivor back from the last value to value `stop`, storing the
// states into sm.path when `store`; returns the state at `stop` (every thread).
template <int L, int K>
static __device__ uint32_t tr_viterbi(const tr_smem & sm, int b, int roll, int fix, const float (&cv)[1 << K],
                                      bool store, int stop) {
    constexpr int H = 1 << K, G = 1 << (L - K);
    const int t = threadIdx.x;
    float * cur = sm.cost0;
    float * nxt = sm.cost1;
    {
        const float y0 = sm.ys[roll];
#pragma unroll
        for (int c = 0; c < H; ++c) {
            const float e = y0 - cv[c];
            cur[tr_phys<K>(t + G * c)] = (fix < 0 || t == fix) ? e * e : __int_as_float(0x7f800000);
        }
    }
    for (int i = 1; i < b; ++i) {
        __syncthreads();
        int ii = i + roll;
        ii -= ii >= b ? b : 0;
        const float yi = sm.ys[ii];
        uint32_t best = 0xffffffffu;
#pragma unroll
        for (int h = 0; h < H; ++h) {
            const uint32_t key = (__float_as_uint(cur[tr_phys<K>(t * H + h)]) & ~(uint32_t) (H - 1)) | (uint32_t) h;
            best = min(best, key);
        }
        sm.back[i * G + t] = (uint8_t) (best & (H - 1));
        const float m = __uint_as_float(best & ~(uint32_t) (H - 1));
#pragma unroll
        for (int c = 0; c < H; ++c) {
            const float e = yi - cv[c];
            nxt[tr_phys<K>(t + G * c)] = fmaf(e, e, m);
        }
        float * tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    __syncthreads();
    uint64_t key = ~0ull;
#pragma unroll
    for (int c = 0; c < H; ++c) {
        const int s = t + G * c;
        if (fix < 0 || (s >> K) == fix) {
            const uint64_t k = ((uint64_t) __float_as_uint(cur[tr_phys<K>(s)]) << 32) | (uint32_t) s;
            key = k < key ? k : key;
        }
    }
    key = tr_block_min(key, sm.red);
    __syncthreads(); // every thread has read red before thread 0 reuses it
    if (t == 0) {
        uint32_t s = (uint32_t) key;
        for (int i = b - 1; i > stop; --i) {
            if (store) sm.path[i] = (uint16_t) s;
            const uint32_t j = s & (G - 1);
            s = j * H + sm.back[i * G + j];
        }
        if (store) sm.path[stop] = (uint16_t) s;
        sm.red[0] = s;
    }
    __syncthreads();
    const uint32_t s = (uint32_t) sm.red[0];
    __syncthreads();
    return s;
}

template <int L, int K>
static __device__ void tr_encode(const tbq_trellis_params & p) {
    constexpr int H = 1 << K, G = 1 << (L - K), S = 1 << L;
    extern __shared__ __align__(16) uint8_t tr_shared[];
    const tbq_trellis_shape & sh = p.shape;
    const int b = sh.b, t = threadIdx.x;
    tr_smem sm;
    sm.cost0 = (float *) tr_shared;
    sm.cost1 = sm.cost0 + S;
    sm.ys = sm.cost1 + S;
    sm.red = (uint64_t *) (sm.ys + ((b + 1) & ~1));
    sm.words = (uint32_t *) (sm.red + 32);
    sm.path = (uint16_t *) (sm.words + ((sh.n_words + 1) & ~1));
    sm.back = (uint8_t *) (sm.path + ((b + 3) & ~3));

    float cv[H];
#pragma unroll
    for (int c = 0; c < H; ++c) cv[c] = tr_code((uint32_t) (t + G * c), sh.code_mul);
    const int bits = b * K + (sh.tail_biting ? 0 : L - K);

    for (int64_t blk = blockIdx.x; blk < sh.n_blocks; blk += gridDim.x) {
        const float * y = p.y + blk * b;
        float ss = 0.0f;
        for (int i = t; i < b; i += G) {
            const float v = y[i];
            sm.ys[i] = v;
            ss = fmaf(v, v, ss);
        }
        const float rms = sqrtf(tr_block_sum(ss, (float *) sm.red) / (float) b);
        const bool finite = isfinite(rms) && rms > 0.0f;
        for (int i = t; i < b; i += G) sm.ys[i] = finite ? __fdiv_rn(sm.ys[i], rms) : 0.0f;
        for (int w = t; w < sh.n_words; w += G) sm.words[w] = 0u;
        __syncthreads();

        int fix = -1;
        if (sh.tail_biting) {
            const int half = b / 2;
            fix = (int) (tr_viterbi<L, K>(sm, b, half, -1, cv, false, half) & (G - 1));
        }
        tr_viterbi<L, K>(sm, b, 0, fix, cv, true, 0);

        // pack the stream; least-squares scale and path cost
        float yr = 0.0f, rr = 0.0f, err = 0.0f;
        for (int i = t; i < b; i += G) {
            const uint32_t s = sm.path[i];
            const float r = tr_code(s, sh.code_mul), yn = sm.ys[i];
            yr = fmaf(yn, r, yr);
            rr = fmaf(r, r, rr);
            err = fmaf(yn - r, yn - r, err);
            const bool whole = i == 0 && !sh.tail_biting;
            const int n = whole ? L : K;
            const uint32_t v = whole ? s : s >> (L - K);
            const int pos = whole ? 0 : i * K + L - K;
            for (int q = 0; q < n; ++q) {
                int bp = pos + q;
                bp -= bp >= bits ? bits : 0;
                if ((v >> q) & 1u) atomicOr(&sm.words[bp / 32], 1u << (bp % 32));
            }
        }
        yr = tr_block_sum(yr, (float *) sm.red);
        rr = tr_block_sum(rr, (float *) sm.red);
        err = tr_block_sum(err, (float *) sm.red);
        uint32_t * out = p.words + blk * sh.n_words;
        for (int w = t; w < sh.n_words; w += G) out[w] = sm.words[w];
        if (t == 0) {
            p.d[blk] = finite && rr > 0.0f ? rms * (yr / rr) : 0.0f;
            if (p.cost) p.cost[blk] = err;
        }
        __syncthreads();
    }
}

struct tbq_trellis_decode_params {
    const uint32_t * words; // [n_blocks, n_words]
    const float * d;        // [n_blocks]
    float * out;            // [n_blocks, b]
    tbq_trellis_shape shape;
};

// One thread per value: the L-bit window at bit i·k, a 1MAD hash, the block scale.
template <int L, int K>
static __device__ void tr_decode(const tbq_trellis_decode_params & p) {
    const tbq_trellis_shape & sh = p.shape;
    const int64_t n = sh.n_blocks * sh.b;
    const int body_words = sh.b * K / 32; // a circular stream wraps at a word boundary (b·k % 32 == 0)
    for (int64_t g = (int64_t) blockIdx.x * blockDim.x + threadIdx.x; g < n; g += (int64_t) gridDim.x * blockDim.x) {
        const int64_t blk = g / sh.b;
        const int i = (int) (g - blk * sh.b);
        const uint32_t * w = p.words + blk * sh.n_words;
        const int pos = i * K, w0 = pos / 32;
        int w1 = w0 + 1;
        if (sh.tail_biting) w1 -= w1 >= body_words ? body_words : 0;
        const uint64_t win = (uint64_t) w[w0] | ((w1 < sh.n_words ? (uint64_t) w[w1] : 0ull) << 32);
        const uint32_t s = (uint32_t) (win >> (pos % 32)) & ((1u << L) - 1u);
        p.out[g] = p.d[blk] * tr_code(s, sh.code_mul);
    }
}

#define TBQ_TRELLIS(L, K)                                                                                 \
    extern "C" __global__ void __launch_bounds__(1 << (L - K)) k_tbq_trellis_encode_L##L##_K##K(         \
        const tbq_trellis_params p) {                                                                     \
        tr_encode<L, K>(p);                                                                               \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(256) k_tbq_trellis_decode_L##L##_K##K(                  \
        const tbq_trellis_decode_params p) {                                                              \
        tr_decode<L, K>(p);                                                                               \
    }

TBQ_TRELLIS(8, 3)
TBQ_TRELLIS(9, 3)
TBQ_TRELLIS(10, 3)
TBQ_TRELLIS(12, 3)
TBQ_TRELLIS(10, 4)
TBQ_TRELLIS(12, 4)
