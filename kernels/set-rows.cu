// set-rows.cu — k_tbq_set_rows: one warp quantizes one block (128 or 64 elements), bit-identical to
// reference::quantize_block.
#include "common.cuh"
#include "set-rows.cuh"

template <int T, typename SrcT, typename IdxT>
static __device__ __forceinline__ void k_tbq_set_rows(const tbq_set_rows_params & p) {
    __shared__ float lut[tbq_traits<T>::n_levels];
    __shared__ int2 buckets[TBQ_ENCODE_BUCKETS];
    tbq_fill_lut<T>(lut);
    tbq_fill_encode_buckets<T>(buckets);
    __syncthreads();

    // Thread blocks of 1 to TBQ_SET_ROWS_WARPS warps (src/cuda/ops.rs: one warp per block for a
    // decode step's few rows, so that they spread over the SMs instead of sharing one).
    const int lane = threadIdx.x % TBQ_WARP_SIZE;
    const int wpb = blockDim.x / TBQ_WARP_SIZE;
    constexpr int S = tbq_traits<T>::slots;
    const int64_t blocks_per_row = p.ne00 / tbq_traits<T>::block;
    const int64_t total = blocks_per_row * p.ne01 * p.ne02 * p.ne03;
    const int64_t warps = (int64_t) gridDim.x * wpb;
    const bool narrow = total + warps <= (int64_t) UINT32_MAX;
    for (int64_t w = (int64_t) blockIdx.x * wpb + threadIdx.x / TBQ_WARP_SIZE; w < total; w += warps) {
        const tbq_coords co = tbq_unflatten(w, blocks_per_row, p.ne01, p.ne02, narrow);
        const int64_t ib = co.i0, i = co.i1, i02 = co.i2, i03 = co.i3;

        int64_t i1 = i;
        if (p.idx != nullptr) {
            const char * ip = (const char *) p.idx + i * p.nb10 + (i02 % p.ne11) * p.nb11 + (i03 % p.ne12) * p.nb12;
            i1 = (int64_t) *(const IdxT *) ip;
        }
        if (i1 < 0 || i1 >= p.ne1) {
            continue; // warp-uniform
        }

        const SrcT * x = (const SrcT *) ((const char *) p.src + i * p.nb01 + i02 * p.nb02 + i03 * p.nb03) + ib * tbq_traits<T>::block;
        float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int s = 0; s < S; ++s) {
            if constexpr (sizeof(SrcT) == 2) {
                v[s] = __half2float(((const __half *) x)[lane + 32 * s]);
            } else {
                v[s] = ((const float *) x)[lane + 32 * s];
            }
        }
        uint8_t * blk = (uint8_t *) p.dst + i1 * p.nb1 + i02 * p.nb2 + i03 * p.nb3 + ib * tbq_traits<T>::block_bytes;
        tbq_quantize_block_warp<T>(v, blk, lane, lut, buckets);
    }
}

#define TBQ_SET_ROWS(T, TN, SRC, SN, IDX, IN)                                                        \
    extern "C" __global__ void __launch_bounds__(TBQ_SET_ROWS_WARPS * TBQ_WARP_SIZE)                 \
        k_tbq_set_rows_##TN##_##SN##_##IN(const tbq_set_rows_params p) {                             \
        k_tbq_set_rows<T, SRC, IDX>(p);                                                               \
    }

#define TBQ_SET_ROWS_T(T, TN)                                                                        \
    TBQ_SET_ROWS(T, TN, float, f32, int64_t, i64)                                                    \
    TBQ_SET_ROWS(T, TN, float, f32, int32_t, i32)                                                    \
    TBQ_SET_ROWS(T, TN, __half, f16, int64_t, i64)                                                   \
    TBQ_SET_ROWS(T, TN, __half, f16, int32_t, i32)

TBQ_SET_ROWS_T(TBQ_TYPE_TBQ4_0, tbq4_0)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ3_0, tbq3_0)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ5_0, tbq5_0)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ6_0, tbq6_0)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ3_1, tbq3_1)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ4_1, tbq4_1)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ5_1, tbq5_1)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ4_0_64, tbq4_0_64)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ3_0_64, tbq3_0_64)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ5_0_64, tbq5_0_64)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ6_0_64, tbq6_0_64)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ3_1_64, tbq3_1_64)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ4_1_64, tbq4_1_64)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ5_1_64, tbq5_1_64)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ3_1_64C, tbq3_1_64c)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ4_1_64C, tbq4_1_64c)
TBQ_SET_ROWS_T(TBQ_TYPE_TBQ5_1_64C, tbq5_1_64c)
