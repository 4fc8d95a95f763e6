// fattn.cu — k_tbq_fattn (decode, split-K) and k_tbq_fattn_combine.
//
// One thread block = one KV head × one split of the tokens × one group of up to R rows (the
// query heads sharing that KV head, times the query positions). Each K/V block is read once for
// all R rows. One warp handles one token at a time, in the canonical layout (lane l holds
// coordinates l, l+32, l+64, l+96 of each 128-block). For tbq keys the query is rotated once
// (T(q)) and a score is d·Σ T(q)_i·C[c_i]; values are accumulated in the rotated domain,
// Σ p·d·C[c], and rotated back once (T^-1) when the output is written.
#include "common.cuh"
#include "fattn.cuh"

#define TBQ_K_F16  TBQ_DTYPE_F16
#define TBQ_K_Q8_0 TBQ_DTYPE_Q8_0

// ---- K: raw bytes of a lane's 4 coordinates of one 128-block, and their values --------------
template <int KT> struct tbq_kraw;
template <> struct tbq_kraw<TBQ_TYPE_TBQ4_0> { uint32_t f; __half d; };
template <> struct tbq_kraw<TBQ_TYPE_TBQ3_0> { uint32_t f; __half d; };
template <> struct tbq_kraw<TBQ_K_F16> { __half x[4]; };
template <> struct tbq_kraw<TBQ_K_Q8_0> { int8_t q[4]; __half d[4]; };

// row: the K row of one token; b: which 128-block of it.
template <int KT>
static __device__ __forceinline__ void tbq_load_k(tbq_kraw<KT> & r, const uint8_t * row, int b, int lane) {
    if constexpr (KT == TBQ_K_F16) {
        const __half * x = (const __half *) row + b * 128;
#pragma unroll
        for (int s = 0; s < 4; ++s) r.x[s] = x[lane + 32 * s];
    } else if constexpr (KT == TBQ_K_Q8_0) {
        const uint8_t * blk = row + (size_t) (4 * b) * TBQ_Q8_0_BLOCK_BYTES;
#pragma unroll
        for (int s = 0; s < 4; ++s) {
            r.d[s] = *(const __half *) (blk + s * TBQ_Q8_0_BLOCK_BYTES);
            r.q[s] = (int8_t) blk[s * TBQ_Q8_0_BLOCK_BYTES + 2 + lane];
        }
    } else {
        const uint8_t * blk = row + (size_t) b * tbq_traits<KT>::block_bytes;
        r.d = *(const __half *) blk;
        static_assert(!tbq_traits<KT>::sub_scales, "the per-token kernel serves plain tbq keys only");
        r.f = tbq_load_fields<KT>(blk + tbq_traits<KT>::header_bytes, lane);
    }
}

template <int KT>
static __device__ __forceinline__ void tbq_decode_k(const tbq_kraw<KT> & r, const float * lut, float kv[4]) {
    if constexpr (KT == TBQ_K_F16) {
#pragma unroll
        for (int s = 0; s < 4; ++s) kv[s] = __half2float(r.x[s]);
    } else if constexpr (KT == TBQ_K_Q8_0) {
#pragma unroll
        for (int s = 0; s < 4; ++s) kv[s] = __half2float(r.d[s]) * (float) r.q[s];
    } else {
        const float d = __half2float(r.d);
#pragma unroll
        for (int s = 0; s < 4; ++s) kv[s] = d * lut[tbq_code<KT>(r.f, s)];
    }
}

template <int KT> struct tbq_is_tbq { static constexpr bool value = KT < TBQ_N_TYPES; };

// ---- the rows of a block: KV head hk's G query heads × the n_q query positions ----------------
// Row gr (position fastest): its query head h and position iq1.
struct tbq_qrow { int h, iq1; };
static __device__ __forceinline__ tbq_qrow tbq_fattn_row(const tbq_fattn_params & p, int G, int hk, int gr) {
    return {hk * G + gr / p.n_q, gr % p.n_q};
}
// The query (D contiguous floats) of row r in sequence iq3.
static __device__ __forceinline__ const float * tbq_fattn_q(const tbq_fattn_params & p, tbq_qrow r, int iq3) {
    return (const float *) ((const char *) p.q + r.iq1 * p.nbq1 + r.h * p.nbq2 + iq3 * p.nbq3);
}
// The mask row (f16, one value per token) of row r in sequence iq3, or nullptr without a mask.
static __device__ __forceinline__ const __half * tbq_fattn_mask_row(const tbq_fattn_params & p, tbq_qrow r, int iq3) {
    return p.mask == nullptr ? nullptr
                             : (const __half *) ((const char *) p.mask + r.iq1 * p.nbm1 + (r.h % p.mask_ne2) * p.nbm2 +
                                                 (iq3 % p.mask_ne3) * p.nbm3);
}
// The ALiBi slope of query head h (1 without ALiBi).
static __device__ __forceinline__ float tbq_fattn_slope(const tbq_fattn_params & p, int h) {
    float slope = 1.0f;
    if (p.max_bias > 0.0f) {
        slope = h < p.n_head_log2 ? powf(p.m0, (float) (h + 1)) : powf(p.m1, (float) (2 * (h - p.n_head_log2) + 1));
    }
    return slope;
}

// ---- the output of one row: sinks, 1/S, T^-1, store -------------------------------------------
// a[b][k]: coordinate b·W + 32k + lane of the rotated row (W = 128, or 64 for the _64 types).
template <int D, int W>
static __device__ __forceinline__ void tbq_fattn_finalize(const tbq_fattn_params & p, float M, float S,
                                                          float a[D / W][4], int h, int iq1, int iq3, int lane) {
    constexpr int NB = D / W, SL = W / 32;
    if (p.sinks != nullptr) {
        const float s = p.sinks[h];
        if (s > M) {
            const float ms = expf(M - s);
#pragma unroll
            for (int b = 0; b < NB; ++b)
#pragma unroll
                for (int k = 0; k < SL; ++k) a[b][k] *= ms;
            S = S * ms + 1.0f;
        } else {
            S += expf(s - M);
        }
    }
    const float inv = S == 0.0f ? 0.0f : 1.0f / S;
    float * y = p.dst + ((int64_t) (iq3 * p.n_q + iq1) * p.n_head + h) * D;
#pragma unroll
    for (int b = 0; b < NB; ++b) {
        float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int k = 0; k < SL; ++k) v[k] = a[b][k] * inv;
        tbq_unrotate_warp<SL>(v, lane);
#pragma unroll
        for (int k = 0; k < SL; ++k) y[b * W + 32 * k + lane] = v[k];
    }
}

template <int KT, int VT, int D, int R>
static __device__ __forceinline__ void k_tbq_fattn(const tbq_fattn_params & p) {
    constexpr int NB = D / 128;
    constexpr int NW = TBQ_FATTN_WARPS;
    constexpr int U = TBQ_FATTN_UNROLL;
    extern __shared__ float smem[]; // max(R*D, NW*R*(D+2)) floats
    __shared__ float lut_k[16], lut_v[16];

    const int lane = threadIdx.x % TBQ_WARP_SIZE;
    const int warp = threadIdx.x / TBQ_WARP_SIZE;
    const int hk = blockIdx.x;
    const int split = blockIdx.y;
    const int iq3 = blockIdx.z / p.n_row_groups;
    const int rg = blockIdx.z % p.n_row_groups;
    const int G = p.n_head / p.n_head_kv;
    const int ik3 = iq3 / (p.n_seq / p.n_seq_kv);
    const int rows_total = G * p.n_q;

    if constexpr (tbq_is_tbq<KT>::value) {
        tbq_fill_lut<KT>(lut_k);
    }
    tbq_fill_lut<VT>(lut_v);

    // Stage the rows' queries (rotated for tbq keys) in shared memory, canonical order.
    for (int r = warp; r < R; r += NW) {
        const int gr = rg * R + r;
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (gr < rows_total) {
                const float * q = tbq_fattn_q(p, tbq_fattn_row(p, G, hk, gr), iq3) + b * 128;
#pragma unroll
                for (int k = 0; k < 4; ++k) v[k] = q[lane + 32 * k];
                if constexpr (tbq_is_tbq<KT>::value) {
                    tbq_rotate_warp(v, lane);
                }
            }
#pragma unroll
            for (int k = 0; k < 4; ++k) smem[r * D + b * 128 + 32 * k + lane] = v[k];
        }
    }
    __syncthreads();

    float qr[R][NB][4];
    const __half * mrow[R];
    float slope[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int k = 0; k < 4; ++k) qr[r][b][k] = smem[r * D + b * 128 + 32 * k + lane];
        const tbq_qrow row = tbq_fattn_row(p, G, hk, min(rg * R + r, rows_total - 1));
        mrow[r] = tbq_fattn_mask_row(p, row, iq3);
        slope[r] = tbq_fattn_slope(p, row.h);
    }

    float m[R], l[R], acc[R][NB][4];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[r][b][k] = 0.0f;
    }

    const int t_begin = split * p.split_len;
    const int t_end = min(p.n_kv, t_begin + p.split_len);
    const uint8_t * kbase = (const uint8_t *) p.k + hk * p.nbk2 + ik3 * p.nbk3;
    const uint8_t * vbase = (const uint8_t *) p.v + hk * p.nbv2 + ik3 * p.nbv3;

    for (int t0 = t_begin + warp * U; t0 < t_end; t0 += NW * U) {
        tbq_kraw<KT> kr[U][NB];
        uint32_t vf[U][NB];
        __half vd[U][NB];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int t = min(t0 + u, t_end - 1); // past the end: re-read the last token, unused
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                tbq_load_k<KT>(kr[u][b], kbase + (int64_t) t * p.nbk1, b, lane);
                const uint8_t * vb = vbase + (int64_t) t * p.nbv1 + b * tbq_traits<VT>::block_bytes;
                vd[u][b] = *(const __half *) vb;
                vf[u][b] = tbq_load_fields<VT>(vb + tbq_traits<VT>::header_bytes, lane);
            }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int t = t0 + u;
            if (t >= t_end) {
                break; // warp-uniform
            }
            float kv[NB][4];
#pragma unroll
            for (int b = 0; b < NB; ++b) tbq_decode_k<KT>(kr[u][b], lut_k, kv[b]);

            float sc[R];
            bool grow = false;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                float part = 0.0f;
#pragma unroll
                for (int b = 0; b < NB; ++b)
