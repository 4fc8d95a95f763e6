/*
 * tbq.h — the C ABI of the tbq crate (TurboQuant-style KV-cache blocks).
 *
 * One header, the whole contract between the Rust crate (libtbq.a) and its C/C++ users (ggml-bridge).
 *
 * Format (version 1, frozen): one block = 128 consecutive floats of one head's K or V vector.
 *   1. n = ||x||; non-finite inputs read as 0; a block with n == 0 (or whose sum of squares
 *      overflows f32) is stored as all-zero codes with d = 0.
 *   2. u = H·D·x / sqrt(128): D = the 128 fixed signs (TBQ_SIGNS_LO/HI), H = Sylvester Hadamard.
 *   3. c_i = nearest Lloyd-Max centroid (standard normal, 2^bits levels) to sqrt(128)·u_i/n;
 *      ties go to the lower level.
 *   4. d = n / ||C[c]|| stored as IEEE half (round to nearest even, saturated to 65504).
 *   Dequantize: x^ = D·H·(d·C[c]) / sqrt(128).
 *   Code packing ("lane-major bit planes"): coordinate i belongs to lane i % 32, slot i / 32.
 *   A code of b bits is split into planes (tbq4_0: one 4-bit plane; tbq3_0: a 2-bit plane for the
 *   low bits, then a 1-bit plane for the high bit). A plane of p bits holds, per lane, the 4 slots'
 *   p-bit fields packed low slot first (4p bits); lanes follow each other little-endian, so lane l's
 *   field starts at bit 4·p·l of the plane. A CUDA warp reading one block thus reads one contiguous,
 *   coalesced run of bytes per plane, one lane per 4 coordinates.
 *
 * Units: every `n` counts elements (floats), a positive multiple of TBQ_BLOCK_ELEMS; every
 * `*_bytes` counts bytes available in the buffer it follows. Buffers are read or written exactly
 * over the row (n / 128 blocks); nothing beyond is touched.
 * Ownership: the library never keeps, frees or allocates caller memory; every buffer stays the
 * caller's. Thread safety: every function is pure and re-entrant — call it from any thread at any
 * time, concurrently, without initialisation. Input and output buffers must not overlap, except
 * where a function says so.
 * Errors: every function that can fail returns a tbq_status; on error nothing is written.
 */
#ifndef TBQ_H
#define TBQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any change of a signature, a struct, an enum value or the format. */
#define TBQ_ABI_VERSION 1u

/* The diagonal D of the rotation: bit i of the 128-bit value HI:LO set means coordinate i is
 * negated (LO holds coordinates 0..63). A constant of the format. */
#define TBQ_SIGNS_LO 0xaf21e4f2aa31bcb4ull
#define TBQ_SIGNS_HI 0xde573c583fea2df6ull

/* Elements per block (one rotation group). */
#define TBQ_BLOCK_ELEMS 128

/* Bytes per block. */
#define TBQ4_0_BLOCK_BYTES 66
#define TBQ3_0_BLOCK_BYTES 50

typedef enum tbq_type {
    TBQ_TYPE_TBQ4_0 = 0, /* 4-bit codes, 16 levels: 4.125 bits per element */
    TBQ_TYPE_TBQ3_0 = 1, /* 3-bit codes,  8 levels: 3.125 bits per element */
} tbq_type;

typedef enum tbq_status {
    TBQ_OK           =  0,
    TBQ_ERR_NULL     = -1, /* a required pointer was NULL */
    TBQ_ERR_LENGTH   = -2, /* n is not a positive multiple of TBQ_BLOCK_ELEMS */
    TBQ_ERR_BUFFER   = -3, /* a *_bytes argument is smaller than the row needs */
    TBQ_ERR_TYPE     = -4, /* not a tbq_type value */
    TBQ_ERR_NONFINITE = -5, /* tbq_validate: a block's d is NaN or infinite */
} tbq_status;

