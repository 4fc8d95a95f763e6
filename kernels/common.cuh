// common.cuh — block-level device functions shared by set_rows, get_rows and flash attention.
//
// One warp holds one 128-element block: lane l holds coordinates l, l+32, l+64, l+96 (slots
// 0..3); a 64-wide block (the _64 types, tbq_traits<T>::slots == 2) only slots 0 and 1. This is the canonical order of the CPU reference (src/rotation.rs, src/packing.rs), so
// the Walsh-Hadamard butterfly, the norm sums and the code packing below agree with it bit for
// bit. Constants (levels, thresholds, signs, block sizes, bit planes) come from the generated
// tbq-format.cuh, written by build.rs from the crate's format table.
#pragma once

#include <stdint.h>
#include <cuda_fp16.h>

#include "tbq-format.cuh"

#define TBQ_WARP_SIZE 32
#define TBQ_FULL_MASK 0xffffffffu

// Element types beside the tbq types (tbq_dtype in tbq.h; tbq types are 0 and 1).
#define TBQ_DTYPE_F32  100
#define TBQ_DTYPE_F16  101
#define TBQ_DTYPE_Q8_0 102
#define TBQ_DTYPE_I32  103
#define TBQ_DTYPE_I64  104

// ggml's q8_0: 32 int8 values and one half scale.
#define TBQ_Q8_0_BLOCK_ELEMS 32
#define TBQ_Q8_0_BLOCK_BYTES 34

// The 4 sign bits of D for a lane's slots (bit s set: coordinate lane + 32*s is negated).
static __device__ __forceinline__ uint32_t tbq_lane_signs(int lane) {
    const uint64_t lo = TBQ_SIGNS_LO, hi = TBQ_SIGNS_HI;
    return (uint32_t) ((lo >> lane) & 1) | (uint32_t) (((lo >> (lane + 32)) & 1) << 1) |
           (uint32_t) (((hi >> lane) & 1) << 2) | (uint32_t) (((hi >> (lane + 32)) & 1) << 3);
}

// x or -x by sign bit s of `signs` (exactly x * ±1.0f, as the CPU reference computes it).
static __device__ __forceinline__ float tbq_apply_sign(float x, uint32_t signs, int s) {
    return (signs >> s) & 1 ? -x : x;
}

// In-place unnormalized Walsh-Hadamard transform of one block held by a warp: spans 1, 2, 4, 8,
// 16 across lanes (the lane whose bit h is clear holds the lower coordinate a and computes a + b,
// its partner b computes a - b), then 32 and 64 inside each lane. Same order and same
// operations as rotation::fwht. S = 2 (a 64-wide block): slots 0 and 1 only, no span 64.
template <int S = 4>
static __device__ __forceinline__ void tbq_fwht_warp(float v[4], int lane) {
    static_assert(S == 4 || S == 2, "blocks are 128 or 64 wide");
#pragma unroll
    for (int h = 1; h < TBQ_WARP_SIZE; h <<= 1) {
#pragma unroll
        for (int s = 0; s < S; ++s) {
            const float o = __shfl_xor_sync(TBQ_FULL_MASK, v[s], h);
            v[s] = (lane & h) ? __fsub_rn(o, v[s]) : __fadd_rn(v[s], o);
        }
    }
    // span 32: slots (0,1) and (2,3); span 64: slots (0,2) and (1,3).
    float a = v[0], b = v[1];
    v[0] = __fadd_rn(a, b); v[1] = __fsub_rn(a, b);
    if constexpr (S == 2) {
        return;
    }
    a = v[2]; b = v[3];
    v[2] = __fadd_rn(a, b); v[3] = __fsub_rn(a, b);
    a = v[0]; b = v[2];
    v[0] = __fadd_rn(a, b); v[2] = __fsub_rn(a, b);
    a = v[1]; b = v[3];
    v[1] = __fadd_rn(a, b); v[3] = __fsub_rn(a, b);
}