#pragma unroll
                    for (int k = 0; k < 4; ++k) part = fmaf(qr[r][b][k], kv[b][k], part);
                float s = tbq_warp_sum(part) * p.scale;
                if (p.softcap != 0.0f) {
                    s = p.softcap * tanhf(s);
                }
                const float mv = mrow[r] != nullptr ? slope[r] * __half2float(mrow[r][t]) : 0.0f;
                s = mv == -INFINITY ? -INFINITY : s + mv;
                sc[r] = s;
                grow |= s > m[r];
            }
            if (grow) { // warp-uniform: every lane holds the same scores
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    if (sc[r] > m[r]) {
                        const float a = __expf(m[r] - sc[r]);
                        m[r] = sc[r];
                        l[r] *= a;
#pragma unroll
                        for (int b = 0; b < NB; ++b)
#pragma unroll
                            for (int k = 0; k < 4; ++k) acc[r][b][k] *= a;
                    }
                }
            }
            float pr[R];
            bool any = false;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                pr[r] = sc[r] == -INFINITY ? 0.0f : __expf(sc[r] - m[r]);
                l[r] += pr[r];
                any |= pr[r] >= p.sparse_v && pr[r] > 0.0f;
            }
            if (!any) {
                continue; // sparse V (sparse_v = 0: only fully masked tokens are skipped)
            }
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                const float dv = __half2float(vd[u][b]);
                float vv[4];
#pragma unroll
                for (int k = 0; k < 4; ++k) vv[k] = dv * lut_v[tbq_code<VT>(vf[u][b], k)];
#pragma unroll
                for (int r = 0; r < R; ++r)
#pragma unroll
                    for (int k = 0; k < 4; ++k) acc[r][b][k] = fmaf(pr[r], vv[k], acc[r][b][k]);
            }
        }
    }

    // Combine the warps of the block through shared memory.
    __syncthreads();
#pragma unroll
    for (int r = 0; r < R; ++r) {
        float * ws = smem + (warp * R + r) * (D + 2);
        if (lane == 0) {
            ws[0] = m[r];
            ws[1] = l[r];
        }
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int k = 0; k < 4; ++k) ws[2 + b * 128 + 32 * k + lane] = acc[r][b][k];
    }
    __syncthreads();
    for (int r = warp; r < R; r += NW) {
        const int gr = rg * R + r;
        if (gr >= rows_total) {
            break;
        }
        const auto [h, iq1] = tbq_fattn_row(p, G, hk, gr);
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < NW; ++w) M = fmaxf(M, smem[(w * R + r) * (D + 2)]);
        float S = 0.0f, a[NB][4];
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int k = 0; k < 4; ++k) a[b][k] = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) {
            const float * ws = smem + (w * R + r) * (D + 2);
            const float e = ws[0] == -INFINITY ? 0.0f : __expf(ws[0] - M);
            S += e * ws[1];
#pragma unroll
            for (int b = 0; b < NB; ++b)
#pragma unroll
                for (int k = 0; k < 4; ++k) a[b][k] += e * ws[2 + b * 128 + 32 * k + lane];
        }
        if (p.n_splits == 1) {
            tbq_fattn_finalize<D, 128>(p, M, S, a, h, iq1, iq3, lane);
        } else {
            float * rec = p.partial + (((int64_t) (iq3 * p.n_q + iq1) * p.n_head + h) * p.n_splits + split) * (D + 2);
            if (lane == 0) {
                rec[0] = M;
                rec[1] = S;
            }
#pragma unroll
            for (int b = 0; b < NB; ++b)
#pragma unroll
                for (int k = 0; k < 4; ++k) rec[2 + b * 128 + 32 * k + lane] = a[b][k];
        }
    }
}

// ---- exact keys (p.exact_k, tbq keys) ----------------------------------------------------------
// Tokens below n_exact are read from the f16 exact keys instead of K's rows. The tensor-core kernel
// leaves them out of its tiles (each split starts after them) and writes records even with one
// split; the combine kernel adds them to each row. Replacing their scores inside the tiles (a
// branch on the first tile) cost the D 128 kernels, whose registers are at the launch bound, spills
// in every tile; so did any of this work after the tile loop (ptxas -v, kernels/NOTES.md).
//
// Adds tokens [t0, t1) to row (h, iq1) of sequence iq3, KV head hk, KV sequence ik3, whose state a
// warp holds (max M, sum S, rotated accumulator a in the canonical layout: a[b][k] is coordinate
// b·W + 32k + lane), one token at a time as the per-token kernel does: the score scale·q·k from the
// plain query and the f16 key, softcap, mask and ALiBi as in the tiles, then the value's rotated
// coordinates (d·g)·C[c] from V's codes.
template <int VT, int D>
static __device__ __forceinline__ void tbq_fattn_exact_tokens(const tbq_fattn_params & p, tbq_qrow row, int iq3, int hk,
                                                              int ik3, int t0, int t1, int lane, float & M, float & S,
                                                              float (&a)[D / tbq_traits<VT>::block][4]) {
    using tr = tbq_traits<VT>;
    constexpr int W = tr::block, NB = D / W, SL = W / 32;
    static_assert(tr::n_levels <= TBQ_WARP_SIZE, "a level per lane");
    const float level = tr::levels()[lane % tr::n_levels]; // C[c] is lane c's
    const float * q = tbq_fattn_q(p, row, iq3);
    const __half * mrow = tbq_fattn_mask_row(p, row, iq3);
    const float slope = tbq_fattn_slope(p, row.h);
    const char * keys = (const char *) p.exact_k + hk * p.nbe2 + ik3 * p.nbe3;
    const uint8_t * values = (const uint8_t *) p.v + hk * p.nbv2 + ik3 * p.nbv3;
    for (int t = t0; t < t1; ++t) { // warp-uniform
        const float mv = mrow != nullptr ? slope * __half2float(mrow[t]) : 0.0f;
        if (mv == -INFINITY) {
            continue; // masked
        }
        const __half * k = (const __half *) (keys + (int64_t) t * p.nbe1);
        float part = 0.0f;
#pragma unroll
        for (int i = lane; i < D; i += TBQ_WARP_SIZE) part = fmaf(q[i], __half2float(k[i]), part);
        float x = tbq_warp_sum(part) * p.scale;
        if (p.softcap != 0.0f) {
            x = p.softcap * tanhf(x);
        }
        x += mv;
        if (x > M) {
            const float ms = __expf(M - x);
            S *= ms;
#pragma unroll
            for (int b = 0; b < NB; ++b)
#pragma unroll
                for (int k = 0; k < SL; ++k) a[b][k] *= ms;
            M = x;
        }
        const float e = __expf(x - M);
        S += e;
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            float v[4];
            tbq_decode_rotated_lane<VT>(values + (int64_t) t * p.nbv1 + b * tr::block_bytes, lane,
                                        [&](uint32_t c) { return __shfl_sync(TBQ_FULL_MASK, level, c); }, v);
#pragma unroll
            for (int k = 0; k < SL; ++k) a[b][k] = fmaf(e, v[k], a[b][k]);
        }
    }
}

// One block of TBQ_COMBINE_WARPS warps per output row (h, iq1, iq3): merges the splits' records
// and writes the row. The splits are spread over the warps (their loads in flight together);
// a single warp walking 64 records one after another was latency-bound (≈ 0.3 µs per split).
// VT >= 0: the value type of a launch with exact keys, whose tokens below n_exact warp 0 adds.
#define TBQ_COMBINE_WARPS 8
template <int D, int W, int VT = -1>
static __device__ __forceinline__ void k_tbq_fattn_combine(const tbq_fattn_params & p) {
    constexpr int NB = D / W, SL = W / 32;
    constexpr int CW = TBQ_COMBINE_WARPS;
    __shared__ float red[CW];
    __shared__ float part[CW][D + 1];
    const int lane = threadIdx.x % TBQ_WARP_SIZE;
    const int warp = threadIdx.x / TBQ_WARP_SIZE;
    const int h = blockIdx.x, iq1 = blockIdx.y, iq3 = blockIdx.z;
    const float * rec = p.partial + ((int64_t) (iq3 * p.n_q + iq1) * p.n_head + h) * p.n_splits * (D + 2);
    float M = -INFINITY;
    for (int j = threadIdx.x; j < p.n_splits; j += CW * TBQ_WARP_SIZE) M = fmaxf(M, rec[j * (D + 2)]);
    M = tbq_warp_max(M);
    if (lane == 0) red[warp] = M;
    __syncthreads();
    M = red[0];
#pragma unroll
    for (int w = 1; w < CW; ++w) M = fmaxf(M, red[w]);
    float S = 0.0f, a[NB][4] = {};
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
        for (int k = 0; k < SL; ++k) a[b][k] = 0.0f;
#pragma unroll 2
    for (int j = warp; j < p.n_splits; j += CW) {
        const float * rj = rec + j * (D + 2);
        const float mj = rj[0];
        const float e = mj == -INFINITY ? 0.0f : __expf(mj - M);
        S += e * rj[1];
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int k = 0; k < SL; ++k) a[b][k] = fmaf(e, rj[2 + b * W + 32 * k + lane], a[b][k]);
    }
    __syncthreads();
    if (lane == 0) part[warp][D] = S;
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
        for (int k = 0; k < SL; ++k) part[warp][b * W + 32 * k + lane] = a[b][k];
    __syncthreads();
    if (warp == 0) {
        S = 0.0f;
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int k = 0; k < SL; ++k) a[b][k] = 0.0f;
#pragma unroll
        for (int w = 0; w < CW; ++w) {
            S += part[w][D];
#pragma unroll
            for (int b = 0; b < NB; ++b)
#pragma unroll
                for (int k = 0; k < SL; ++k) a[b][k] += part[w][b * W + 32 * k + lane];
        }
        if constexpr (VT >= 0) {
            static_assert(tbq_traits<VT>::block == W, "values of the head's block width");
            const int hk = h / (p.n_head / p.n_head_kv), ik3 = iq3 / (p.n_seq / p.n_seq_kv);
            tbq_fattn_exact_tokens<VT, D>(p, {h, iq1}, iq3, hk, ik3, 0, p.n_exact, lane, M, S, a);
        }
        tbq_fattn_finalize<D, W>(p, M, S, a, h, iq1, iq3, lane);
    }
}

#define TBQ_FATTN(KT, KN, VT, VN, D, R)                                                              \
    extern "C" __global__ void __launch_bounds__(TBQ_FATTN_WARPS * TBQ_WARP_SIZE)                   \
        k_tbq_fattn_##KN##_##VN##_d##D##_r##R(const tbq_fattn_params p) {                            \
        k_tbq_fattn<KT, VT, D, R>(p);                                                                 \
    }

#define TBQ_FATTN_R(KT, KN, VT, VN, D)                                                               \
    TBQ_FATTN(KT, KN, VT, VN, D, 1)                                                                  \
    TBQ_FATTN(KT, KN, VT, VN, D, 2)                                                                  \
    TBQ_FATTN(KT, KN, VT, VN, D, 4)                                                                  \
    TBQ_FATTN(KT, KN, VT, VN, D, 8)