/* IEEE binary16, as ggml_half. */
typedef uint16_t tbq_half;

typedef struct tbq4_0_block {
    tbq_half d;       /* corrected norm */
    uint8_t  qs[64];  /* 128 4-bit codes, lane-major (see above) */
} tbq4_0_block;

typedef struct tbq3_0_block {
    tbq_half d;       /* corrected norm */
    uint8_t  qs[48];  /* 32 bytes: low 2 bits of each code; 16 bytes: high bit of each code */
} tbq3_0_block;

/* The library's TBQ_ABI_VERSION. A user compiled against another version must refuse to run. */
uint32_t tbq_abi_version(void);

/* A static, NUL-terminated English description of a tbq_status ("unknown status" otherwise). */
const char * tbq_status_str(int32_t status);

/* Bytes of one block of `type`, or 0 when `type` is not a tbq_type. */
size_t tbq_type_size(int32_t type);

/* Name of `type` as ggml spells it ("tbq4_0"), or NULL when `type` is not a tbq_type. */
const char * tbq_type_name(int32_t type);

/* Bytes of a row of n elements, written to *out_bytes. Errors: NULL, LENGTH, TYPE. */
int32_t tbq_row_size(int32_t type, int64_t n, size_t * out_bytes);

/* Quantize one row of n floats (f32, or IEEE half bits for _f16) into n/128 blocks at dst.
 * Deterministic: the same input gives the same bytes on every machine and thread.
 * Errors: NULL, LENGTH, BUFFER (dst_bytes < row size), TYPE. */
int32_t tbq_quantize_f32(int32_t type, const float * src, int64_t n, void * dst, size_t dst_bytes);
int32_t tbq_quantize_f16(int32_t type, const tbq_half * src, int64_t n, void * dst, size_t dst_bytes);

/* Dequantize n elements from src (src_bytes available) to f32 or IEEE half (round to nearest
 * even). Errors: NULL, LENGTH, BUFFER (src_bytes < row size), TYPE. */
int32_t tbq_dequantize_f32(int32_t type, const void * src, size_t src_bytes, float * dst, int64_t n);
int32_t tbq_dequantize_f16(int32_t type, const void * src, size_t src_bytes, tbq_half * dst, int64_t n);

/* The rotation T, blockwise: dst[b] = H·D·src[b] / sqrt(128) for each 128-float block b.
 * tbq_rotate_f32 prepares a query for tbq_vec_dot_rotated; tbq_unrotate_f32 is its inverse
 * (T is orthogonal: T^-1 = D·H / sqrt(128)). src may equal dst. Errors: NULL, LENGTH. */
int32_t tbq_rotate_f32(const float * src, float * dst, int64_t n);
int32_t tbq_unrotate_f32(const float * src, float * dst, int64_t n);

/* *out = Σ_i q[i]·x^[i] over a row of n elements, where x (x_bytes available) holds tbq blocks
 * and q_rot = T(q) from tbq_rotate_f32. This is the attention score without dequantizing:
 * d · Σ T(q)_i · C[c_i] per block. Errors: NULL, LENGTH, BUFFER, TYPE. */
int32_t tbq_vec_dot_rotated(int32_t type, const void * x, size_t x_bytes, const float * q_rot, int64_t n, float * out);

/* As tbq_vec_dot_rotated for a plain query q; rotates it once per call (no allocation). */
int32_t tbq_vec_dot_f32(int32_t type, const void * x, size_t x_bytes, const float * q, int64_t n, float * out);

/* TBQ_OK when every block's d is finite; TBQ_ERR_NONFINITE otherwise (a corrupted buffer).
 * Errors: NULL, BUFFER (src_bytes not a whole number of blocks), TYPE. */
int32_t tbq_validate(int32_t type, const void * src, size_t src_bytes);

#ifdef __cplusplus
}
#endif

#endif /* TBQ_H */
