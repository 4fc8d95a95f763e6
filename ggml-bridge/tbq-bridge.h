/*
 * tbq-bridge.h — ggml-shaped entry points for the tbq KV-cache types.
 *
 * Compiled into ggml-base (see patches/0001-ggml-tbq-types.patch). Each function maps a ggml buffer
 * (a row of k elements, blocks of 128) onto the C ABI of the Rust crate (ffi/include/tbq.h) and checks
 * every tbq_status: a failure can only come from a bug in ggml or in this bridge (ggml has already
 * checked shapes and types), so it aborts with the function name and the status string.
 *
 * Types (ggml/include/ggml.h):
 *   GGML_TYPE_TBQ4_0  (43) 128 elements, 66 bytes — 4-bit codes, rotated, norm-corrected
 *   GGML_TYPE_TBQ3_0  (44) 128 elements, 50 bytes — 3-bit codes
 *   GGML_TYPE_TBQ5_0  (46) 82 bytes, GGML_TYPE_TBQ6_0 (47) 98 bytes — 5- and 6-bit codes (keys)
 *   GGML_TYPE_TBQ3_1  (48) 52 bytes, GGML_TYPE_TBQ4_1 (49) 68, GGML_TYPE_TBQ5_1 (50) 84 — 3/4/5-bit codes
 *       with a 4-bit gain per 32 rotated coordinates
 *   GGML_TYPE_TBQ4_0_64 … GGML_TYPE_TBQ5_1_64 (51..57): the same widths on 64-element blocks, for
 *       heads of 64 (34, 26, 42, 50, 28, 36, 44 bytes); llama.cpp stores a 64-wide head's cache in
 *       them when the user asks for tbq4_0 … (patches/0003)
 *   GGML_TYPE_TBQ_ROT (45) 128 f32 already rotated by T (tbq_rotate_f32), 512 bytes. Internal: the
 *       vec_dot_type of every 128-wide tbq type, so the CPU flash-attention path rotates each query
 *       row once and each key costs only code look-ups and multiply-adds (tbq_vec_dot_rotated).
 *   GGML_TYPE_TBQ_ROT_64 (58) the same for the 64-wide types: 64 f32 rotated by the 64-point T.
 *   GGML_TYPE_TBQ3_1_64C, GGML_TYPE_TBQ4_1_64C, GGML_TYPE_TBQ5_1_64C (59..61): the sub-scaled 64-wide
 *       widths with a compact 2-byte header (an 8-bit log scale and the two gains: 26, 34, 42 bytes);
 *       what a 64-wide head gets for tbq3_1/tbq4_1/tbq5_1 (patches/0013)
 *
 * Functions the CPU backend calls are GGML_API so that they are exported from ggml-base when
 * BUILD_SHARED_LIBS=ON.
 */
#pragma once

