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
        r.f = tbq_load_fields<KT>(blk + TBQ_HEADER_BYTES, lane);
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

// ---- the output of one row: sinks, 1/S, T^-1, store -------------------------------------------
template <int D>
static __device__ __forceinline__ void tbq_fattn_finalize(const tbq_fattn_params & p, float M, float S,
                                                          float a[D / 128][4], int h, int iq1, int iq3, int lane) {
    if (p.sinks != nullptr) {
        const float s = p.sinks[h];
        if (s > M) {
            const float ms = expf(M - s);
#pragma unroll
            for (int b = 0; b < D / 128; ++b)
#pragma unroll
                for (int k = 0; k < 4; ++k) a[b][k] *= ms;
            S = S * ms + 1.0f;
        } else {
            S += expf(s - M);
        }
    }
    const float inv = S == 0.0f ? 0.0f : 1.0f / S;
    float * y = p.dst + ((int64_t) (iq3 * p.n_q + iq1) * p.n_head + h) * D;
#pragma unroll
    for (int b = 0; b < D / 128; ++b) {
        float v[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) v[k] = a[b][k] * inv;
        tbq_unrotate_warp(v, lane);
#pragma unroll
        for (int k = 0; k < 4; ++k) y[b * 128 + 32 * k + lane] = v[k];
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
                const int h = hk * G + gr / p.n_q, iq1 = gr % p.n_q;
                const float * q = (const float *) ((const char *) p.q + iq1 * p.nbq1 + h * p.nbq2 + iq3 * p.nbq3) + b * 128;
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
        const int gr = min(rg * R + r, rows_total - 1);
        const int h = hk * G + gr / p.n_q, iq1 = gr % p.n_q;
        mrow[r] = p.mask == nullptr ? nullptr
                                    : (const __half *) ((const char *) p.mask + iq1 * p.nbm1 + (h % p.mask_ne2) * p.nbm2 +
                                                        (iq3 % p.mask_ne3) * p.nbm3);
        slope[r] = 1.0f;
        if (p.max_bias > 0.0f) {
            slope[r] = h < p.n_head_log2 ? powf(p.m0, (float) (h + 1)) : powf(p.m1, (float) (2 * (h - p.n_head_log2) + 1));
        }
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
                vf[u][b] = tbq_load_fields<VT>(vb + TBQ_HEADER_BYTES, lane);
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
        const int h = hk * G + gr / p.n_q, iq1 = gr % p.n_q;
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
            tbq_fattn_finalize<D>(p, M, S, a, h, iq1, iq3, lane);
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

// One warp per output row (h, iq1, iq3): merges the splits' records and writes the row.
template <int D>
static __device__ __forceinline__ void k_tbq_fattn_combine(const tbq_fattn_params & p) {
    constexpr int NB = D / 128;
    const int lane = threadIdx.x;
    const int h = blockIdx.x, iq1 = blockIdx.y, iq3 = blockIdx.z;
    const float * rec = p.partial + ((int64_t) (iq3 * p.n_q + iq1) * p.n_head + h) * p.n_splits * (D + 2);
    float M = -INFINITY;
    for (int j = lane; j < p.n_splits; j += TBQ_WARP_SIZE) M = fmaxf(M, rec[j * (D + 2)]);
    M = tbq_warp_max(M);
    float S = 0.0f, a[NB][4];
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
        for (int k = 0; k < 4; ++k) a[b][k] = 0.0f;
    for (int j = 0; j < p.n_splits; ++j) {
        const float * rj = rec + j * (D + 2);
        const float mj = rj[0];
        if (mj == -INFINITY) {
            continue;
        }
        const float e = __expf(mj - M);
        S += e * rj[1];
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int k = 0; k < 4; ++k) a[b][k] = fmaf(e, rj[2 + b * 128 + 32 * k + lane], a[b][k]);
    }
    tbq_fattn_finalize<D>(p, M, S, a, h, iq1, iq3, lane);
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

extern "C" __global__ void __launch_bounds__(TBQ_WARP_SIZE) k_tbq_fattn_combine_d128(const tbq_fattn_params p) {
    k_tbq_fattn_combine<128>(p);
}
extern "C" __global__ void __launch_bounds__(TBQ_WARP_SIZE) k_tbq_fattn_combine_d256(const tbq_fattn_params p) {
    k_tbq_fattn_combine<256>(p);
}