// Warp-wide sum in the canonical butterfly order (rotation::warp_sum_canonical): every lane gets
// the same value, bit for bit the CPU reference's.
static __device__ __forceinline__ float tbq_warp_sum_canonical(float s) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        s = __fadd_rn(s, __shfl_xor_sync(TBQ_FULL_MASK, s, off));
    }
    return s;
}

// Sum of squares in the canonical order (rotation::sum_squares_canonical): each lane v0², then
// += v1², v2², v3² (no FMA; S = 2: v1² only), then an xor butterfly over 16, 8, 4, 2, 1. Every
// lane gets the same value.
template <int S = 4>
static __device__ __forceinline__ float tbq_sum_squares_warp(const float v[4]) {
    float s = __fmul_rn(v[0], v[0]);
#pragma unroll
    for (int k = 1; k < S; ++k) {
        s = __fadd_rn(s, __fmul_rn(v[k], v[k]));
    }
    return tbq_warp_sum_canonical(s);
}

// Warp-wide sum (any order; not part of the bit-exact paths).
static __device__ __forceinline__ float tbq_warp_sum(float s) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        s += __shfl_xor_sync(TBQ_FULL_MASK, s, off);
    }
    return s;
}

static __device__ __forceinline__ float tbq_warp_max(float s) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        s = fmaxf(s, __shfl_xor_sync(TBQ_FULL_MASK, s, off));
    }
    return s;
}

// The code of the level nearest to y (TypeSpec::encode): y > 0 -> h + #{t : y > t};
// else h - 1 - #{t : -y >= t}.
template <int T>
static __device__ __forceinline__ uint32_t tbq_encode(float y) {
    using tr = tbq_traits<T>;
    const float * b = tr::bounds();
    uint32_t c;
    if (y > 0.0f) {
        c = tr::n_half;
#pragma unroll
        for (int k = 0; k < tr::n_bounds; ++k) {
            c += y > b[k];
        }
    } else {
        const float a = -y;
        c = tr::n_half - 1;
#pragma unroll
        for (int k = 0; k < tr::n_bounds; ++k) {
            c -= a >= b[k];
        }
    }
    return c;
}

// The same code as tbq_encode, in a constant number of instructions: |y| · 16 (exact: a power of
// two) picks one of 64 buckets of width 1/16; a bucket holds the count of thresholds below it and
// the one threshold inside it, if any (+inf otherwise). Every codebook's thresholds are more than
// 1/16 apart (tbq6: 0.0669; checked when the table is filled), so a bucket holds at most one, and
// the count is exact: #{t < lo} + [|y| > t*] for y > 0, + [|y| >= t*] for y <= 0.
#define TBQ_ENCODE_BUCKETS 64

template <int T>
static __device__ __forceinline__ void tbq_fill_encode_buckets(int2 * bk) {
    using tr = tbq_traits<T>;
    const float * b = tr::bounds();
    for (int i = threadIdx.x; i < TBQ_ENCODE_BUCKETS; i += blockDim.x) {
        const float lo = i * (1.0f / 16), hi = i == TBQ_ENCODE_BUCKETS - 1 ? INFINITY : (i + 1) * (1.0f / 16);
        int below = 0, inside = 0;
        float t = INFINITY;
        for (int k = 0; k < tr::n_bounds; ++k) {
            below += b[k] < lo;
            if (b[k] >= lo && b[k] < hi) {
                inside += 1;
                t = fminf(t, b[k]);
            }
        }
        if (inside > 1) {
            __trap(); // a codebook with thresholds closer than 1/16: needs finer buckets
        }
        bk[i] = make_int2(below, __float_as_int(t));
    }
}

template <int T>
static __device__ __forceinline__ uint32_t tbq_encode_bucketed(float y, const int2 * bk) {
    using tr = tbq_traits<T>;
    const float a = fabsf(y);
    const int2 e = bk[min(__float2int_rz(a * 16.0f), TBQ_ENCODE_BUCKETS - 1)];
    const float t = __int_as_float(e.y);
    const bool pos = y > 0.0f;
    const uint32_t n = (uint32_t) e.x + (pos ? a > t : a >= t);
    return pos ? tr::n_half + n : tr::n_half - 1 - n;
}