#define TBQ_FATTN_D(KT, KN, VT, VN)                                                                  \
    TBQ_FATTN_R(KT, KN, VT, VN, 128)                                                                 \
    TBQ_FATTN_R(KT, KN, VT, VN, 256)

#define TBQ_FATTN_V(KT, KN)                                                                          \
    TBQ_FATTN_D(KT, KN, TBQ_TYPE_TBQ4_0, tbq4_0)                                                     \
    TBQ_FATTN_D(KT, KN, TBQ_TYPE_TBQ3_0, tbq3_0)

TBQ_FATTN_V(TBQ_TYPE_TBQ4_0, tbq4_0)
TBQ_FATTN_V(TBQ_TYPE_TBQ3_0, tbq3_0)
TBQ_FATTN_V(TBQ_K_F16, f16)
TBQ_FATTN_V(TBQ_K_Q8_0, q8_0)

// D = 64: the _64 types' 64-wide blocks; 128 to 512: 128-wide blocks.
#define TBQ_FATTN_COMBINE(D, W)                                                                      \
    extern "C" __global__ void __launch_bounds__(TBQ_COMBINE_WARPS * TBQ_WARP_SIZE)                 \
        k_tbq_fattn_combine_d##D(const tbq_fattn_params p) {                                         \
        k_tbq_fattn_combine<D, W>(p);                                                                 \
    }
TBQ_FATTN_COMBINE(64, 64)
TBQ_FATTN_COMBINE(128, 128)
TBQ_FATTN_COMBINE(256, 128)
TBQ_FATTN_COMBINE(512, 128)

// With exact keys: the tensor-core kernel's value types at its head sizes (their _64 variants at 64).
#define TBQ_FATTN_COMBINE_EXACT(VT, VN, D)                                                           \
    extern "C" __global__ void __launch_bounds__(TBQ_COMBINE_WARPS * TBQ_WARP_SIZE)                 \
        k_tbq_fattn_combine_exact_##VN##_d##D(const tbq_fattn_params p) {                            \
        k_tbq_fattn_combine<D, tbq_traits<VT>::block, VT>(p);                                        \
    }
#define TBQ_FATTN_COMBINE_EXACT_D(VT, VN)                                                            \
    TBQ_FATTN_COMBINE_EXACT(VT, VN, 128)                                                             \
    TBQ_FATTN_COMBINE_EXACT(VT, VN, 256)                                                             \
    TBQ_FATTN_COMBINE_EXACT(VT, VN, 512)
TBQ_FATTN_COMBINE_EXACT_D(TBQ_TYPE_TBQ4_0, tbq4_0)
TBQ_FATTN_COMBINE_EXACT_D(TBQ_TYPE_TBQ3_0, tbq3_0)
TBQ_FATTN_COMBINE_EXACT_D(TBQ_TYPE_TBQ3_1, tbq3_1)
TBQ_FATTN_COMBINE_EXACT_D(TBQ_TYPE_TBQ4_1, tbq4_1)
TBQ_FATTN_COMBINE_EXACT(TBQ_TYPE_TBQ4_0_64, tbq4_0_64, 64)
TBQ_FATTN_COMBINE_EXACT(TBQ_TYPE_TBQ3_0_64, tbq3_0_64, 64)
TBQ_FATTN_COMBINE_EXACT(TBQ_TYPE_TBQ3_1_64, tbq3_1_64, 64)
TBQ_FATTN_COMBINE_EXACT(TBQ_TYPE_TBQ4_1_64, tbq4_1_64, 64)
TBQ_FATTN_COMBINE_EXACT(TBQ_TYPE_TBQ3_1_64C, tbq3_1_64c, 64)
TBQ_FATTN_COMBINE_EXACT(TBQ_TYPE_TBQ4_1_64C, tbq4_1_64c, 64)

// =============================================================================================
// v2: tensor-core decode for tbq K and tbq V (k_tbq_fattn_mma_*). See NOTES.md (v2).
//
// A warp walks tiles of 16 tokens. QK^T: S^T[16 tokens × 8 rows] = K[16 × D] · T(q)^T[D × 8]
// with mma.sync m16n8k16 (f16 operands, f32 accumulation): K on the A side (tokens on M), the
// rotated, scaled query on the B side split into two f16 halves (hi + lo, two MMAs), exact to
// ~2^-22. The MMA k index is a permutation of the rotated coordinates chosen so that a lane's
// A registers come straight from the bytes it loaded: thread (g = lane/4, c = lane%4) decodes
// tokens g and g+8, packed lanes 8c..8c+7 of each 128-block (k-step j: packed lane 8c+j,
// slots 0..3). Codes become f16 pairs through a shared-memory table of half2 indexed by the two
// codes of one register, replicated 32 times (entry e of lane l at word 32e + l: no bank
// conflicts). Softmax per tile: one max, one rescale per 16 tokens. PV: O^T[16 coords × 8 rows]
// += V^T[16 coords × 16 tokens] · P'^T[16 tokens × 8 rows] with P' = p·d_v (hi + lo halves);
// V codes through a table indexed by (code of token 2c, code of token 2c+1). The f16 rounding
// of the codebook levels (≤ 2^-12 relative) is the only approximation beyond f32.
// =============================================================================================

#define TBQ_MMA_WARPS 4
#define TBQ_MMA_ROWS 8
#define TBQ_MMA_TILE 16

static __device__ __forceinline__ void tbq_mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                    uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// e^x of a softmax weight (x ≤ 0): ex2.approx with results below 2^-126 flushed to zero (they
// are zero weights either way). __expf is the same instruction, but under -ftz=false (kept for
// the quantizer's bit-exactness) it comes with a denormal fix-up of ~5 instructions.
static __device__ __forceinline__ float tbq_exp_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x * 1.4426950408889634f));
    return y;
}

// f32 pair -> (hi, lo) f16x2 (x0 in the low half) with hi + lo = x to ~2^-22 relative.
static __device__ __forceinline__ void tbq_split2(float x0, float x1, uint32_t & hi, uint32_t & lo) {
    const __half2 h = __floats2half2_rn(x0, x1);
    const float2 hf = __half22float2(h);
    const __half2 l = __floats2half2_rn(x0 - hf.x, x1 - hf.y);
    hi = *(const uint32_t *) &h;
    lo = *(const uint32_t *) &l;
}

// Fragment bytes come from one of two places (tbq_mma_staged): global memory, addressed by
// pointer (read through the read-only cache), or the warp's staging area in shared memory,
// addressed by 32-bit shared address (volatile: cp.async rewrites the same addresses every tile).
static __device__ __forceinline__ uint32_t tbq_ld32(const uint8_t * p) { return __ldg((const unsigned int *) p); }
static __device__ __forceinline__ unsigned short tbq_ld16(const uint8_t * p) { return __ldg((const unsigned short *) p); }
static __device__ __forceinline__ uint32_t tbq_ld32(uint32_t a) {
    uint32_t v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(a));
    return v;
}
static __device__ __forceinline__ unsigned short tbq_ld16(uint32_t a) {
    unsigned short v;
    asm volatile("ld.shared.u16 %0, [%1];" : "=h"(v) : "r"(a));
    return v;
}
static __device__ __forceinline__ const uint8_t * tbq_align4(const uint8_t * p) {
    return (const uint8_t *) ((uintptr_t) p & ~(uintptr_t) 3);
}
static __device__ __forceinline__ uint32_t tbq_align4(uint32_t a) { return a & ~3u; }
static __device__ __forceinline__ uint32_t tbq_low_bits(const uint8_t * p) { return (uint32_t) (uintptr_t) p; }
static __device__ __forceinline__ uint32_t tbq_low_bits(uint32_t a) { return a; }

// n 32-bit words from a 2-byte aligned address (a pointer or a shared address): aligned loads
// now, funnel shift at use.
template <int N> struct tbq_uwords {
    uint32_t w[N + 1];
    uint32_t sh;
    template <typename A> __device__ __forceinline__ void load(A p) {
        const A b = tbq_align4(p);
        sh = (tbq_low_bits(p) & 2u) * 8;
#pragma unroll
        for (int i = 0; i < N; ++i) w[i] = tbq_ld32(b + 4 * i);
        w[N] = sh ? tbq_ld32(b + 4 * N) : 0u; // only when the span reaches into it: never past the data
    }
    __device__ __forceinline__ uint32_t get(int i) const { return __funnelshift_r(w[i], w[i + 1], sh); }
};
// A field of BYTES bytes (a multiple of 4, or 2) from a 2-byte aligned address: a 2-byte field is
// one u16 load (a word could reach past the block: the last field of a 64-wide block's last plane).
template <int BYTES> struct tbq_ufield : tbq_uwords<BYTES / 4> {
    static_assert(BYTES % 4 == 0, "fields of 2 or 4·n bytes");
};
template <> struct tbq_ufield<2> {
    uint32_t v;
    template <typename A> __device__ __forceinline__ void load(A p) { v = tbq_ld16(p); }
    __device__ __forceinline__ uint32_t get(int) const { return v; }
};