#include "ggml.h"

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Checks once, at ggml start-up (ggml_init's first call), that the linked libtbq.a speaks the ABI
 * this bridge was compiled against and agrees on the block sizes; aborts with a clear message
 * (found, expected, how to rebuild) otherwise. Idempotent and cheap after the first call. */
GGML_API void ggml_tbq_check_abi(void);

/* The tbq types: X(name, tbq_type, ggml_type) for each. Every per-type entry point below exists once
 * per type, generated from this list (their bodies are the same call with another tbq_type). */
#define GGML_TBQ_TYPES(X)                              \
    X(tbq4_0, TBQ_TYPE_TBQ4_0, GGML_TYPE_TBQ4_0)       \
    X(tbq3_0, TBQ_TYPE_TBQ3_0, GGML_TYPE_TBQ3_0)       \
    X(tbq5_0, TBQ_TYPE_TBQ5_0, GGML_TYPE_TBQ5_0)       \
    X(tbq6_0, TBQ_TYPE_TBQ6_0, GGML_TYPE_TBQ6_0)       \
    X(tbq3_1, TBQ_TYPE_TBQ3_1, GGML_TYPE_TBQ3_1)       \
    X(tbq4_1, TBQ_TYPE_TBQ4_1, GGML_TYPE_TBQ4_1)       \
    X(tbq5_1, TBQ_TYPE_TBQ5_1, GGML_TYPE_TBQ5_1)       \
    X(tbq4_0_64, TBQ_TYPE_TBQ4_0_64, GGML_TYPE_TBQ4_0_64) \
    X(tbq3_0_64, TBQ_TYPE_TBQ3_0_64, GGML_TYPE_TBQ3_0_64) \
    X(tbq5_0_64, TBQ_TYPE_TBQ5_0_64, GGML_TYPE_TBQ5_0_64) \
    X(tbq6_0_64, TBQ_TYPE_TBQ6_0_64, GGML_TYPE_TBQ6_0_64) \
    X(tbq3_1_64, TBQ_TYPE_TBQ3_1_64, GGML_TYPE_TBQ3_1_64) \
    X(tbq4_1_64, TBQ_TYPE_TBQ4_1_64, GGML_TYPE_TBQ4_1_64) \
    X(tbq5_1_64, TBQ_TYPE_TBQ5_1_64, GGML_TYPE_TBQ5_1_64) \
    X(tbq3_1_64c, TBQ_TYPE_TBQ3_1_64C, GGML_TYPE_TBQ3_1_64C) \
    X(tbq4_1_64c, TBQ_TYPE_TBQ4_1_64C, GGML_TYPE_TBQ4_1_64C) \
    X(tbq5_1_64c, TBQ_TYPE_TBQ5_1_64C, GGML_TYPE_TBQ5_1_64C)

/* Per type NAME:
 *   quantize_row_NAME_ref  reference quantization of one row of k floats (k a multiple of the block): ggml_from_float_t
 *   quantize_row_NAME      the CPU backend's from_float (same bytes: the crate is deterministic)
 *   dequantize_row_NAME    one row of k elements to f32: ggml_to_float_t
 *   quantize_NAME          ggml_quantize_chunk: nrow rows of n_per_row floats; returns the bytes written;
 *                          imatrix is ignored (the format has no importance weighting)
 *   ggml_vec_dot_NAME_rot  ggml_vec_dot_t: *s = x · q where vy holds GGML_TYPE_TBQ_ROT (GGML_TYPE_TBQ_ROT_64
 *                          for a _64 type: the rotated query); nrc must be 1 */
#define GGML_TBQ_DECLARE(name, tbq_t, ggml_t)                                                                          \
    GGML_API void   quantize_row_##name##_ref(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);      \
    GGML_API void   quantize_row_##name(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);            \
    GGML_API void   dequantize_row_##name(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);          \
    GGML_API size_t quantize_##name(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow,          \
                                    int64_t n_per_row, const float * imatrix);                                        \
    GGML_API void   ggml_vec_dot_##name##_rot(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, \
                                              size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
GGML_TBQ_TYPES(GGML_TBQ_DECLARE)
#undef GGML_TBQ_DECLARE

/* from_float of GGML_TYPE_TBQ_ROT: y = T(x), blockwise over k floats (k a multiple of 128); _64: of
 * GGML_TYPE_TBQ_ROT_64, the 64-point T over blocks of 64. */
GGML_API void ggml_tbq_rotate_row(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
GGML_API void ggml_tbq_rotate_row_64(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

/* CPU flash attention over tbq values, in the rotated domain (patches/0009-ggml-cpu-tbq-fattn.patch):
 * ggml_tbq_mad_rotated adds scale · T(v^) of one value row of n elements (type a tbq type) to acc, with
 * no inverse rotation per row; ggml_tbq_unrotate_row applies T^-1 of the value type's block width to acc
 * (in place) once, after the last value row. acc holds n floats. */
GGML_API void ggml_tbq_mad_rotated(enum ggml_type type, const void * GGML_RESTRICT v, float scale, float * GGML_RESTRICT acc, int64_t n);
GGML_API void ggml_tbq_unrotate_row(enum ggml_type type, float * x, int64_t n);

/* ggml_validate_row_data for the tbq types: false (with a message on stderr) when a block's d is
 * not finite. nbytes is a whole number of blocks (checked by the caller). */
GGML_API bool ggml_tbq_validate_row_data(enum ggml_type type, const void * data, size_t nbytes);

#ifdef __cplusplus
}
#endif