// ---- flat index -> coordinates ------------------------------------------------------------------
// (i0, i1, i2, i3) of the flat index w over sizes (n0, n1, n2, ·). With `narrow` (every index below
// 2^32, the usual case) the divisions are 32-bit: a 64-bit division is a software routine several
// times longer, and set_rows / get_rows do three per 128-element block.
struct tbq_coords {
    int64_t i0, i1, i2, i3;
};
static __device__ __forceinline__ tbq_coords tbq_unflatten(int64_t w, int64_t n0, int64_t n1, int64_t n2, bool narrow) {
    tbq_coords c;
    if (narrow) {
        const uint32_t a = (uint32_t) n0, b = (uint32_t) n1, d = (uint32_t) n2;
        uint32_t x = (uint32_t) w;
        uint32_t q = x / a;
        c.i0 = x - q * a;
        x = q;
        q = x / b;
        c.i1 = x - q * b;
        c.i2 = q % d;
        c.i3 = q / d;
    } else {
        c.i0 = w % n0;
        int64_t r = w / n0;
        c.i1 = r % n1;
        r /= n1;
        c.i2 = r % n2;
        c.i3 = r / n2;
    }
    return c;
}

// ---- packing: lane-major bit planes (src/packing.rs) --------------------------------------
// A plane of p bits is 4·S·p bytes (S slots a lane); lane l owns the S·p bits at bit S·p·l: for
// S = 4 a u16 (p = 4), a byte (p = 2) or a nibble (p = 1); for S = 2 a byte, a nibble or 2 bits.
// Blocks are 2-byte aligned, so every u16 field is aligned.

template <int P, int S = 4>
static __device__ __forceinline__ uint32_t tbq_read_field(const uint8_t * plane, int lane) {
    static_assert(P == 4 || P == 2 || P == 1, "planes are 1, 2 or 4 bits");
    constexpr int W = P * S; // field bits: 16, 8, 4 or 2
    if constexpr (W == 16) {
        return *(const uint16_t *) (plane + 2 * lane);
    } else if constexpr (W == 8) {
        return plane[lane];
    } else if constexpr (W == 4) {
        return (plane[lane >> 1] >> (4 * (lane & 1))) & 0xFu;
    } else {
        return (plane[lane >> 2] >> (2 * (lane & 3))) & 0x3u;
    }
}

// Writes lane `lane`'s field of a plane. Every lane of the warp must call it (fields narrower
// than a byte gather their byte's lanes by shuffles).
template <int P, int S = 4>
static __device__ __forceinline__ void tbq_write_field(uint8_t * plane, int lane, uint32_t field) {
    constexpr int W = P * S;
    if constexpr (W == 16) {
        *(uint16_t *) (plane + 2 * lane) = (uint16_t) field;
    } else if constexpr (W == 8) {
        plane[lane] = (uint8_t) field;
    } else if constexpr (W == 4) {
        const uint32_t hi = __shfl_down_sync(TBQ_FULL_MASK, field, 1);
        if ((lane & 1) == 0) {
            plane[lane >> 1] = (uint8_t) (field | (hi << 4));
        }
    } else {
        const uint32_t f1 = __shfl_down_sync(TBQ_FULL_MASK, field, 1);
        const uint32_t f2 = __shfl_down_sync(TBQ_FULL_MASK, field, 2);
        const uint32_t f3 = __shfl_down_sync(TBQ_FULL_MASK, field, 3);
        if ((lane & 3) == 0) {
            plane[lane >> 2] = (uint8_t) (field | (f1 << 2) | (f2 << 4) | (f3 << 6));
        }
    }
}

// A lane's packed fields of all planes of a block, in one word: plane 0's field in the low
// S·plane0 bits, plane 1's above it. `qs` points at the codes (after the header).
template <int T>
static __device__ __forceinline__ uint32_t tbq_load_fields(const uint8_t * qs, int lane) {
    using tr = tbq_traits<T>;
    constexpr int S = tr::slots;
    uint32_t f = tbq_read_field<tr::plane0, S>(qs, lane);
    if constexpr (tr::plane1 != 0) {
        f |= tbq_read_field<tr::plane1, S>(qs + 4 * S * tr::plane0, lane) << (S * tr::plane0);
    }
    return f;
}