// K of any tbq type: thread (g, c) reads packed lanes 8c..8c+7 of each plane, i.e. S·p bytes at
// S·p·c of a plane of p bits (S slots a lane: 4, or 2 in a 64-wide block); k-step j's register h
// holds the 2p bits at 4·p·j + 2·p·h of that run: slots (2h, 2h+1) of lane 8c+j (S = 4, eight
// k-steps a block) or slots (0, 1) of lane 8c+2j+h (S = 2, four k-steps). The table index of a register is (plane-0 pair) | (plane-1 pair) << 2·plane0; the table
// holds half2 (C[c0], C[c1]) for every index, replicated once per bank so that the 32 lanes of a
// warp never meet in a bank.
//
// Two layouts (tbq_mma_smem):
// - interleaved (K tables of ≤ 256 entries: tbq3, tbq4): entry e of lane l at byte 256·e + 4·l
//   (K) and 256·e + 128 + 4·l (V), so the byte offset of a register is the index in byte 1 and
//   the lane's constant in byte 0: one PRMT of the code word and that constant (`lb`), with no
//   shift, multiply or add — the table look-up costs 2 instructions a register instead of 5.
// - separate (tbq5: 1024 entries, tbq6: 4096): K entry e of lane l at word rep·e + l % rep (rep
//   replicas so that the table stays at 32 KB; lanes sharing l % rep may meet in a bank), then
//   the V table with 32 replicas (word 32·e + l).
template <int T> struct tbq_mma_k {
    using tr = tbq_traits<T>;
    static constexpr int P0 = tr::plane0, P1 = tr::plane1, S = tr::slots;
    static constexpr int entries = 1 << (2 * tr::bits);
    static constexpr bool IL = entries <= 256;
    static constexpr int rep = IL ? 32 : 8192 / entries;
    static constexpr uint32_t M0 = (1u << P0) - 1, M1 = (1u << P1) - 1;
    static __device__ __forceinline__ int c0(int e) { return (e & M0) | ((e >> (2 * P0)) & M1) << P0; }
    static __device__ __forceinline__ int c1(int e) { return ((e >> P0) & M0) | ((e >> (2 * P0 + P1)) & M1) << P0; }
    // byte offset of entry e, lane l in the K table
    static __device__ __forceinline__ uint32_t entry_off(int e, int l) {
        return IL ? 256u * e + 4u * l : 4u * (rep * e + l % rep);
    }
    // the lane's constant of a byte offset: 4·l (interleaved), 4·(l % rep) (separate)
    static __device__ __forceinline__ uint32_t lane_base(int l) { return 4u * (IL ? l : l % rep); }
    struct kraw {
        tbq_ufield<S * P0> a;
        tbq_ufield<P1 == 0 ? 2 : S * P1> b; // unused without a second plane
        template <typename A> __device__ __forceinline__ void load(A qs, int c) {
            a.load(qs + S * P0 * c);
            if constexpr (P1 != 0) b.load(qs + 4 * S * P0 + S * P1 * c);
        }
        // table index of k-step j, slots (0,1) (h = 0) or (2,3) (h = 1)
        __device__ __forceinline__ uint32_t idx(int j, int h) const {
            const int o0 = 4 * P0 * j;
            uint32_t e = (a.get(o0 >> 5) >> ((o0 & 31) + 2 * P0 * h)) & ((1u << (2 * P0)) - 1);
            if constexpr (P1 != 0) {
                const int o1 = 4 * P1 * j;
                e |= ((b.get(o1 >> 5) >> ((o1 & 31) + 2 * P1 * h)) & ((1u << (2 * P1)) - 1)) << (2 * P0);
            }
            return e;
        }
        // byte offset in the K table of k-step j, slots (2h, 2h+1); lb = lane_base(lane)
        __device__ __forceinline__ uint32_t off(int j, int h, uint32_t lb) const {
            if constexpr (IL && P1 == 0) {
                // one plane of 4 bits: the index is byte 2·(j & 1) + h of word j / 2
                return __byte_perm(a.get(j >> 1), lb, 0x5504 | ((2 * (j & 1) + h) << 4));
            } else if constexpr (IL) {
                return (idx(j, h) << 8) | lb;
            } else {
                return idx(j, h) * (4u * rep) + lb;
            }
        }
    };
};

// V of a tbq type of one 4-bit plane or of planes 2 + 1 (tbq4_0 and tbq4_1, tbq3_0 and tbq3_1, and
// their 64-wide variants, S = 2 slots a lane): the table of token pairs (code of t0, code of t1),
// replicated 32 times. Thread g reads packed lanes 4g..4g+3; `vpairs::off(l, s, vb)` is the table
// byte offset of (lane 4g+l, slot s) of a token pair.
template <int P0, int P1, int S> struct tbq_mma_v_planes;

// The V table byte offset of the index in byte l of w: the index in byte 1 and the lane's
// constant vb in byte 0 (interleaved layout), or index · 128 + vb (separate).
template <bool IL>
static __device__ __forceinline__ uint32_t tbq_vpair_off(uint32_t w, int l, uint32_t vb) {
    return IL ? __byte_perm(w, vb, 0x5504 | (l << 4)) : __byte_perm(w, 0, 0x4440 | l) * 128u + vb;
}

// nibble l of a u16 -> low nibble of byte l
static __device__ __forceinline__ uint32_t tbq_spread_nibbles(uint32_t b) {
    const uint32_t t = __byte_perm(b, 0, 0x4140);
    return (t | (t << 4)) & 0x0F0F0F0Fu;
}
// 2-bit field l of a byte -> low 2 bits of byte l
static __device__ __forceinline__ uint32_t tbq_spread_pairs(uint32_t b) {
    uint32_t x = b & 0xFFu;
    x = (x | (x << 4)) & 0x0F0Fu;
    x = (x | (x << 2)) & 0x3333u;
    return tbq_spread_nibbles(x);
}

// The token-pair table of one 4-bit plane: entry (code of t0) | (code of t1) << 4.
struct tbq_mma_v_codes_4 {
    static constexpr int entries = 256;
    static __device__ __forceinline__ int c0(int e) { return e & 15; }
    static __device__ __forceinline__ int c1(int e) { return e >> 4; }
};
// The token-pair table of planes 2 + 1: bits 0-3 the 2-bit plane of tokens (t0, t1), bits 4-5
// their 1-bit plane (the same order as the K table of a 2 + 1 type).
struct tbq_mma_v_codes_21 {
    static constexpr int entries = 64;
    static __device__ __forceinline__ int c0(int e) { return (e & 3) | ((e >> 4) & 1) << 2; }
    static __device__ __forceinline__ int c1(int e) { return ((e >> 2) & 3) | ((e >> 5) & 1) << 2; }
};
// Table indices of one 4-bit plane's token pair, a byte each: for the low (o = 0) or high (o = 1)
// nibble of every byte of t0's word x0 and t1's word x1.
static __device__ __forceinline__ uint32_t tbq_nibble_pairs(uint32_t x0, uint32_t x1, int o) {
    return o == 0 ? (x0 & 0x0F0F0F0Fu) | ((x1 << 4) & 0xF0F0F0F0u) : ((x0 >> 4) & 0x0F0F0F0Fu) | (x1 & 0xF0F0F0F0u);
}

template <> struct tbq_mma_v_planes<4, 0, 4> : tbq_mma_v_codes_4 {
    // packed lanes 4g..4g+3 = 8 bytes at 8g (a u16 per lane, slot s at bits 4s).
    struct vraw {
        tbq_uwords<2> a;
        template <typename A> __device__ __forceinline__ void load(A qs, int g) { a.load(qs + 8 * g); }
    };
    // Table indices (code of t0) | (code of t1) << 4 of a token pair for all 16 (lane, slot)
    // of this thread, built a word at a time: w[2h + o] holds, for the lanes 2h, 2h+1 of the
    // thread's four, the slots 2k + o in byte 2·(lane & 1) + k.
    struct vpairs {
        uint32_t w[4];
        __device__ __forceinline__ vpairs(const vraw & t0, const vraw & t1) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const uint32_t x0 = t0.a.get(h), x1 = t1.a.get(h);
                w[2 * h + 0] = tbq_nibble_pairs(x0, x1, 0);
                w[2 * h + 1] = tbq_nibble_pairs(x0, x1, 1);
            }
        }
        // byte offset in the V table of (lane l, slot s) of the pair: the index is byte
        // 2·(l & 1) + s / 2 of w[2·(l / 2) + s % 2]; vb as for tbq_mma_v::off
        template <bool IL>
        __device__ __forceinline__ uint32_t off(int l, int s, uint32_t vb) const {
            return tbq_vpair_off<IL>(w[2 * (l >> 1) + (s & 1)], 2 * (l & 1) + (s >> 1), vb);
        }
    };
};
template <> struct tbq_mma_v_planes<2, 1, 4> : tbq_mma_v_codes_21 {
    // 2-bit plane bytes 4g..4g+3 (a word: byte l = lane 4g+l, slot s at bits 2s), 1-bit
    // plane bytes 32+2g, 33+2g (a u16: lane 4g+l at bits 4l, slot s at bit 4l+s).
    struct vraw {
        tbq_uwords<1> a;
        uint32_t b;
        template <typename A> __device__ __forceinline__ void load(A qs, int g) {
            a.load(qs + 4 * g);
            b = tbq_ld16(qs + 32 + 2 * g);
        }
    };
    // Table indices of a token pair for all 16 (lane, slot) of this thread: w[s], byte l.
    struct vpairs {
        uint32_t w[4];
        __device__ __forceinline__ vpairs(const vraw & t0, const vraw & t1) {
            const uint32_t a0 = t0.a.get(0), a1 = t1.a.get(0);
            const uint32_t s0 = tbq_spread_nibbles(t0.b), s1 = tbq_spread_nibbles(t1.b);
#pragma unroll
            for (int s = 0; s < 4; ++s) {
                w[s] = ((a0 >> (2 * s)) & 0x03030303u) | (((a1 >> (2 * s)) << 2) & 0x0C0C0C0Cu) |
                       (((s0 >> s) << 4) & 0x10101010u) | (((s1 >> s) << 5) & 0x20202020u);
            }
        }
        // byte offset in the V table of (lane l, slot s) of the pair: the index is byte l of w[s]
        template <bool IL>
        __device__ __forceinline__ uint32_t off(int l, int s, uint32_t vb) const { return tbq_vpair_off<IL>(w[s], l, vb); }
    };
};
// 64-wide blocks, one 4-bit plane: packed lanes 4g..4g+3 = 4 bytes at 4g (a byte per lane, slot s
// at bits 4s).
template <> struct tbq_mma_v_planes<4, 0, 2> : tbq_mma_v_codes_4 {
    struct vraw {
        tbq_uwords<1> a;
        template <typename A> __device__ __forceinline__ void load(A qs, int g) { a.load(qs + 4 * g); }
    };
    // w[s], byte l: the index (code of t0) | (code of t1) << 4 of (lane l, slot s)
    struct vpairs {
        uint32_t w[2];
        __device__ __forceinline__ vpairs(const vraw & t0, const vraw & t1) {
            const uint32_t x0 = t0.a.get(0), x1 = t1.a.get(0);
            w[0] = tbq_nibble_pairs(x0, x1, 0);
            w[1] = tbq_nibble_pairs(x0, x1, 1);
        }
        template <bool IL>
        __device__ __forceinline__ uint32_t off(int l, int s, uint32_t vb) const { return tbq_vpair_off<IL>(w[s], l, vb); }
    };
};
// 64-wide blocks, planes 2 + 1: 2-bit plane bytes 2g, 2g+1 (a u16: lane 4g+l at bits 4l, slot s at
// bits 4l+2s), 1-bit plane byte 16+g (lane 4g+l at bits 2l, slot s at bit 2l+s), read as the u16
// at 16 + (g & ~1) so that no load leaves the block.
template <> struct tbq_mma_v_planes<2, 1, 2> : tbq_mma_v_codes_21 {
    struct vraw {
        uint32_t a, b;
        template <typename A> __device__ __forceinline__ void load(A qs, int g) {
            a = tbq_ld16(qs + 2 * g);
            b = (uint32_t) tbq_ld16(qs + 16 + (g & ~1)) >> (8 * (g & 1));
        }
    };
    // w[s], byte l: the index of (lane l, slot s), as in tbq_mma_v_planes<2, 1, 4>
    struct vpairs {
        uint32_t w[2];
        __device__ __forceinline__ vpairs(const vraw & t0, const vraw & t1) {
            const uint32_t a0 = tbq_spread_nibbles(t0.a), a1 = tbq_spread_nibbles(t1.a);
            const uint32_t s0 = tbq_spread_pairs(t0.b), s1 = tbq_spread_pairs(t1.b);
#pragma unroll
            for (int s = 0; s < 2; ++s) {
                w[s] = ((a0 >> (2 * s)) & 0x03030303u) | (((a1 >> (2 * s)) << 2) & 0x0C0C0C0Cu) |
                       (((s0 >> s) << 4) & 0x10101010u) | (((s1 >> s) << 5) & 0x20202020u);
            }
        }
        template <bool IL>
        __device__ __forceinline__ uint32_t off(int l, int s, uint32_t vb) const { return tbq_vpair_off<IL>(w[s], l, vb); }
    };
};
// V table offsets: `vb` is the lane's constant, 128 + 4·l in the interleaved layout (the odd
// 128-byte halves of the K table's 256-byte rows), table start + 4·l in the separate one (entry
// e at byte 128·e + vb).
template <int T>
struct tbq_mma_v : tbq_mma_v_planes<tbq_traits<T>::plane0, tbq_traits<T>::plane1, tbq_traits<T>::slots> {};

