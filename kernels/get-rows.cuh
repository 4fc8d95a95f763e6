// get-rows.cuh — dequantize tbq rows to f32/f16 (ggml GET_ROWS, and whole-tensor conversion).
#pragma once

#include <stdint.h>

#define TBQ_GET_ROWS_WARPS 8

// Kernel parameters, passed by value. Mirrors ggml GET_ROWS: src [ne00, ne01, ne02, ne03] tbq,
// idx [ne10, ne11, ne12] i32, dst [ne00, ne10, ne11, ne12] f32/f16. Output row (i10, i11, i12)
// is src row (idx[i10, i11, i12], i11, i12). idx == NULL: output row (i10, i11, i12) is src row
// (i10, i11, i12) (strided dequantize, e.g. a K-cache view to f16 for prefill). A row index
// outside [0, ne01) writes nothing. Strides in bytes. Layout shared with src/cuda/get_rows.rs.
struct tbq_get_rows_params {
    const void * src;
    const void * idx;
    void * dst;
    int64_t ne00, ne01;
    int64_t nb01, nb02, nb03;
    int64_t ne10, ne11, ne12;
    int64_t nb10, nb11, nb12;
    int64_t nb1, nb2, nb3;
};