// The code of slot s from a lane's fields word.
template <int T>
static __device__ __forceinline__ uint32_t tbq_code(uint32_t f, int s) {
    using tr = tbq_traits<T>;
    uint32_t c = (f >> (tr::plane0 * s)) & ((1u << tr::plane0) - 1);
    if constexpr (tr::plane1 != 0) {
        c |= ((f >> (tr::slots * tr::plane0 + tr::plane1 * s)) & ((1u << tr::plane1) - 1)) << tr::plane0;
    }
    return c;
}

// Packs a lane's codes (slots 0..S-1) into the block's planes (every lane calls it).
template <int T>
static __device__ __forceinline__ void tbq_store_codes(uint8_t * qs, int lane, const uint32_t c[4]) {
    using tr = tbq_traits<T>;
    constexpr int S = tr::slots;
    uint32_t f0 = 0;
#pragma unroll
    for (int s = 0; s < S; ++s) {
        f0 |= (c[s] & ((1u << tr::plane0) - 1)) << (tr::plane0 * s);
    }
    tbq_write_field<tr::plane0, S>(qs, lane, f0);
    if constexpr (tr::plane1 != 0) {
        uint32_t f1 = 0;
#pragma unroll
        for (int s = 0; s < S; ++s) {
            f1 |= ((c[s] >> tr::plane0) & ((1u << tr::plane1) - 1)) << (tr::plane1 * s);
        }
        tbq_write_field<tr::plane1, S>(qs + 4 * S * tr::plane0, lane, f1);
    }
}

// ---- compact headers (the tbqN_1_64c types: format::scale8_value) --------------------------------
// Byte 0 the scale's code k, byte 1 the two gains (group s in bits 4s..4s+3), instead of a half d
// and a u16 gains word. The generated traits have no flag of their own: a compact type is the one
// sub-scaled type whose header is 2 bytes.
template <int T> struct tbq_compact {
    static constexpr bool value = tbq_traits<T>::sub_scales && tbq_traits<T>::header_bytes == 2;
};

// 2^(f/8), f = 0..7, as f32 (format::SCALE8_MANTISSAS, TBQ_SCALE8_MANTISSAS in tbq.h).
#define TBQ_SCALE8_MANTISSAS_INIT { 1.0f, 1.0905077f, 1.1892071f, 1.2968396f, 1.4142135f, 1.5422108f, 1.6817929f, 1.8340081f }
static __constant__ float tbq_scale8_mantissas[8] = TBQ_SCALE8_MANTISSAS_INIT;

// 2^((k-128) >> 3) as f32 bits for a code k in 1..255 (a normal power of two, 2^-16 .. 2^15):
// (127 + ((k-128) >> 3)) << 23 = (111 + (k >> 3)) << 23.
static __device__ __forceinline__ float tbq_scale8_pow2(uint32_t k) {
    return __int_as_float((int) ((111u + (k >> 3)) << 23));
}

// format::scale8_value: 0 for k = 0, else SCALE8_MANTISSAS[k & 7] · 2^((k-128) >> 3), exact
// ((k - 128) & 7 = k & 7). `mant` is the mantissa table (constant or shared memory).
static __device__ __forceinline__ float tbq_scale8_value(uint32_t k, const float * mant) {
    const float d = __fmul_rn(mant[k & 7], tbq_scale8_pow2(k));
    return k == 0 ? 0.0f : d;
}

// reference::scale8_code of a finite s > 0 (the sum of squares of a 64-wide block's butterfly):
// integer work on its bits, so every implementation gets the same code.
static __device__ __forceinline__ uint32_t tbq_scale8_code(float s) {
    const uint32_t bits = __float_as_uint(s);
    const int e = (int) ((bits >> 23) & 0xFFu);
    if (e == 0) {
        return 1; // subnormal: below the grid
    }
    const float m = __uint_as_float((bits & 0x007FFFFFu) | (127u << 23));
    const int j = (m >= tbq_scale8_mantissas[1]) + (m >= tbq_scale8_mantissas[3]) + (m >= tbq_scale8_mantissas[5]) +
                  (m >= tbq_scale8_mantissas[7]);
    return (uint32_t) min(max(4 * (e - 127) + j + 80, 1), 255);
}

