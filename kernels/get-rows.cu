// get-rows.cu — k_tbq_get_rows: one warp dequantizes one block (128 or 64 elements), exactly as
// reference::dequantize_block (f32), or its round-to-nearest-even f16.
#include "common.cuh"
#include "get-rows.cuh"

template <int T, typename DstT>
static __device__ __forceinline__ void k_tbq_get_rows(const tbq_get_rows_params & p) {
    __shared__ float lut[tbq_traits<T>::n_levels];
    tbq_fill_lut<T>(lut);
    __syncthreads();

    const int lane = threadIdx.x % TBQ_WARP_SIZE;
    constexpr int S = tbq_traits<T>::slots;
    const int64_t blocks_per_row = p.ne00 / tbq_traits<T>::block;
    const int64_t total = blocks_per_row * p.ne10 * p.ne11 * p.ne12;
    const int64_t warps = (int64_t) gridDim.x * TBQ_GET_ROWS_WARPS;
    const bool narrow = total + warps <= (int64_t) UINT32_MAX;
    for (int64_t w = (int64_t) blockIdx.x * TBQ_GET_ROWS_WARPS + threadIdx.x / TBQ_WARP_SIZE; w < total; w += warps) {
        const tbq_coords co = tbq_unflatten(w, blocks_per_row, p.ne10, p.ne11, narrow);
        const int64_t ib = co.i0, i10 = co.i1, i11 = co.i2, i12 = co.i3;

        int64_t i01 = i10;
        if (p.idx != nullptr) {
            i01 = *(const int32_t *) ((const char *) p.idx + i10 * p.nb10 + i11 * p.nb11 + i12 * p.nb12);
        }
        if (i01 < 0 || i01 >= p.ne01) {
            continue; // warp-uniform
        }
        const uint8_t * blk = (const uint8_t *) p.src + i01 * p.nb01 + i11 * p.nb02 + i12 * p.nb03 +
                              ib * tbq_traits<T>::block_bytes;
        float v[4];
        tbq_dequantize_block_warp<T>(blk, lane, lut, v);
        DstT * y = (DstT *) ((char *) p.dst + i10 * p.nb1 + i11 * p.nb2 + i12 * p.nb3) + ib * tbq_traits<T>::block;
#pragma unroll
        for (int s = 0; s < S; ++s) {
            if constexpr (sizeof(DstT) == 2) {
                y[lane + 32 * s] = __float2half_rn(v[s]);
            } else {
                y[lane + 32 * s] = v[s];
            }
        }
    }
}

#define TBQ_GET_ROWS(T, TN, DST, DN)                                                                 \
    extern "C" __global__ void __launch_bounds__(TBQ_GET_ROWS_WARPS * TBQ_WARP_SIZE)                 \
        k_tbq_get_rows_##TN##_##DN(const tbq_get_rows_params p) {                                    \
        k_tbq_get_rows<T, DST>(p);                                                                    \
    }

#define TBQ_GET_ROWS_T(T, TN)                                                                        \
    TBQ_GET_ROWS(T, TN, float, f32)                                                                  \
    TBQ_GET_ROWS(T, TN, __half, f16)

TBQ_GET_ROWS_T(TBQ_TYPE_TBQ4_0, tbq4_0)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ3_0, tbq3_0)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ5_0, tbq5_0)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ6_0, tbq6_0)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ3_1, tbq3_1)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ4_1, tbq4_1)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ5_1, tbq5_1)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ4_0_64, tbq4_0_64)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ3_0_64, tbq3_0_64)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ5_0_64, tbq5_0_64)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ6_0_64, tbq6_0_64)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ3_1_64, tbq3_1_64)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ4_1_64, tbq4_1_64)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ5_1_64, tbq5_1_64)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ3_1_64C, tbq3_1_64c)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ4_1_64C, tbq4_1_64c)
TBQ_GET_ROWS_T(TBQ_TYPE_TBQ5_1_64C, tbq5_1_64c)