// Words of shared memory the tensor-core kernel's tables take (src/cuda/fattn.rs mirrors this):
// K and V code tables (interleaved: 64 words per entry of the larger table; separate: K replicas,
// then V's 32), for a sub-scaled type a 256-entry table of gain pairs, and for a compact-header
// type the 8 scale mantissas (tbq_mma_scale).
template <int KT, int VT> struct tbq_mma_smem {
    static constexpr bool IL = tbq_mma_k<KT>::IL;
    static constexpr int kv_entries = tbq_mma_k<KT>::entries > tbq_mma_v<VT>::entries ? tbq_mma_k<KT>::entries
                                                                                      : tbq_mma_v<VT>::entries;
    static constexpr int k_words = IL ? 64 * kv_entries : tbq_mma_k<KT>::rep * tbq_mma_k<KT>::entries;
    static constexpr int v_words = IL ? 0 : 32 * tbq_mma_v<VT>::entries;
    static constexpr int g_words = tbq_traits<KT>::sub_scales || tbq_traits<VT>::sub_scales ? 256 : 0;
    static constexpr int m_words = tbq_compact<KT>::value || tbq_compact<VT>::value ? 8 : 0; // keeps 16-byte alignment
    static constexpr int words = k_words + v_words + g_words + m_words;
};

// The scale of a block from its first header word `h` (a u16): the half d, or (compact header) the
// scale of the code k in the low byte (format::scale8_value), 0 for k = 0. `mant` is the shared
// table of the 8 mantissas times 2^-16 (f32 bits, exponent 111): entry k & 7 with (k >> 3) added to
// its exponent field is SCALE8_MANTISSAS[k & 7] · 2^((k >> 3) - 16) = 2^((k - 128)/8), exact (a
// power-of-two step of a normal float): the LDS, an add and ~4 logic ops with the zero test, no
// FMUL and no 2^e to build. The gains of a compact block are h's high byte.
template <int T>
static __device__ __forceinline__ float tbq_mma_scale(uint32_t h, const uint32_t * mant) {
    if constexpr (tbq_compact<T>::value) {
        const uint32_t bits = mant[h & 7u] + ((h & 0xF8u) << 20);
        return (h & 0xFFu) == 0 ? 0.0f : __uint_as_float(bits);
    } else {
        return __half2float(__ushort_as_half((unsigned short) h));
    }
}

// ---- K/V through shared memory (the staged pairs) ---------------------------------------------
// A warp copies its tile's bytes into its own staging area with cp.async: a token's head span (NB
// blocks from a 2-byte-aligned address) as the 16-byte chunks from the 16-byte line it starts in
// (bytes past the span are zero-filled, never read; the bytes before it in its line are read and
// ignored). Threads then read their fragments' words from shared memory. One stage for K and one
// for V: K of the next tile is copied while this one's QK and softmax run, V while its PV and the
// next QK run. Measured against 4-byte copies at an odd word stride (fewer bank conflicts on the
// reads, 3× the copy instructions): slower for every pair (NOTES.md).
template <int BYTES> struct tbq_stage_span {
    static constexpr int chunks = (BYTES + 14 + 15) / 16; // a span starts at an even byte of its line
    static constexpr int stride = 4 * chunks;             // words
};
// Which pairs stage their tiles (measured, H100, NOTES.md "staged loads"): at D = 128 those with
// gains on either side or 5- and 6-bit keys (10-25% faster: their directly loaded fragments
// spilled), at D = 256 those with gained values (3-12%); the other pairs load directly (5-10%
// faster: the copies cost more instructions than the loads they replace). D = 512 always stages
// (its fragments are read one block at a time, just before use); D = 64 (the _64 types, half the
// fragments of D = 128) loads directly. src/cuda/fattn.rs mirrors it.
template <int KT, int VT, int D> struct tbq_mma_staged {
    static constexpr int NB = D / tbq_traits<KT>::block;
    static constexpr bool value = tbq_traits<KT>::block == 64 ? false
                                  : NB == 1 ? tbq_traits<KT>::sub_scales || tbq_traits<VT>::sub_scales || tbq_traits<KT>::bits >= 5
                                  : NB == 2 ? tbq_traits<VT>::sub_scales
                                            : true;
};
template <int KT, int VT, int D> struct tbq_mma_stage {
    static constexpr int NB = D / tbq_traits<KT>::block;
    using SK = tbq_stage_span<NB * tbq_traits<KT>::block_bytes>;
    using SV = tbq_stage_span<NB * tbq_traits<VT>::block_bytes>;
    static constexpr bool staged = tbq_mma_staged<KT, VT, D>::value;
    static constexpr int k_words = TBQ_MMA_TILE * SK::stride;
    // per warp, 0 for a pair that loads directly (src/cuda/fattn.rs mirrors it)
    static constexpr int words = staged ? k_words + TBQ_MMA_TILE * SV::stride : 0;
};

static __device__ __forceinline__ void tbq_cp_async16(uint32_t dst, const void * src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
static __device__ __forceinline__ void tbq_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most one committed group of this thread is still in flight.
static __device__ __forceinline__ void tbq_cp_async_wait_all_but_one() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

// Copies the head spans of the tile's 16 tokens (t0: the tile's first token relative to base;
// tokens past t_len re-read the last one) into the staging area at shared address `stage`, unless
// !any. Every lane of the warp calls it; it commits one group either way.
template <int BYTES>
static __device__ __forceinline__ void tbq_stage_tile(uint32_t stage, const uint8_t * base, uint32_t nb1, int t0, int t_len,
                                                      int lane, bool any) {
    using SP = tbq_stage_span<BYTES>;
    constexpr int N = TBQ_MMA_TILE * SP::chunks;
    if (any) {
#pragma unroll
        for (int k = 0; k < (N + TBQ_WARP_SIZE - 1) / TBQ_WARP_SIZE; ++k) {
            const int i = lane + TBQ_WARP_SIZE * k;
            if (N % TBQ_WARP_SIZE == 0 || i < N) {
                const int t = i / SP::chunks, j = i - t * SP::chunks;
                const uint8_t * row = base + (uint32_t) min(t0 + t, t_len - 1) * nb1;
                const uint8_t * src = (const uint8_t *) ((uintptr_t) row & ~(uintptr_t) 15) + 16 * j;
                const int left = (int) (row + BYTES - src); // bytes of the span from src on
                tbq_cp_async16(stage + 4u * (t * SP::stride) + 16 * j, left > 0 ? src : row, max(min(left, 16), 0));
            }
        }
    }
    tbq_cp_async_commit();
}

// The fragments' bytes of thread (g, c) for NBH blocks of a head, read by tbq_mma_read_k and
// tbq_mma_read_v from global memory or from the warp's staging areas. K side: tokens g, g+8
// (codes, d, gains) and their mask bits; V side: tokens 2c, 2c+1, 2c+8, 2c+9 (codes, gains) and d
// of tokens g, g+8.
template <int KT, int VT, int NBH> struct tbq_mma_raw {
    typename tbq_mma_k<KT>::kraw k[NBH][2]; // tokens g, g+8
    typename tbq_mma_v<VT>::vraw v[NBH][4]; // tokens 2c, 2c+1, 2c+8, 2c+9
    unsigned short kd[NBH][2], vd[NBH][2];  // d of K and V (compact: the header word), tokens g, g+8
    unsigned short kg[NBH][2], vg[NBH][4];  // gains words of sub-scaled K (tokens g, g+8; compact: in kd) and V (as v;
                                            // compact: the header word, gains in the high byte)
    unsigned short mk[2][2];                // mask bits [row 2c+r][token g, g+8]
};

// The shared address of token t's staged copy: its slot (t · stride words), plus the offset of
// its global row `row` in the chunk the copy started from.
template <int BYTES>
static __device__ __forceinline__ uint32_t tbq_staged_row(uint32_t area, const uint8_t * row, int t) {
    return area + 4u * (t * tbq_stage_span<BYTES>::stride) + ((uint32_t) (uintptr_t) row & 15u);
}

// The K side of blocks b0..b0+NBH-1 of a tile: `krow(t)` is the address (pointer or shared
// address) of token t's head row (t relative to the tile's first token; tokens past the end
// re-read the last one, their weight is 0).
template <int KT, int VT, int NBH, typename ROW>
static __device__ __forceinline__ void tbq_mma_read_k(tbq_mma_raw<KT, VT, NBH> & r, ROW krow, int b0, int g, int c) {
    constexpr int KB = tbq_traits<KT>::block_bytes;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const auto row = krow(g + 8 * i) + b0 * KB;
#pragma unroll
        for (int b = 0; b < NBH; ++b) {
            r.kd[b][i] = tbq_ld16(row + b * KB); // compact: scale code and gains, one load
            if constexpr (tbq_traits<KT>::sub_scales && !tbq_compact<KT>::value) {
                r.kg[b][i] = tbq_ld16(row + b * KB + TBQ_D_BYTES);
            }
            r.k[b][i].load(row + b * KB + tbq_traits<KT>::header_bytes, c);
        }
    }
}

// The mask bits of tokens g, g+8 of the tile at t0 (relative to the split's first token) for the
// thread's rows 2c, 2c+1.
template <int KT, int VT, int NBH>
static __device__ __forceinline__ void tbq_mma_read_mask(tbq_mma_raw<KT, VT, NBH> & r, const unsigned short * const mrow[2],
                                                         int t0, int t_len, int g) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const uint32_t t = (uint32_t) min(t0 + g + 8 * i, t_len - 1);
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
            r.mk[rr][i] = mrow[rr] != nullptr ? __ldg(mrow[rr] + t) : (unsigned short) 0;
        }
    }
}

