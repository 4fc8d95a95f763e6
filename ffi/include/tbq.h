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
 *   Sub-scaled types (tbq3_1, tbq4_1, tbq5_1): after d, a u16 of four 4-bit gain indices (group s =
 *   rotated coordinates 32s..32s+31, index in bits 4s..4s+3) into TBQ_GAINS, g_k = 2^((2k-15)/24).
 *   Step 3 per group: for each k, c_i = nearest level to y_i·g_(15-k) (= y_i / g_k: the ladder is
 *   symmetric), error sum (y_i - g_k·C[c_i])²;
 *   the first k with the least error wins. Step 4 uses r_i = g_k·C[c_i]; x^ = T^-1((d·g_s)·C[c]).
 *   Code packing ("lane-major bit planes"): coordinate i belongs to lane i % 32, slot i / 32.
 *   A code of b bits is split into planes (4 bits: one 4-bit plane; 3: a 2-bit plane for the
 *   low bits, then a 1-bit plane for the high bit; 5: 4 + 1; 6: 4 + 2). A plane of p bits holds, per lane, the 4 slots'
 *   p-bit fields packed low slot first (4p bits); lanes follow each other little-endian, so lane l's
 *   field starts at bit 4·p·l of the plane. A CUDA warp reading one block thus reads one contiguous,
 *   coalesced run of bytes per plane, one lane per 4 coordinates.
 *   64-wide types (tbq4_0_64 … tbq5_1_64, for heads of 64): the same rules on blocks of 64 floats:
 *   T = H64·D64 / 8 with D64 = the first 64 signs (TBQ_SIGNS_LO), sqrt(64) = 8 for sqrt(128), two
 *   slots per lane (a plane of p bits is 8·p bytes; lane l's 2p-bit field at bit 2·p·l), two gain
 *   groups in bits 0..7 of the gains word (bits 8..15 zero).
 *
 * Units: every `n` counts elements (floats), a positive multiple of the type's block (TBQ_BLOCK_ELEMS,
 * or TBQ_NARROW_BLOCK_ELEMS for a _64 type); every
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
#define TBQ_ABI_VERSION 6u /* 3: tbq_mad_rotated; 4: the _64 types, tbq_rotate_f32's block width;
                              5: tbq_fattn_args.exact_k; 6: the compact-header _64c types */

/* The diagonal D of the rotation: bit i of the 128-bit value HI:LO set means coordinate i is
 * negated (LO holds coordinates 0..63). A constant of the format. */
#define TBQ_SIGNS_LO 0xaf21e4f2aa31bcb4ull
#define TBQ_SIGNS_HI 0xde573c583fea2df6ull

/* Elements per block (one rotation group); the _64 types' blocks hold TBQ_NARROW_BLOCK_ELEMS. */
#define TBQ_BLOCK_ELEMS 128
#define TBQ_NARROW_BLOCK_ELEMS 64

/* The 16 gains of the sub-scaled types, g_k = 2^((2k-15)/24) as f32 (codebook::GAINS). */
#define TBQ_GAINS { 0.6484198f, 0.68697685f, 0.7278266f, 0.7711054f, 0.8169577f, 0.8655366f, 0.91700405f, 0.9715319f, \
                    1.0293022f, 1.0905077f, 1.1553527f, 1.2240535f, 1.2968396f, 1.3739537f, 1.4556532f, 1.5422108f }

/* Bytes per block. */
#define TBQ4_0_BLOCK_BYTES 66
#define TBQ3_0_BLOCK_BYTES 50
#define TBQ5_0_BLOCK_BYTES 82
#define TBQ6_0_BLOCK_BYTES 98
#define TBQ3_1_BLOCK_BYTES 52
#define TBQ4_1_BLOCK_BYTES 68
#define TBQ5_1_BLOCK_BYTES 84
#define TBQ4_0_64_BLOCK_BYTES 34
#define TBQ3_0_64_BLOCK_BYTES 26
#define TBQ5_0_64_BLOCK_BYTES 42
#define TBQ6_0_64_BLOCK_BYTES 50
#define TBQ3_1_64_BLOCK_BYTES 28
#define TBQ4_1_64_BLOCK_BYTES 36
#define TBQ5_1_64_BLOCK_BYTES 44
#define TBQ3_1_64C_BLOCK_BYTES 26
#define TBQ4_1_64C_BLOCK_BYTES 34
#define TBQ5_1_64C_BLOCK_BYTES 42