// The scale d of a block: its half d, or a compact header's scale.
template <int T>
static __device__ __forceinline__ float tbq_block_d(const uint8_t * blk) {
    if constexpr (tbq_compact<T>::value) {
        return tbq_scale8_value(blk[0], tbq_scale8_mantissas);
    } else {
        return __half2float(*(const __half *) blk);
    }
}

// One step of a reduce-scatter over the canonical butterfly (tbq_warp_sum_canonical) of N = 2·HALF
// sums: at offset `off` a lane keeps the half of its sums that its bit `off` selects and adds the
// partner's copy of that half, pairing the same lanes in the same order as the butterfly (and
// a + b = b + a exactly), so every sum keeps its bits; 2·HALF shuffles become HALF. The half is
// chosen by xor-swapping (a select of two elements would become an indexed local-memory load).
// Every lane of the warp must call it.
template <int HALF, int N>
static __device__ __forceinline__ void tbq_reduce_scatter_step(float (&e)[N], int lane, int off) {
    const uint32_t up = (lane & off) ? 0xFFFFFFFFu : 0u;
#pragma unroll
    for (int t = 0; t < HALF; ++t) {
        const uint32_t a = __float_as_uint(e[t]), b = __float_as_uint(e[HALF + t]), x = (a ^ b) & up;
        e[t] = __fadd_rn(__uint_as_float(a ^ x), __shfl_xor_sync(TBQ_FULL_MASK, __uint_as_float(b ^ x), off));
    }
}