// The V side of blocks b0..b0+NBH-1 of a tile: `vrow(t)` as `krow` above.
template <int KT, int VT, int NBH, typename ROW>
static __device__ __forceinline__ void tbq_mma_read_v(tbq_mma_raw<KT, VT, NBH> & r, ROW vrow, int b0, int g, int c) {
    constexpr int VB = tbq_traits<VT>::block_bytes;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const auto row = vrow(g + 8 * i) + b0 * VB;
#pragma unroll
        for (int b = 0; b < NBH; ++b) r.vd[b][i] = tbq_ld16(row + b * VB);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const auto row = vrow(2 * c + (i & 1) + 8 * (i >> 1)) + b0 * VB;
#pragma unroll
        for (int b = 0; b < NBH; ++b) {
            if constexpr (tbq_traits<VT>::sub_scales) {
                // compact: the header word (gains in its high byte)
                r.vg[b][i] = tbq_ld16(row + b * VB + (tbq_compact<VT>::value ? 0 : TBQ_D_BYTES));
            }
            r.v[b][i].load(row + b * VB + tbq_traits<VT>::header_bytes, g);
        }
    }
}

// k-step j, register h of a block: the first of the two coordinates (x, x + 32) of thread c's
// pair (tbq_mma_k): slots (2h, 2h+1) of lane 8c+j (S = 4) or slots (0, 1) of lane 8c+2j+h (S = 2).
template <int S>
static __device__ __forceinline__ int tbq_mma_kcoord(int c, int j, int h) {
    return S == 4 ? 8 * c + j + 64 * h : 8 * c + 2 * j + h;
}

template <int KT, int VT, int D>
static __device__ __forceinline__ void k_tbq_fattn_mma(const tbq_fattn_params & p) {
    constexpr int W = tbq_traits<KT>::block; // 128, or 64 for the _64 types
    static_assert(tbq_traits<VT>::block == W, "K and V blocks of one width");
    constexpr int NB = D / W;
    constexpr int S = W / 32;  // slots a lane
    constexpr int KJ = W / 16; // k-steps of QK and M-tiles of PV per block
    constexpr int SP = S / 2;  // M-tiles per packed lane of a thread
    constexpr int NW = TBQ_MMA_WARPS;
    constexpr int R = TBQ_MMA_ROWS;
    constexpr int TT = TBQ_MMA_TILE;
    using TK = tbq_mma_k<KT>;
    using TV = tbq_mma_v<VT>;
    using SM = tbq_mma_smem<KT, VT>;
    using ST = tbq_mma_stage<KT, VT, D>;
    constexpr bool KS = tbq_traits<KT>::sub_scales, VS = tbq_traits<VT>::sub_scales;
    // Compact headers: the gains are bits 8.. of the header word (group s at 8 + 4s).
    constexpr int KGS = tbq_compact<KT>::value ? 8 : 0, VGS = tbq_compact<VT>::value ? 8 : 0;
    // Where the fragments come from (tbq_mma_staged). Staged: this warp's areas (K, then V, after
    // the tables), two copy groups in flight: K of tile n+1 (issued once tile n's K fragments are
    // in registers) and V of tile n (issued after tile n-1's V fragments were read). Direct: with
    // one block a head the next tile's fragments are loaded before this one is used (two register
    // buffers); D = 256 holds twice the accumulators and loads one tile at a time (no spills).
    // WIDE (D = 512): four blocks' accumulators take 128 registers, so q's B fragments live in
    // shared memory and a thread reads one block's fragments at a time, just before its MMAs.
    constexpr bool STAGED = ST::staged;
    constexpr bool WIDE = D > 256;
    static_assert(!WIDE || STAGED, "D = 512 reads its fragments from the staging areas");
    constexpr int NBH = WIDE ? 1 : NB; // blocks of fragments a thread holds
    constexpr bool PF = !STAGED && NB == 1;
    // WIDE: q's B fragments after the staging areas, a uint4 (hi b0, hi b1, lo b0, lo b1) per
    // (block, k-step, lane); src/cuda/fattn.rs sizes it.
    constexpr int QF_WORDS = WIDE ? NB * KJ * TBQ_WARP_SIZE * 4 : 0;
    extern __shared__ uint32_t smem_u[]; // max(SM::words + NW·stage words + QF_WORDS, NW·R·(D+2), R·D) words
    float * smem = (float *) smem_u;
    const char * tab = (const char *) smem_u;              // K and V tables: byte offsets (tbq_mma_k)
    uint32_t * lut_g = smem_u + SM::k_words + SM::v_words; // gain pairs (G[e & 15], G[e >> 4])
    const uint32_t * mant = lut_g + SM::g_words; // compact scale mantissas · 2^-16 (SM::m_words, tbq_mma_scale)
    uint4 * qfs = (uint4 *) (smem_u + SM::words + NW * ST::words);

    const int lane = threadIdx.x % TBQ_WARP_SIZE;
    const int warp = threadIdx.x / TBQ_WARP_SIZE;
    const int g = lane >> 2, c = lane & 3;
    const int hk = blockIdx.x;
    const int split = blockIdx.y;
    const int iq3 = blockIdx.z / p.n_row_groups;
    const int rg = blockIdx.z % p.n_row_groups;
    const int G = p.n_head / p.n_head_kv;
    const int ik3 = iq3 / (p.n_seq / p.n_seq_kv);
    const int rows_total = G * p.n_q;

    // 1. Stage the rows' rotated queries (canonical order), times the softmax scale.
    for (int r = warp; r < R; r += NW) {
        const int gr = rg * R + r;
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (gr < rows_total) {
                const float * q = tbq_fattn_q(p, tbq_fattn_row(p, G, hk, gr), iq3) + b * W;
#pragma unroll
                for (int k = 0; k < S; ++k) v[k] = q[lane + 32 * k];
                tbq_rotate_warp<S>(v, lane);
            }
#pragma unroll
            for (int k = 0; k < S; ++k) smem[r * D + b * W + 32 * k + lane] = v[k] * p.scale;
        }
    }
    __syncthreads();
    // B fragments of T(q)^T: k-step j of block b, b0 = coords (x, x+32) of register 0, b1 of
    // register 1 (tbq_mma_kcoord), row g. WIDE: each warp writes some blocks' to shared memory
    // (synchronised below, before the tables).
    uint32_t qh[WIDE ? 1 : NB][KJ][2], ql[WIDE ? 1 : NB][KJ][2];
#pragma unroll
    for (int b = WIDE ? warp : 0; b < NB; b += WIDE ? NW : 1)
#pragma unroll
        for (int j = 0; j < KJ; ++j) {
            const float * qr = smem + g * D + b * W;
            uint32_t hi[2], lo[2];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int x = tbq_mma_kcoord<S>(c, j, h);
                tbq_split2(qr[x], qr[x + 32], hi[h], lo[h]);
            }
            if constexpr (WIDE) {
                qfs[(b * KJ + j) * TBQ_WARP_SIZE + lane] = make_uint4(hi[0], hi[1], lo[0], lo[1]);
            } else {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    qh[b][j][h] = hi[h];
                    ql[b][j][h] = lo[h];
                }
            }
        }
    // Mask rows and ALiBi slopes of this thread's two rows 2c, 2c+1.
    const unsigned short * mrow[2];
    float slope[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
        const tbq_qrow row = tbq_fattn_row(p, G, hk, min(rg * R + 2 * c + rr, rows_total - 1));
        mrow[rr] = (const unsigned short *) tbq_fattn_mask_row(p, row, iq3);
        slope[rr] = tbq_fattn_slope(p, row.h);
    }
    __syncthreads();
    // 2. Pair tables, replicated per bank: one thread computes an entry and stores its replicas
    //    with 16-byte stores (a block's set-up is a floor at short contexts).
    {
        const float * lk = tbq_traits<KT>::levels();
        const float * lv = tbq_traits<VT>::levels();
        const auto pair = [](const float * lev, int a, int b) {
            const __half2 h = __floats2half2_rn(lev[a], lev[b]);
            return *(const uint32_t *) &h;
        };
        // the replicas of entry e: 32 words (interleaved or V) or TK::rep words (separate K)
        const auto fill = [&](int w0, int copies, uint32_t v) {
            if (copies == 2) {
                *(uint2 *) (smem_u + w0) = make_uint2(v, v);
            } else {
                for (int k = 0; k < copies; k += 4) *(uint4 *) (smem_u + w0 + k) = make_uint4(v, v, v, v);
            }
        };
        constexpr int NT = NW * TBQ_WARP_SIZE;
        if constexpr (SM::IL) {
            // row e: 32 K words, then 32 V words; entries past a table's size stay unused
            for (int i = threadIdx.x; i < 2 * SM::kv_entries; i += NT) {
                const int e = i >> 1;
                const bool is_v = i & 1;
                const bool used = is_v ? e < TV::entries : e < TK::entries;
                const uint32_t v = !used ? 0u : is_v ? pair(lv, TV::c0(e), TV::c1(e)) : pair(lk, TK::c0(e), TK::c1(e));
                fill(64 * e + 32 * is_v, 32, v);
            }
        } else {
            for (int e = threadIdx.x; e < TK::entries; e += NT) fill(TK::rep * e, TK::rep, pair(lk, TK::c0(e), TK::c1(e)));
            for (int e = threadIdx.x; e < TV::entries; e += NT) fill(SM::k_words + 32 * e, 32, pair(lv, TV::c0(e), TV::c1(e)));
        }
        for (int e = threadIdx.x; e < SM::g_words; e += NT) {
            const __half2 h = __floats2half2_rn(tbq_gains[e & 15], tbq_gains[e >> 4]);
            lut_g[e] = *(const uint32_t *) &h;
        }
        if (threadIdx.x < SM::m_words) { // 2^-16 · mantissa: exponent field 127 - 16
            lut_g[SM::g_words + threadIdx.x] = __float_as_uint(tbq_scale8_mantissas[threadIdx.x]) - (16u << 23);
        }
    }
    __syncthreads();


    // 3. The tiles.
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float acc[NB][KJ][4];
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
        for (int i = 0; i < KJ; ++i)