/* The compact header's scale (format::scale8_value): byte k = 0 is an all-zero block, else
 * d = 2^((k - 128)/8) = TBQ_SCALE8_MANTISSAS[(k - 128) & 7] * 2^((k - 128) >> 3), exact in f32. */
#define TBQ_SCALE8_MANTISSAS { 1.0f, 1.0905077f, 1.1892071f, 1.2968396f, 1.4142135f, 1.5422108f, 1.6817929f, 1.8340081f }

typedef enum tbq_type {
    TBQ_TYPE_TBQ4_0 = 0, /* 4-bit codes, 16 levels: 4.125 bits per element */
    TBQ_TYPE_TBQ3_0 = 1, /* 3-bit codes,  8 levels: 3.125 bits per element */
    TBQ_TYPE_TBQ5_0 = 2, /* 5-bit codes, 32 levels: 5.125 bits per element */
    TBQ_TYPE_TBQ6_0 = 3, /* 6-bit codes, 64 levels: 6.125 bits per element */
    TBQ_TYPE_TBQ3_1 = 4, /* 3-bit codes and per-32 gains: 3.25 bits per element */
    TBQ_TYPE_TBQ4_1 = 5, /* 4-bit codes and per-32 gains: 4.25 bits per element */
    TBQ_TYPE_TBQ5_1 = 6, /* 5-bit codes and per-32 gains: 5.25 bits per element */
    /* The same widths on 64-element blocks, for heads of 64 (llama.cpp picks them for -ctk tbq4_0 …): */
    TBQ_TYPE_TBQ4_0_64 = 7,  /* 4.25 bits per element */
    TBQ_TYPE_TBQ3_0_64 = 8,  /* 3.25 */
    TBQ_TYPE_TBQ5_0_64 = 9,  /* 5.25 */
    TBQ_TYPE_TBQ6_0_64 = 10, /* 6.25 */
    TBQ_TYPE_TBQ3_1_64 = 11, /* 3.5 */
    TBQ_TYPE_TBQ4_1_64 = 12, /* 4.5 */
    TBQ_TYPE_TBQ5_1_64 = 13, /* 5.5 */
    /* The sub-scaled 64-wide widths with a compact header (an 8-bit log scale and the two gains in
     * 2 bytes): what -ctk tbq3_1/tbq4_1/tbq5_1 give a head of 64. */
    TBQ_TYPE_TBQ3_1_64C = 14, /* 3.25 */
    TBQ_TYPE_TBQ4_1_64C = 15, /* 4.25 */
    TBQ_TYPE_TBQ5_1_64C = 16, /* 5.25 */
} tbq_type;

