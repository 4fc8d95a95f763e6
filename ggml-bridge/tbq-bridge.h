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
 *   GGML_TYPE_TBQ_ROT (45) 128 f32 already rotated by T (tbq_rotate_f32), 512 bytes. Internal: the
 *       vec_dot_type of both tbq types, so the CPU flash-attention path rotates each query row once
 *       and each key costs only code look-ups and multiply-adds (tbq_vec_dot_rotated).
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

/* Reference quantization of one row of k floats (k a multiple of 128): ggml_from_float_t. */
GGML_API void quantize_row_tbq4_0_ref(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
GGML_API void quantize_row_tbq3_0_ref(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

/* The CPU backend's from_float (same bytes as the reference: the crate is deterministic). */
GGML_API void quantize_row_tbq4_0(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
GGML_API void quantize_row_tbq3_0(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

/* Dequantize one row of k elements to f32: ggml_to_float_t. */
GGML_API void dequantize_row_tbq4_0(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
GGML_API void dequantize_row_tbq3_0(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);

/* ggml_quantize_chunk: nrow rows of n_per_row floats; returns the bytes written. imatrix is ignored
 * (the format has no importance weighting). */
GGML_API size_t quantize_tbq4_0(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * imatrix);
GGML_API size_t quantize_tbq3_0(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * imatrix);

/* from_float of GGML_TYPE_TBQ_ROT: y = T(x), blockwise over k floats (k a multiple of 128). */
GGML_API void ggml_tbq_rotate_row(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

/* ggml_vec_dot_t of the tbq types: *s = x · q where vy holds GGML_TYPE_TBQ_ROT (the rotated query).
 * nrc must be 1. */
GGML_API void ggml_vec_dot_tbq4_0_rot(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
GGML_API void ggml_vec_dot_tbq3_0_rot(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);

/* ggml_validate_row_data for the tbq types: false (with a message on stderr) when a block's d is
 * not finite. nbytes is a whole number of blocks (checked by the caller). */
GGML_API bool ggml_tbq_validate_row_data(enum ggml_type type, const void * data, size_t nbytes);

#ifdef __cplusplus
}
#endif