#pragma unroll
            for (int k = 0; k < 4; ++k) acc[b][i][k] = 0.0f;

    const int t_begin = split * p.split_len;
    const int t_end = min(p.n_kv, t_begin + p.split_len);
    // Everything a tile reads is addressed from the split's first token with 32-bit offsets
    // (the plan keeps a split under 2^31 bytes): one IMAD per token instead of 64-bit math.
    const uint8_t * kbase = (const uint8_t *) p.k + hk * p.nbk2 + ik3 * p.nbk3 + (int64_t) t_begin * p.nbk1;
    const uint8_t * vbase = (const uint8_t *) p.v + hk * p.nbv2 + ik3 * p.nbv3 + (int64_t) t_begin * p.nbv1;
    const unsigned short * msplit[2] = {mrow[0] == nullptr ? nullptr : mrow[0] + t_begin,
                                        mrow[1] == nullptr ? nullptr : mrow[1] + t_begin};
    const int t_len = t_end - t_begin;
    const uint32_t lbk = TK::lane_base(lane);                                  // K look-up constant
    const uint32_t lbv = SM::IL ? 128u + 4u * lane : 4u * (SM::k_words + lane); // V look-up constant

    constexpr int KBYTES = NB * tbq_traits<KT>::block_bytes, VBYTES = NB * tbq_traits<VT>::block_bytes;
    const uint32_t kst = (uint32_t) __cvta_generic_to_shared(smem_u + SM::words + warp * ST::words);
    const uint32_t vst = kst + 4u * ST::k_words;
    const uint32_t nbk1 = (uint32_t) p.nbk1, nbv1 = (uint32_t) p.nbv1;
    // token t of the tile at t0 (relative to the split's first token): its row in global memory
    const auto grow = [&](const uint8_t * base, uint32_t nb1, int t0, int t) {
        return base + (uint32_t) min(t0 + t, t_len - 1) * nb1;
    };
    using RAW = tbq_mma_raw<KT, VT, NBH>;
    const auto load_direct = [&](RAW & r, int t0) {
        tbq_mma_read_k<KT, VT, NBH>(r, [&](int t) { return grow(kbase, nbk1, t0, t); }, 0, g, c);
        tbq_mma_read_mask<KT, VT, NBH>(r, msplit, t0, t_len, g);
        tbq_mma_read_v<KT, VT, NBH>(r, [&](int t) { return grow(vbase, nbv1, t0, t); }, 0, g, c);
    };

    RAW cur, nxt;
    // Tokens below n_exact come from the exact keys (in the combine kernel): the tiles start after them.
    int t0 = max(t_begin, min(p.n_exact, t_end)) + warp * TT;
    if constexpr (STAGED) {
        tbq_stage_tile<KBYTES>(kst, kbase, nbk1, t0 - t_begin, t_len, lane, t0 < t_end);
        tbq_stage_tile<VBYTES>(vst, vbase, nbv1, t0 - t_begin, t_len, lane, t0 < t_end);
    } else if (PF && t0 < t_end) {
        load_direct(cur, t0 - t_begin);
    }
    for (; t0 < t_end; t0 += NW * TT) {
        const int t1 = t0 + NW * TT;
        // token t's staged copy
        const auto krow_st = [&](int t) { return tbq_staged_row<KBYTES>(kst, grow(kbase, nbk1, t0 - t_begin, t), t); };
        const auto vrow_st = [&](int t) { return tbq_staged_row<VBYTES>(vst, grow(vbase, nbv1, t0 - t_begin, t), t); };
        if constexpr (STAGED) {
            tbq_mma_read_mask<KT, VT, NBH>(cur, msplit, t0 - t_begin, t_len, g);
            tbq_cp_async_wait_all_but_one(); // K of this tile
            __syncwarp();
            if constexpr (!WIDE) {
                tbq_mma_read_k<KT, VT, NBH>(cur, krow_st, 0, g, c);
                __syncwarp(); // every lane holds its K fragments: the area is free
                tbq_stage_tile<KBYTES>(kst, kbase, nbk1, t1 - t_begin, t_len, lane, t1 < t_end);
            }
        } else if (!PF) {
            load_direct(cur, t0 - t_begin);
        } else if (t1 < t_end) {
            load_direct(nxt, t1 - t_begin);
        }
        // QK: one accumulator per block (each block has its own d), summed with the blocks' d.
        float s[4]; // (token g, row 2c), (g, 2c+1), (g+8, 2c), (g+8, 2c+1)
        {
            // QC independent accumulator chains per block (hi / lo halves, and the k-step's
            // parity with one block a head): a chain of 16 dependent MMAs would be latency-bound.
            constexpr int QC = NB == 1 ? 4 : 2;
            float xs[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                if constexpr (WIDE) {
                    tbq_mma_read_k<KT, VT, NBH>(cur, krow_st, b, g, c);
                }
                const int bh = WIDE ? 0 : b;
                // gains of registers h = 0, 1 of tokens g, g+8: kgain[i][h], as half2 like the
                // codes (S = 2: both registers hold slots 0 and 1)
                uint32_t kgain[2][2];
                if constexpr (KS && KGS != 0) { // compact (S = 2): the header word's high byte
                    static_assert(S == 2, "compact headers are 64-wide blocks' only");
#pragma unroll
                    for (int i = 0; i < 2; ++i) kgain[i][0] = kgain[i][1] = lut_g[cur.kd[bh][i] >> 8];
                } else if constexpr (KS) {
#pragma unroll
                    for (int i = 0; i < 2; ++i)
#pragma unroll
                        for (int h = 0; h < 2; ++h) kgain[i][h] = lut_g[(cur.kg[bh][i] >> (S == 4 ? 8 * h : 0)) & 0xFFu];
                }
                const auto kreg = [&](int i, int j, int h) {
                    const uint32_t a = *(const uint32_t *) (tab + cur.k[bh][i].off(j, h, lbk));
                    if constexpr (KS) {
                        const __half2 r = __hmul2(*(const __half2 *) &a, *(const __half2 *) &kgain[i][h]);
                        return *(const uint32_t *) &r;
                    } else {
                        return a;
                    }
                };
                float ch[QC][4];
#pragma unroll
                for (int q = 0; q < QC; ++q)
#pragma unroll
                    for (int k = 0; k < 4; ++k) ch[q][k] = 0.0f;
#pragma unroll
                for (int j = 0; j < KJ; ++j) {
                    uint32_t qf[4]; // hi b0, hi b1, lo b0, lo b1
                    if constexpr (WIDE) {
                        const uint4 f = qfs[(b * KJ + j) * TBQ_WARP_SIZE + lane];
                        qf[0] = f.x, qf[1] = f.y, qf[2] = f.z, qf[3] = f.w;
                    } else {
                        qf[0] = qh[b][j][0], qf[1] = qh[b][j][1], qf[2] = ql[b][j][0], qf[3] = ql[b][j][1];
                    }
                    const uint32_t a0 = kreg(0, j, 0);
                    const uint32_t a1 = kreg(1, j, 0);
                    const uint32_t a2 = kreg(0, j, 1);
                    const uint32_t a3 = kreg(1, j, 1);
                    const int q = QC == 4 ? 2 * (j & 1) : 0;
                    tbq_mma16816(ch[q], a0, a1, a2, a3, qf[0], qf[1]);
                    tbq_mma16816(ch[q + 1], a0, a1, a2, a3, qf[2], qf[3]);
                }
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    float x = ch[0][k] + ch[1][k];
#pragma unroll
                    for (int q = 2; q < QC; ++q) x += ch[q][k];
                    xs[k] = fmaf(tbq_mma_scale<KT>(cur.kd[bh][k >> 1], mant), x, xs[k]);
                }
            }
            if constexpr (WIDE) {
                __syncwarp(); // every lane read its K fragments: the area is free
                tbq_stage_tile<KBYTES>(kst, kbase, nbk1, t1 - t_begin, t_len, lane, t1 < t_end);
            }
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                float x = xs[k];
                if (p.softcap != 0.0f) {
                    x = p.softcap * tanhf(x);
                }
                const int rr = k & 1;
                const float mv = mrow[rr] != nullptr ? slope[rr] * __half2float(__ushort_as_half(cur.mk[rr][k >> 1])) : 0.0f;
                x = mv == -INFINITY ? -INFINITY : x + mv;
                if (t0 + g + 8 * (k >> 1) >= t_end) {
                    x = -INFINITY;
                }
                s[k] = x;
            }
        }
        // Softmax per tile: the max of each row over the 16 tokens (lanes of one c).
        float pw[4];
        bool any = false;
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
            float mx = fmaxf(s[rr], s[rr + 2]);
            mx = fmaxf(mx, __shfl_xor_sync(TBQ_FULL_MASK, mx, 4));
            mx = fmaxf(mx, __shfl_xor_sync(TBQ_FULL_MASK, mx, 8));
            mx = fmaxf(mx, __shfl_xor_sync(TBQ_FULL_MASK, mx, 16));
            const float mn = fmaxf(m[rr], mx);
            const float alpha = mn == -INFINITY ? 1.0f : tbq_exp_ftz(m[rr] - mn); // m = -inf: acc is 0
            m[rr] = mn;
            pw[rr] = s[rr] == -INFINITY ? 0.0f : tbq_exp_ftz(s[rr] - mn);
            pw[rr + 2] = s[rr + 2] == -INFINITY ? 0.0f : tbq_exp_ftz(s[rr + 2] - mn);
            l[rr] = l[rr] * alpha + pw[rr] + pw[rr + 2];
            if (__any_sync(TBQ_FULL_MASK, alpha != 1.0f)) {
#pragma unroll
                for (int b = 0; b < NB; ++b)
#pragma unroll
                    for (int i = 0; i < KJ; ++i) {
                        acc[b][i][rr] *= alpha;
                        acc[b][i][rr + 2] *= alpha;
                    }
            }
            any |= (pw[rr] >= p.sparse_v && pw[rr] > 0.0f) || (pw[rr + 2] >= p.sparse_v && pw[rr + 2] > 0.0f);
        }
        if constexpr (STAGED) {
            tbq_cp_async_wait_all_but_one(); // V of this tile (K of the next may be in flight)
            __syncwarp();
            if constexpr (!WIDE) {
                tbq_mma_read_v<KT, VT, NBH>(cur, vrow_st, 0, g, c);
                __syncwarp();
                tbq_stage_tile<VBYTES>(vst, vbase, nbv1, t1 - t_begin, t_len, lane, t1 < t_end);
            }
        }
        if (__any_sync(TBQ_FULL_MASK, any)) { // sparse V per tile (0: only all-masked tiles)
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                if constexpr (WIDE) {
                    tbq_mma_read_v<KT, VT, NBH>(cur, vrow_st, b, g, c);
                }
                const int bh = WIDE ? 0 : b;
                // P' = p·d_v in f16, per row parity: (token g, token g+8). Its rounding (2^-12
                // relative per weight, independent across tokens) averages out in the sum,
                // unlike the query's, which biases every score of a row alike (hence q hi + lo).
                uint32_t ph[2];
                const float dv0 = tbq_mma_scale<VT>(cur.vd[bh][0], mant);
                const float dv1 = tbq_mma_scale<VT>(cur.vd[bh][1], mant);
#pragma unroll
                for (int rr = 0; rr < 2; ++rr) {
                    const __half2 h = __floats2half2_rn(pw[rr] * dv0, pw[rr + 2] * dv1);
                    ph[rr] = *(const uint32_t *) &h;
                }
                // B fragment of thread (g, c): row g, tokens (2c, 2c+1) and (2c+8, 2c+9), from
                // lanes (2c)*4 + g/2 and (2c+1)*4 + g/2, parity g&1.
                const int sa = 8 * c + (g >> 1), sb = sa + 4;
                const uint32_t ha0 = __shfl_sync(TBQ_FULL_MASK, ph[0], sa), ha1 = __shfl_sync(TBQ_FULL_MASK, ph[1], sa);
                const uint32_t hb0 = __shfl_sync(TBQ_FULL_MASK, ph[0], sb), hb1 = __shfl_sync(TBQ_FULL_MASK, ph[1], sb);
                const uint32_t ha = g & 1 ? ha1 : ha0, hb = g & 1 ? hb1 : hb0;
                const uint32_t bh0 = __byte_perm(ha, hb, 0x5410), bh1 = __byte_perm(ha, hb, 0x7632);
                // A fragments: table indices of the token pairs (2c, 2c+1) and (2c+8, 2c+9).
                const typename TV::vpairs lo(cur.v[bh][0], cur.v[bh][1]), hi(cur.v[bh][2], cur.v[bh][3]);
                // gains of slot s of the token pairs (2c, 2c+1) and (2c+8, 2c+9): vgain[pair][s]
                uint32_t vgain[2][S];
                if constexpr (VS) {
#pragma unroll
                    for (int q = 0; q < 2; ++q)
#pragma unroll
                        for (int s = 0; s < S; ++s) {
                            const uint32_t g0 = (cur.vg[bh][2 * q] >> (VGS + 4 * s)) & 15u;
                            const uint32_t g1 = (cur.vg[bh][2 * q + 1] >> (VGS + 4 * s)) & 15u;
                            vgain[q][s] = lut_g[g0 | g1 << 4];
                        }
                }
                const auto vreg = [&](const typename TV::vpairs & pr, int q, int ll, int s) {
                    const uint32_t a = *(const uint32_t *) (tab + pr.template off<SM::IL>(ll, s, lbv));
                    if constexpr (VS) {
                        const __half2 r = __hmul2(*(const __half2 *) &a, *(const __half2 *) &vgain[q][s]);
                        return *(const uint32_t *) &r;
                    } else {
                        return a;
                    }
                };
#pragma unroll
                for (int i = 0; i < KJ; ++i) {
                    // M-tile i: row g -> packed lane 4g + i/SP, slot 2(i%SP); row g+8 -> slot + 1.
                    const int ll = i / SP, s0 = 2 * (i % SP);
                    const uint32_t a0 = vreg(lo, 0, ll, s0);
                    const uint32_t a1 = vreg(lo, 0, ll, s0 + 1);
                    const uint32_t a2 = vreg(hi, 1, ll, s0);
                    const uint32_t a3 = vreg(hi, 1, ll, s0 + 1);
                    tbq_mma16816(acc[b][i], a0, a1, a2, a3, bh0, bh1);
                }
            }
        }
        if constexpr (WIDE) {
            __syncwarp(); // every lane read its V fragments: the area is free
            tbq_stage_tile<VBYTES>(vst, vbase, nbv1, t1 - t_begin, t_len, lane, t1 < t_end);
        }
        if constexpr (PF) {
            cur = nxt;
        }
    }

    // 4. Row sums over the 8 lanes of one c; per-warp partials to shared memory, canonical order.
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
        l[rr] += __shfl_xor_sync(TBQ_FULL_MASK, l[rr], 4);
        l[rr] += __shfl_xor_sync(TBQ_FULL_MASK, l[rr], 8);
        l[rr] += __shfl_xor_sync(TBQ_FULL_MASK, l[rr], 16);
    }
    __syncthreads(); // the tables are dead from here
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
        float * ws = smem + (warp * R + 2 * c + rr) * (D + 2);
        if (g == 0) {
            ws[0] = m[rr];
            ws[1] = l[rr];
        }
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int i = 0; i < KJ; ++i) {
                const int co = b * W + 4 * g + i / SP + 32 * (2 * (i % SP));
                ws[2 + co] = acc[b][i][rr];
                ws[2 + co + 32] = acc[b][i][rr + 2];
            }
    }
    __syncthreads();
    // 5. Merge the warps (one warp per row), then the output or the split's record.
    for (int r = warp; r < R; r += NW) {
        const int gr = rg * R + r;
        if (gr >= rows_total) {
            break;
        }
        const auto [h, iq1] = tbq_fattn_row(p, G, hk, gr);
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < NW; ++w) M = fmaxf(M, smem[(w * R + r) * (D + 2)]);
        float S_ = 0.0f, a[NB][4] = {};