typedef enum tbq_status {
    TBQ_OK           =  0,
    TBQ_ERR_NULL     = -1, /* a required pointer was NULL */
    TBQ_ERR_LENGTH   = -2, /* n is not a positive multiple of the type's block, or a block width is not 128 or 64 */
    TBQ_ERR_BUFFER   = -3, /* a *_bytes argument is smaller than the row needs */
    TBQ_ERR_TYPE     = -4, /* not a tbq_type value */
    TBQ_ERR_NONFINITE = -5, /* tbq_validate: a block's d is NaN or infinite */
    /* CUDA functions (end of this header) only: */
    TBQ_ERR_CUDA        = -6, /* a CUDA driver call failed (tbq_cuda_last_error says which) */
    TBQ_ERR_UNSUPPORTED = -7, /* not built with CUDA, or types / shapes / strides not handled */
    TBQ_ERR_NO_DEVICE   = -8, /* no CUDA driver, no device, or no current context */
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

typedef struct tbq5_0_block {
    tbq_half d;       /* corrected norm */
    uint8_t  qs[80];  /* 64 bytes: low 4 bits of each code; 16 bytes: high bit */
} tbq5_0_block;

typedef struct tbq6_0_block {
    tbq_half d;       /* corrected norm */
    uint8_t  qs[96];  /* 64 bytes: low 4 bits of each code; 32 bytes: high 2 bits */
} tbq6_0_block;

typedef struct tbq3_1_block {
    tbq_half d;       /* corrected norm */
    uint16_t g;       /* gain index of group s in bits 4s..4s+3 */
    uint8_t  qs[48];  /* as tbq3_0 */
} tbq3_1_block;

typedef struct tbq4_1_block {
    tbq_half d;       /* corrected norm */
    uint16_t g;       /* gain index of group s in bits 4s..4s+3 */
    uint8_t  qs[64];  /* as tbq4_0 */
} tbq4_1_block;

typedef struct tbq5_1_block {
    tbq_half d;       /* corrected norm */
    uint16_t g;       /* gain index of group s in bits 4s..4s+3 */
    uint8_t  qs[80];  /* as tbq5_0 */
} tbq5_1_block;

/* A 64-wide block: as the 128-wide block of the same width with half the codes (see the top). */
typedef struct tbq4_0_64_block { tbq_half d; uint8_t qs[32]; } tbq4_0_64_block;
typedef struct tbq3_0_64_block { tbq_half d; uint8_t qs[24]; } tbq3_0_64_block;
typedef struct tbq5_0_64_block { tbq_half d; uint8_t qs[40]; } tbq5_0_64_block;
typedef struct tbq6_0_64_block { tbq_half d; uint8_t qs[48]; } tbq6_0_64_block;
typedef struct tbq3_1_64_block { tbq_half d; uint16_t g; uint8_t qs[24]; } tbq3_1_64_block;
typedef struct tbq4_1_64_block { tbq_half d; uint16_t g; uint8_t qs[32]; } tbq4_1_64_block;
typedef struct tbq5_1_64_block { tbq_half d; uint16_t g; uint8_t qs[40]; } tbq5_1_64_block;
/* The compact-header 64-wide blocks: the scale's code (TBQ_SCALE8_MANTISSAS), then the gain index
 * of group 0 in bits 0..3 and of group 1 in bits 4..7, then the codes as in the _64 block. */
typedef struct tbq3_1_64c_block { uint8_t scale; uint8_t g; uint8_t qs[24]; } tbq3_1_64c_block;
typedef struct tbq4_1_64c_block { uint8_t scale; uint8_t g; uint8_t qs[32]; } tbq4_1_64c_block;
typedef struct tbq5_1_64c_block { uint8_t scale; uint8_t g; uint8_t qs[40]; } tbq5_1_64c_block;

/* The library's TBQ_ABI_VERSION. A user compiled against another version must refuse to run. */
uint32_t tbq_abi_version(void);

/* A static, NUL-terminated English description of a tbq_status ("unknown status" otherwise). */
const char * tbq_status_str(int32_t status);

/* Bytes of one block of `type`, or 0 when `type` is not a tbq_type. */
size_t tbq_type_size(int32_t type);

/* Elements per block of `type` (128, or 64 for a _64 type), or 0 when `type` is not a tbq_type. */
size_t tbq_type_block_elems(int32_t type);

/* Name of `type` as ggml spells it ("tbq4_0"), or NULL when `type` is not a tbq_type. */
const char * tbq_type_name(int32_t type);

/* Bytes of a row of n elements, written to *out_bytes. Errors: NULL, LENGTH, TYPE. */
int32_t tbq_row_size(int32_t type, int64_t n, size_t * out_bytes);

/* Quantize one row of n floats (f32, or IEEE half bits for _f16) into n/block blocks at dst.
 * Deterministic: the same input gives the same bytes on every machine and thread.
 * Errors: NULL, LENGTH, BUFFER (dst_bytes < row size), TYPE. */
int32_t tbq_quantize_f32(int32_t type, const float * src, int64_t n, void * dst, size_t dst_bytes);
int32_t tbq_quantize_f16(int32_t type, const tbq_half * src, int64_t n, void * dst, size_t dst_bytes);

/* Dequantize n elements from src (src_bytes available) to f32 or IEEE half (round to nearest
 * even). Errors: NULL, LENGTH, BUFFER (src_bytes < row size), TYPE. */
int32_t tbq_dequantize_f32(int32_t type, const void * src, size_t src_bytes, float * dst, int64_t n);
int32_t tbq_dequantize_f16(int32_t type, const void * src, size_t src_bytes, tbq_half * dst, int64_t n);

/* The rotation T, blockwise: dst[b] = H·D·src[b] / sqrt(block) for each block b of `block` floats
 * (128, or 64 for the _64 types: the type's block). tbq_rotate_f32 prepares a query for
 * tbq_vec_dot_rotated; tbq_unrotate_f32 is its inverse (T is orthogonal: T^-1 = D·H / sqrt(block)).
 * src may equal dst. Errors: NULL, LENGTH (also: block not 128 or 64). */
int32_t tbq_rotate_f32(const float * src, float * dst, int64_t n, int32_t block);
int32_t tbq_unrotate_f32(const float * src, float * dst, int64_t n, int32_t block);

/* *out = Σ_i q[i]·x^[i] over a row of n elements, where x (x_bytes available) holds tbq blocks
 * and q_rot = T(q) from tbq_rotate_f32. This is the attention score without dequantizing:
 * d · Σ T(q)_i · C[c_i] per block. Errors: NULL, LENGTH, BUFFER, TYPE. */
int32_t tbq_vec_dot_rotated(int32_t type, const void * x, size_t x_bytes, const float * q_rot, int64_t n, float * out);

/* acc[i] += scale · T(x^)[i] over a row of n elements, where x (x_bytes available) holds tbq blocks:
 * per block acc += scale · (d·g_s)·C[c_i], the value row in the rotated domain. This is the value side
 * of flash attention without dequantizing: accumulate Σ_t p_t·T(v^_t) over the values with this call,
 * then apply tbq_unrotate_f32 once to acc (T^-1 is linear) to get Σ_t p_t·v^_t. acc is read and
 * written (n floats); it must not overlap x. Agrees with the scalar reference within f32 rounding of
 * a fused multiply-add. Errors: NULL, LENGTH, BUFFER, TYPE (acc is then untouched). */
int32_t tbq_mad_rotated(int32_t type, const void * x, size_t x_bytes, float scale, float * acc, int64_t n);

/* As tbq_vec_dot_rotated for a plain query q; rotates it once per call (no allocation). */
int32_t tbq_vec_dot_f32(int32_t type, const void * x, size_t x_bytes, const float * q, int64_t n, float * out);

/* TBQ_OK when every block's d is finite; TBQ_ERR_NONFINITE otherwise (a corrupted buffer).
 * Errors: NULL, BUFFER (src_bytes not a whole number of blocks), TYPE. */
int32_t tbq_validate(int32_t type, const void * src, size_t src_bytes);

/* ==== CUDA (libtbq.a built with the crate's `cuda` feature) ====================================
 *
 * Kernels for ggml's CUDA backend: quantize on write (SET_ROWS / CPY), dequantize (GET_ROWS and
 * whole-tensor conversion for prefill) and flash-attention decode on tbq K/V caches.
 *
 * Built without the feature, every function below exists and returns TBQ_ERR_UNSUPPORTED
 * (tbq_cuda_available returns 0), so one header serves both builds.
 *
 * Device and context: every call works in the calling thread's CURRENT CUDA context (the one
 * cudaSetDevice made current); the library never creates a context. The first call in a
 * context loads the embedded kernels into it (cuModuleLoadData, once; cached per context).
 * Tensors: device pointers of that context, described like ggml tensors (tbq_cuda_tensor:
 * ne = elements per dimension, nb = byte strides, nb[0] = one element or one block).
 * Streams: `stream` is a CUstream / cudaStream_t of that context (NULL: the legacy default
 * stream). Work is queued on it and the call returns without synchronising: results are ready
 * when the stream reaches them. Launches allocate nothing, so they may be captured into CUDA
 * graphs — except tbq_cuda_flash_attn_ext with scratch == NULL, whose pool may need to grow (it
 * refuses with TBQ_ERR_UNSUPPORTED during a capture rather than allocate).
 * Ownership: the library keeps no caller memory; it owns only its scratch pool.
 * Thread safety: every function may be called from any thread; calls on one stream must be
 * ordered by the caller, as for any CUDA work.
 * Errors: a tbq_status; on error nothing is queued. tbq_cuda_last_error() describes the calling
 * thread's last failure (a driver error names the driver call). Asynchronous kernel faults show
 * up, as always in CUDA, at the next synchronising call of the caller.
 */

/* Element types besides the tbq types (tbq_cuda_tensor.type holds a tbq_type or one of these). */
typedef enum tbq_dtype {
    TBQ_DTYPE_F32  = 100,
    TBQ_DTYPE_F16  = 101,
    TBQ_DTYPE_Q8_0 = 102, /* ggml q8_0: blocks of 32 int8 + half scale (34 bytes); keys only */
    TBQ_DTYPE_I32  = 103,
    TBQ_DTYPE_I64  = 104,
} tbq_dtype;

typedef struct tbq_cuda_tensor {
    void *  data;  /* device pointer to element (0,0,0,0); NULL: absent (optional operands) */
    int32_t type;  /* tbq_type or tbq_dtype */
    int64_t ne[4]; /* elements per dimension, ggml order (ne[0] innermost) */
    size_t  nb[4]; /* byte strides, ggml order */
} tbq_cuda_tensor;

/* ggml FLASH_ATTN_EXT, same shapes and semantics as ggml_flash_attn_ext (+ add_sinks):
 *   q     f32 [D, n_q, n_head, n_seq]
 *   k         [D, n_kv, n_head_kv, n_seq_kv]  any tbq type, f16 or q8_0
 *   v         [D, n_kv, n_head_kv, n_seq_kv]  tbq4_0, tbq3_0, tbq3_1 or tbq4_1 with tbq keys;
 *                                              tbq4_0 or tbq3_0 with f16 / q8_0 keys
 *   mask  f16 [>= n_kv, >= n_q, ne2, ne3] broadcast over heads (h % ne2) and sequences, or absent
 *   sinks f32 [n_head] or absent
 *   dst   f32 [D, n_head, n_q, n_seq] contiguous (ggml's permuted output)
 *   exact_k f16 [D, n_exact, n_head_kv, n_seq_kv] (any strides, rows contiguous) or absent: exact
 *         copies of the first keys (ggml_flash_attn_ext_set_exact_keys), tbq keys only. Key row
 *         t < min(n_exact, n_kv) of head h, sequence s is read as exact_k[:, t, h, s] instead of
 *         K's quantized row t (same plain domain; scale, softcap, mask and ALiBi apply as usual).
 * D = 64 (the _64 types), 128, 256 or 512 with tbq keys, 128 or 256 with f16 / q8_0 keys; n_head a
 * multiple of n_head_kv (GQA); n_q <= 8 (decode; prefill goes to dequantize + upstream attention). */
typedef struct tbq_fattn_args {
    tbq_cuda_tensor q, k, v, mask, sinks, dst;
    tbq_cuda_tensor exact_k;
    float   scale;
    float   max_bias;      /* ALiBi; 0: off */
    float   logit_softcap; /* 0: off */
    int32_t reserved;      /* 0 */
} tbq_fattn_args;

/* 1 when the library was built with CUDA and a driver with at least one device is present. */
int32_t tbq_cuda_available(void);

/* The calling thread's last error message ("" if none); valid until that thread's next call. */
const char * tbq_cuda_last_error(void);

/* SET_ROWS: quantize the f32 or f16 rows of src [ne00, ne01, ne02, ne03] into the tbq tensor dst
 * [ne00, ne1, ne02, ne03], row i of (i02, i03) going to row idx[i, i02 % ne11, i03 % ne12];
 * idx (i64 or i32 [ne01, ne11, ne12]) NULL or absent: row i to row i (CPY). Bytes identical to
 * tbq_quantize_f32/_f16. An index outside [0, ne1) writes nothing.
 * Errors: NULL, UNSUPPORTED (types, shapes, ne00 not a multiple of 128), NO_DEVICE, CUDA. */
int32_t tbq_cuda_set_rows(const tbq_cuda_tensor * src, const tbq_cuda_tensor * idx,
                          const tbq_cuda_tensor * dst, void * stream);

/* GET_ROWS: dequantize the rows idx (i32 [ne10, ne11, ne12]) of the tbq tensor src into dst
 * (f32 or f16 [ne00, ne10, ne11, ne12]); idx NULL or absent: every row of src (strides honoured)
 * into dst of src's shape — the whole-tensor conversion. f32 equals tbq_dequantize_f32 exactly;
 * f16 is its round-to-nearest-even. Errors: as tbq_cuda_set_rows. */
int32_t tbq_cuda_get_rows(const tbq_cuda_tensor * src, const tbq_cuda_tensor * idx,
                          const tbq_cuda_tensor * dst, void * stream);

/* TBQ_OK when tbq_cuda_flash_attn_ext handles args; otherwise the status it would return, and
 * *reason (if reason is not NULL) a sentence saying why (thread-local; valid until this thread's
 * next call). Checks types, shapes and strides only: needs no device. */
int32_t tbq_cuda_fattn_supported(const tbq_fattn_args * args, const char ** reason);

/* Scratch bytes tbq_cuda_flash_attn_ext needs for args on the current device (0: none): the
 * split-K partials. The same args on the same device always give the same number.
 * Errors: NULL, UNSUPPORTED, NO_DEVICE, CUDA. */
int32_t tbq_cuda_fattn_scratch_bytes(const tbq_fattn_args * args, size_t * out_bytes);

/* FLASH_ATTN_EXT decode on `stream`. scratch: device memory of scratch_bytes >=
 * tbq_cuda_fattn_scratch_bytes(args) (ggml passes its pool's), or NULL to use the library's
 * stream-ordered pool (one growing buffer per stream; never grown during a graph capture).
 * Errors: NULL, BUFFER (scratch too small), UNSUPPORTED, NO_DEVICE, CUDA. */
int32_t tbq_cuda_flash_attn_ext(const tbq_fattn_args * args, void * scratch, size_t scratch_bytes,
                                void * stream);

/* Sparse V: later launches skip a token's values when every row's softmax weight relative to
 * the running maximum is below threshold (0: off, the default). Process-wide. */
int32_t tbq_cuda_set_sparse_v(float threshold);

/* *out = 1 when device `device` (an ordinal) shares physical memory with the CPU (integrated, or
 * pageable memory through host page tables: GB10, GH200, Jetson), else 0. A forced mode
 * (tbq_cuda_force_unified, or TBQ_UNIFIED=0|1 in the environment) answers without a device.
 * Errors: NULL, NO_DEVICE, CUDA, UNSUPPORTED. */
int32_t tbq_cuda_unified_memory(int32_t device, int32_t * out);

/* -1: detect (default); 0: report discrete; 1: report unified. Errors: LENGTH (other values). */
int32_t tbq_cuda_force_unified(int32_t mode);

/* Frees the pool's buffer for `stream` in the current context (stream-ordered). Call before
 * destroying a stream the library used with scratch == NULL. */
int32_t tbq_cuda_pool_release(void * stream);

#ifdef __cplusplus
}
#endif

#endif /* TBQ_H */
