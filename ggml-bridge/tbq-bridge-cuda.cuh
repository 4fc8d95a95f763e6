/*
 * tbq-bridge-cuda.cuh — ggml's CUDA backend hooks for the tbq KV-cache types.
 *
 * Compiled into ggml-cuda (patches/0006-ggml-cuda-tbq.patch adds tbq-bridge-cuda.cu to its sources and
 * links the CUDA-enabled libtbq.a). ggml-cuda.cu asks ggml_cuda_tbq_owns_op() first, in supports_op and
 * in the op dispatch; when it says yes the op is answered and computed here, never by upstream code that
 * does not know the types. convert.cu returns the converters below for the tbq types.
 *
 * Ops (any operand of a tbq type, ggml_is_tbq):
 *   SET_ROWS            f32/f16 rows -> tbq rows (i32/i64 index)      tbq_cuda_set_rows
 *   CPY / DUP / CONT    f32/f16 -> tbq (no index)                     tbq_cuda_set_rows
 *                       tbq -> f32/f16                                tbq_cuda_get_rows (whole tensor)
 *   GET_ROWS            tbq rows -> f32/f16                           tbq_cuda_get_rows
 *   FLASH_ATTN_EXT      decode (what tbq_cuda_fattn_supported takes)  tbq_cuda_flash_attn_ext, split-K
 *                                                                     scratch from ggml's pool
 *                       anything else (prefill, other type pairs)     K/V -> f16 into ggml's pool
 *                                                                     (tbq_cuda_get_rows), then upstream's
 *                                                                     own FLASH_ATTN_EXT on f16 views
 *                       exact keys (src[5], tbq K only)               the crate's kernel reads them
 *                                                                     (tbq_fattn_args.exact_k); dequantize:
 *                                                                     copied over the first rows of K's f16
 *                                                                     copy (ggml_cuda_cpy)
 * A tbq op that none of these can serve is reported unsupported (never a CPU fallback by surprise, never
 * a launch that the crate would refuse). Every tbq_status is checked: GGML_ABORT names the function, the
 * call and the status (a refusal after supports_op said yes is a bug).
 */
#pragma once

#include "ggml.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

struct ggml_backend_cuda_context;

// true when op is one of the ops above with a tbq operand: ggml-cuda must then use the two functions below
bool ggml_cuda_tbq_owns_op(const struct ggml_tensor * op);

// supports_op for an op ggml_cuda_tbq_owns_op() accepted (checks shapes, types and strides; needs no device)
bool ggml_cuda_tbq_supports_op(int device, const struct ggml_tensor * op);

// compute an op ggml_cuda_tbq_owns_op() accepted, on ctx.stream()
void ggml_cuda_tbq_compute_forward(ggml_backend_cuda_context & ctx, struct ggml_tensor * dst);

// converters of convert.cu (ggml_get_to_fp{16,32}[_nc]_cuda) for the tbq types; nullptr for other types
typedef void (*ggml_cuda_tbq_to_fp16_t)(const void * x, half * y, int64_t k, cudaStream_t stream);
typedef void (*ggml_cuda_tbq_to_fp32_t)(const void * x, float * y, int64_t k, cudaStream_t stream);
typedef void (*ggml_cuda_tbq_to_fp16_nc_t)(const void * x, half * y, int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne03,
                                           int64_t s01, int64_t s02, int64_t s03, cudaStream_t stream);
typedef void (*ggml_cuda_tbq_to_fp32_nc_t)(const void * x, float * y, int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne03,
                                           int64_t s01, int64_t s02, int64_t s03, cudaStream_t stream);

ggml_cuda_tbq_to_fp16_t    ggml_cuda_tbq_get_to_fp16(enum ggml_type type);
ggml_cuda_tbq_to_fp32_t    ggml_cuda_tbq_get_to_fp32(enum ggml_type type);
ggml_cuda_tbq_to_fp16_nc_t ggml_cuda_tbq_get_to_fp16_nc(enum ggml_type type);
ggml_cuda_tbq_to_fp32_nc_t ggml_cuda_tbq_get_to_fp32_nc(enum ggml_type type);