#pragma unroll
        for (int w = 0; w < NW; ++w) {
            const float * ws = smem + (w * R + r) * (D + 2);
            const float e = ws[0] == -INFINITY ? 0.0f : __expf(ws[0] - M);
            S_ += e * ws[1];
#pragma unroll
            for (int b = 0; b < NB; ++b)
#pragma unroll
                for (int k = 0; k < S; ++k) a[b][k] += e * ws[2 + b * W + 32 * k + lane];
        }
        if (p.partial == nullptr) { // one split, no exact keys: the output itself
            tbq_fattn_finalize<D, W>(p, M, S_, a, h, iq1, iq3, lane);
        } else {
            float * rec = p.partial + (((int64_t) (iq3 * p.n_q + iq1) * p.n_head + h) * p.n_splits + split) * (D + 2);
            if (lane == 0) {
                rec[0] = M;
                rec[1] = S_;
            }
#pragma unroll
            for (int b = 0; b < NB; ++b)
#pragma unroll
                for (int k = 0; k < S; ++k) rec[2 + b * W + 32 * k + lane] = a[b][k];
        }
    }
}

// Blocks per SM the register budget must allow: the kernel is latency-bound (NOTES.md), so at
// D = 128 three blocks (12 warps, ≤ 168 registers) beat two with more registers each. D = 64
// (half the fragments) takes the same bound; D = 256 and 512 one (their accumulators need the
// registers).
#ifndef TBQ_MMA_MIN_BLOCKS_D128
#define TBQ_MMA_MIN_BLOCKS_D128 3
#endif // TBQ_MMA_MIN_BLOCKS_D128
#define TBQ_FATTN_MMA(KT, KN, VT, VN, D)                                                             \
    extern "C" __global__ void __launch_bounds__(TBQ_MMA_WARPS * TBQ_WARP_SIZE,                    \
                                                 D <= 128 ? TBQ_MMA_MIN_BLOCKS_D128 : 1)            \
        k_tbq_fattn_mma_##KN##_##VN##_d##D(const tbq_fattn_params p) {                               \
        k_tbq_fattn_mma<KT, VT, D>(p);                                                                \
    }
#define TBQ_FATTN_MMA_D(KT, KN, VT, VN)                                                              \
    TBQ_FATTN_MMA(KT, KN, VT, VN, 128)                                                               \
    TBQ_FATTN_MMA(KT, KN, VT, VN, 256)                                                               \
    TBQ_FATTN_MMA(KT, KN, VT, VN, 512)

// Every tbq key type with the value types tbq4_0, tbq3_0, tbq3_1 and tbq4_1 (the value types of
// one 4-bit plane or of planes 2 + 1, with or without gains: tbq_mma_v_planes), at D = 128, 256
// and 512; their 64-wide variants at D = 64, the sub-scaled ones with either header (every
// 64-wide key type with every 64-wide value type: the compact pairs a user gets from
// TbqType::narrow, the first _64 types' pairs, and the mixed ones, 60 kernels).
#define TBQ_FATTN_MMA_K(KT, KN)                                                                      \
    TBQ_FATTN_MMA_D(KT, KN, TBQ_TYPE_TBQ4_0, tbq4_0)                                                 \
    TBQ_FATTN_MMA_D(KT, KN, TBQ_TYPE_TBQ3_0, tbq3_0)                                                 \
    TBQ_FATTN_MMA_D(KT, KN, TBQ_TYPE_TBQ3_1, tbq3_1)                                                 \
    TBQ_FATTN_MMA_D(KT, KN, TBQ_TYPE_TBQ4_1, tbq4_1)
#define TBQ_FATTN_MMA_K64(KT, KN)                                                                    \
    TBQ_FATTN_MMA(KT, KN, TBQ_TYPE_TBQ4_0_64, tbq4_0_64, 64)                                         \
    TBQ_FATTN_MMA(KT, KN, TBQ_TYPE_TBQ3_0_64, tbq3_0_64, 64)                                         \
    TBQ_FATTN_MMA(KT, KN, TBQ_TYPE_TBQ3_1_64, tbq3_1_64, 64)                                         \
    TBQ_FATTN_MMA(KT, KN, TBQ_TYPE_TBQ4_1_64, tbq4_1_64, 64)                                         \
    TBQ_FATTN_MMA(KT, KN, TBQ_TYPE_TBQ3_1_64C, tbq3_1_64c, 64)                                       \
    TBQ_FATTN_MMA(KT, KN, TBQ_TYPE_TBQ4_1_64C, tbq4_1_64c, 64)

TBQ_FATTN_MMA_K(TBQ_TYPE_TBQ4_0, tbq4_0)
TBQ_FATTN_MMA_K(TBQ_TYPE_TBQ3_0, tbq3_0)
TBQ_FATTN_MMA_K(TBQ_TYPE_TBQ5_0, tbq5_0)
TBQ_FATTN_MMA_K(TBQ_TYPE_TBQ6_0, tbq6_0)
TBQ_FATTN_MMA_K(TBQ_TYPE_TBQ3_1, tbq3_1)
TBQ_FATTN_MMA_K(TBQ_TYPE_TBQ4_1, tbq4_1)
TBQ_FATTN_MMA_K(TBQ_TYPE_TBQ5_1, tbq5_1)
TBQ_FATTN_MMA_K64(TBQ_TYPE_TBQ4_0_64, tbq4_0_64)
TBQ_FATTN_MMA_K64(TBQ_TYPE_TBQ3_0_64, tbq3_0_64)
TBQ_FATTN_MMA_K64(TBQ_TYPE_TBQ5_0_64, tbq5_0_64)
TBQ_FATTN_MMA_K64(TBQ_TYPE_TBQ6_0_64, tbq6_0_64)
TBQ_FATTN_MMA_K64(TBQ_TYPE_TBQ3_1_64, tbq3_1_64)
TBQ_FATTN_MMA_K64(TBQ_TYPE_TBQ4_1_64, tbq4_1_64)
TBQ_FATTN_MMA_K64(TBQ_TYPE_TBQ5_1_64, tbq5_1_64)
TBQ_FATTN_MMA_K64(TBQ_TYPE_TBQ3_1_64C, tbq3_1_64c)
TBQ_FATTN_MMA_K64(TBQ_TYPE_TBQ4_1_64C, tbq4_1_64c)
TBQ_FATTN_MMA_K64(TBQ_TYPE_TBQ5_1_64C, tbq5_1_64c)