// ---- quantize one block (reference::quantize_block) ------------------------------------------
// x: the lane's inputs (slots 0..S-1, S = tbq_traits<T>::slots); blk: the block's bytes. `lut` holds the type's levels
// (shared memory or the __constant__ table), `buckets` its tbq_fill_encode_buckets table. Every
// lane of the warp must call it.
template <int T>
static __device__ __forceinline__ void tbq_quantize_block_warp(const float x[4], uint8_t * blk, int lane,
                                                               const float * lut, const int2 * buckets) {
    constexpr int S = tbq_traits<T>::slots;
    const uint32_t signs = tbq_lane_signs(lane);
    float w[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int s = 0; s < S; ++s) {
        w[s] = isfinite(x[s]) ? tbq_apply_sign(x[s], signs, s) : 0.0f;
    }
    tbq_fwht_warp<S>(w, lane);
    const float ss = tbq_sum_squares_warp<S>(w);
    constexpr bool COMPACT = tbq_compact<T>::value;
    uint32_t c[4] = {0, 0, 0, 0};
    uint32_t gains = 0;
    uint32_t code = 0; // COMPACT: the scale's code (0: an all-zero block)
    float d = 0.0f;
    if (ss != 0.0f && isfinite(ss)) { // warp-uniform: every lane holds the same sum
        float y[4] = {0.0f, 0.0f, 0.0f, 0.0f}, r[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        float norm_w = 0.0f;
        if constexpr (COMPACT) {
            // The scale first (the grid point nearest the RMS), then the gains fitted to it on
            // t = w · 1/(8·d) (reference::quantize_block, compact branch): no norm step.
            code = tbq_scale8_code(ss);
            const float inv = __fmul_rn(tbq_scale8_value(256u - code, tbq_scale8_mantissas), 0.125f);
#pragma unroll
            for (int s = 0; s < S; ++s) {
                y[s] = __fmul_rn(w[s], inv);
            }
        } else {
            norm_w = __fsqrt_rn(ss);
            const float k = __fdiv_rn(tbq_traits<T>::sqrt_n, norm_w);
#pragma unroll
            for (int s = 0; s < S; ++s) {
                y[s] = __fmul_rn(w[s], k);
            }
        }
        if constexpr (tbq_traits<T>::sub_scales) {
            // Group s = slot s of every lane. Each (group, gain) error is summed in the canonical
            // butterfly order, so every lane picks the same gain (the first with the least error).
            // Sum k = 16·s + g of the 16·S sums goes through a reduce-scatter over the butterfly's
            // pairing tree (tbq_reduce_scatter_step, 62 shuffles for S = 4 instead of 320): lane l
            // ends with the sums k = 2l, 2l + 1 (S = 4) or k = l (S = 2), bit for bit the butterfly's.
            constexpr int N = 16 * S;
            float e[N];
#pragma unroll
            for (int g = 0; g < 16; ++g) {
                const float gv = tbq_gains[g];
#pragma unroll
                for (int s = 0; s < S; ++s) {
                    const float yg = __fmul_rn(y[s], tbq_gains[15 - g]); // y / g_g (reference::encode_groups)
                    const float d = __fsub_rn(y[s], __fmul_rn(gv, lut[tbq_encode_bucketed<T>(yg, buckets)]));
                    e[16 * s + g] = __fmul_rn(d, d);
                }
            }
            tbq_reduce_scatter_step<N / 2>(e, lane, 16);
            tbq_reduce_scatter_step<N / 4>(e, lane, 8);
            tbq_reduce_scatter_step<N / 8>(e, lane, 4);
            tbq_reduce_scatter_step<N / 16>(e, lane, 2);
            tbq_reduce_scatter_step<N / 32>(e, lane, 1);
            // The first least (error, gain) of each group: this lane's candidates, then a
            // lexicographic min over the group's lanes (8 for S = 4, 16 for S = 2).
            constexpr int PER = N / 32;     // sums a lane holds
            constexpr int LANES = 16 / PER; // lanes a group spans
            float best = e[0];
            int bg = (PER * lane) & 15;
            if constexpr (PER == 2) {
                if (e[1] < best) {
                    best = e[1];
                    bg += 1;
                }
            }
#pragma unroll
            for (int off = LANES / 2; off > 0; off >>= 1) {
                const float ob = __shfl_xor_sync(TBQ_FULL_MASK, best, off);
                const int og = __shfl_xor_sync(TBQ_FULL_MASK, bg, off);
                if (ob < best || (ob == best && og < bg)) {
                    best = ob;
                    bg = og;
                }
            }
#pragma unroll
            for (int s = 0; s < S; ++s) {
                const int bk = __shfl_sync(TBQ_FULL_MASK, bg, s * LANES);
                const float gv = tbq_gains[bk];
                c[s] = tbq_encode_bucketed<T>(__fmul_rn(y[s], tbq_gains[15 - bk]), buckets);
                r[s] = __fmul_rn(gv, lut[c[s]]);
                gains |= (uint32_t) bk << (4 * s);
            }
        } else {
#pragma unroll
            for (int s = 0; s < S; ++s) {
                c[s] = tbq_encode_bucketed<T>(y[s], buckets);
                r[s] = lut[c[s]];
            }
        }
        if constexpr (!COMPACT) {
            const float sr = tbq_sum_squares_warp<S>(r);
            d = __fdiv_rn(norm_w, __fmul_rn(tbq_traits<T>::sqrt_n, __fsqrt_rn(sr)));
            d = fminf(d, TBQ_D_MAX);
        }
    }
    if (lane == 0) {
        if constexpr (COMPACT) {
            *(uint16_t *) blk = (uint16_t) (code | (gains & 0xFFu) << 8); // blocks are 2-byte aligned
        } else {
            *(__half *) blk = __float2half_rn(d);
            if constexpr (tbq_traits<T>::sub_scales) {
                *(uint16_t *) (blk + TBQ_D_BYTES) = (uint16_t) gains;
            }
        }
    }
    tbq_store_codes<T>(blk + tbq_traits<T>::header_bytes, lane, c);
}

// The gains word of a sub-scaled type's block (gain index of group s in bits 4s..4s+3): the u16
// after d, or a compact header's byte 1.
template <int T>
static __device__ __forceinline__ uint32_t tbq_block_gains(const uint8_t * blk) {
    if constexpr (tbq_compact<T>::value) {
        return blk[1];
    } else {
        return *(const uint16_t *) (blk + TBQ_D_BYTES);
    }
}

// ---- dequantize one block (reference::dequantize_block) --------------------------------------
// out: the lane's values (slots 0..S-1) of the block in the rotated domain, (d · g_s) · C[c] as
// reference::decode_rotated computes them; level(c) is C[c].
template <int T, typename LEVEL>
static __device__ __forceinline__ void tbq_decode_rotated_lane(const uint8_t * blk, int lane, LEVEL level, float out[4]) {
    constexpr int S = tbq_traits<T>::slots;
    const float d = tbq_block_d<T>(blk);
    const uint32_t f = tbq_load_fields<T>(blk + tbq_traits<T>::header_bytes, lane);
    uint32_t gains = 0;
    if constexpr (tbq_traits<T>::sub_scales) {
        gains = tbq_block_gains<T>(blk);
    }
#pragma unroll
    for (int s = 0; s < S; ++s) {
        const float scale = tbq_traits<T>::sub_scales ? __fmul_rn(d, tbq_gains[(gains >> (4 * s)) & 15]) : d;
        out[s] = __fmul_rn(scale, level(tbq_code<T>(f, s)));
    }
}

// out: the lane's values (slots 0..S-1) of x^ = T^-1(d·C[c]): v = d*C[c], butterfly,
// x = sign * (z * inv_sqrt_n). Every lane must call it.
template <int T>
static __device__ __forceinline__ void tbq_dequantize_block_warp(const uint8_t * blk, int lane, const float * lut,
                                                                 float out[4]) {
    constexpr int S = tbq_traits<T>::slots;
    tbq_decode_rotated_lane<T>(blk, lane, [&](uint32_t c) { return lut[c]; }, out);
    tbq_fwht_warp<S>(out, lane);
    const uint32_t signs = tbq_lane_signs(lane);
#pragma unroll
    for (int s = 0; s < S; ++s) {
        out[s] = tbq_apply_sign(__fmul_rn(out[s], tbq_traits<T>::inv_sqrt_n), signs, s);
    }
}

// 1/sqrt(32·S): the rotation's scale for a block of S slots a lane (128 or 64 elements; exact
// powers of two apart, as tbq_traits<T>::inv_sqrt_n).
template <int S>
static __device__ __forceinline__ float tbq_inv_sqrt_block() {
    static_assert(S == 4 || S == 2, "blocks are 128 or 64 wide");
    return S == 4 ? TBQ_INV_SQRT_128 : 0.125f;
}

// T^-1 of a rotated-domain block held by a warp (not bit-exact paths: the FA output); S = 2: a
// 64-wide block (slots 0 and 1).
template <int S = 4>
static __device__ __forceinline__ void tbq_unrotate_warp(float v[4], int lane) {
    tbq_fwht_warp<S>(v, lane);
    const uint32_t signs = tbq_lane_signs(lane);
#pragma unroll
    for (int s = 0; s < S; ++s) {
        v[s] = tbq_apply_sign(v[s] * tbq_inv_sqrt_block<S>(), signs, s);
    }
}

// T(q) of a block held by a warp: sign, butterfly, scale (S as tbq_unrotate_warp).
template <int S = 4>
static __device__ __forceinline__ void tbq_rotate_warp(float v[4], int lane) {
    const uint32_t signs = tbq_lane_signs(lane);
#pragma unroll
    for (int s = 0; s < S; ++s) {
        v[s] = tbq_apply_sign(v[s], signs, s);
    }
    tbq_fwht_warp<S>(v, lane);
#pragma unroll
    for (int s = 0; s < S; ++s) {
        v[s] *= tbq_inv_sqrt_block<S>();
    }
}

// Fills a shared-memory table with a type's levels (call from every thread; sync after).
template <int T>
static __device__ __forceinline__ void tbq_fill_lut(float * lut) {
    for (int i = threadIdx.x; i < tbq_traits<T>::n_levels; i += blockDim.x) {
        lut[i] = tbq_traits<T>::levels()[i];
    }
}
