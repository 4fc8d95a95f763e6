// set-rows.cuh — quantize f32/f16 rows into tbq blocks (ggml SET_ROWS, and plain CPY).
#pragma once

#include <stdint.h>

// Warps (one 128-element block each) per thread block.
#define TBQ_SET_ROWS_WARPS 8

// Kernel parameters, passed by value. Mirrors ggml SET_ROWS: src [ne00, ne01, ne02, ne03] f32
// or f16 (row-contiguous), idx [ne01, ne11, ne12] i64 or i32 (ne02 % ne11 == 0, ne03 % ne12 ==
// 0), dst [ne00, ne1, ne02, ne03] tbq. Source row (i, i02, i03) goes to dst row
// idx[i, i02 % ne11, i03 % ne12]; idx == NULL means dst row i (plain CPY). A row index outside
// [0, ne1) writes nothing. All strides in bytes. Layout shared with src/cuda/set_rows.rs.
struct tbq_set_rows_params {
    const void * src;
    const void * idx;
    void * dst;
    int64_t ne00, ne01, ne02, ne03;
    int64_t nb01, nb02, nb03;
    int64_t ne11, ne12;
    int64_t nb10, nb11, nb12;
    int64_t ne1;
    int64_t nb1, nb2, nb3;
};
