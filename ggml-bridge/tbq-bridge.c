/*
 * tbq-bridge.c — maps ggml's row-shaped quantization hooks onto the tbq C ABI (ffi/include/tbq.h).
 *
 * Compiled into ggml-base; links libtbq.a (the Rust crate). No logic of the format lives here: every
 * function computes the buffer sizes ggml implies (k elements = k/128 blocks), calls the crate, and
 * turns a failed tbq_status into GGML_ABORT naming the function and the status. ggml validates shapes
 * before these are reached, so a failure is a bug, never a user error.
 */
#include "tbq-bridge.h"

#include "tbq.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static_assert(TBQ_BLOCK_ELEMS == 128, "tbq-bridge: the ggml types are registered with blck_size 128");
static_assert(TBQ4_0_BLOCK_BYTES == 66 && TBQ3_0_BLOCK_BYTES == 50, "tbq-bridge: ggml type sizes are 66 / 50 bytes");
static_assert(sizeof(tbq4_0_block) == TBQ4_0_BLOCK_BYTES, "tbq-bridge: tbq4_0_block is not 66 bytes");
static_assert(sizeof(tbq3_0_block) == TBQ3_0_BLOCK_BYTES, "tbq-bridge: tbq3_0_block is not 50 bytes");

#define TBQ_CHECK(call)                                                                         \
    do {                                                                                        \
        const int32_t tbq_st_ = (call);                                                         \
        if (tbq_st_ != TBQ_OK) {                                                                \
            GGML_ABORT("%s: %s failed: %s (tbq_status %d)", __func__, #call,                    \
                       tbq_status_str(tbq_st_), (int) tbq_st_);                                 \
        }                                                                                       \
    } while (0)

static size_t tbq_bridge_row_bytes(int32_t t, int64_t k, const char * fn) {
    if (k <= 0 || k % TBQ_BLOCK_ELEMS != 0) {
        GGML_ABORT("%s: row of %lld elements is not a positive multiple of %d", fn, (long long) k, TBQ_BLOCK_ELEMS);
    }
    const size_t bs = t == TBQ_TYPE_TBQ4_0 ? TBQ4_0_BLOCK_BYTES : TBQ3_0_BLOCK_BYTES;
    return (size_t) (k / TBQ_BLOCK_ELEMS) * bs;
}

// ---------------------------------------------------------------------------------------------------
// ABI check
// ---------------------------------------------------------------------------------------------------

void ggml_tbq_check_abi(void) {
    static int checked = 0; // called under ggml's critical section (ggml_init's first call)
    if (checked) {
        return;
    }

    const uint32_t found = tbq_abi_version();
    if (found != TBQ_ABI_VERSION) {
        fprintf(stderr,
                "ggml: tbq ABI mismatch: the linked libtbq.a reports ABI version %u, but ggml was compiled "
                "against ffi/include/tbq.h version %u.\n"
                "ggml: rebuild both from the same checkout of the tbq repository: `cargo build --release` "
                "there, then rebuild llama.cpp (scripts/build-llama.sh).\n",
                (unsigned) found, (unsigned) TBQ_ABI_VERSION);
        GGML_ABORT("tbq ABI mismatch (libtbq.a: %u, tbq.h: %u)", (unsigned) found, (unsigned) TBQ_ABI_VERSION);
    }

    const size_t s4 = tbq_type_size(TBQ_TYPE_TBQ4_0);
    const size_t s3 = tbq_type_size(TBQ_TYPE_TBQ3_0);
    if (s4 != TBQ4_0_BLOCK_BYTES || s3 != TBQ3_0_BLOCK_BYTES) {
        fprintf(stderr,
                "ggml: tbq block size mismatch: libtbq.a says tbq4_0 = %zu, tbq3_0 = %zu bytes; ggml expects %d and %d.\n"
                "ggml: rebuild libtbq.a and llama.cpp from the same checkout.\n",
                s4, s3, TBQ4_0_BLOCK_BYTES, TBQ3_0_BLOCK_BYTES);
        GGML_ABORT("tbq block size mismatch");
    }

    checked = 1;
}

// ---------------------------------------------------------------------------------------------------
// quantize / dequantize
// ---------------------------------------------------------------------------------------------------

void quantize_row_tbq4_0_ref(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {
    TBQ_CHECK(tbq_quantize_f32(TBQ_TYPE_TBQ4_0, x, k, y, tbq_bridge_row_bytes(TBQ_TYPE_TBQ4_0, k, __func__)));
}

void quantize_row_tbq3_0_ref(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {
    TBQ_CHECK(tbq_quantize_f32(TBQ_TYPE_TBQ3_0, x, k, y, tbq_bridge_row_bytes(TBQ_TYPE_TBQ3_0, k, __func__)));
}

void quantize_row_tbq4_0(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {
    quantize_row_tbq4_0_ref(x, y, k);
}

void quantize_row_tbq3_0(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {
    quantize_row_tbq3_0_ref(x, y, k);
}

void dequantize_row_tbq4_0(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) {
    TBQ_CHECK(tbq_dequantize_f32(TBQ_TYPE_TBQ4_0, x, tbq_bridge_row_bytes(TBQ_TYPE_TBQ4_0, k, __func__), y, k));
}

void dequantize_row_tbq3_0(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) {
    TBQ_CHECK(tbq_dequantize_f32(TBQ_TYPE_TBQ3_0, x, tbq_bridge_row_bytes(TBQ_TYPE_TBQ3_0, k, __func__), y, k));
}

static size_t tbq_bridge_quantize_rows(int32_t t, const float * src, void * dst, int64_t nrow, int64_t n_per_row, const char * fn) {
    const size_t row_bytes = tbq_bridge_row_bytes(t, n_per_row, fn);
    for (int64_t r = 0; r < nrow; ++r) {
        const int32_t st = tbq_quantize_f32(t, src + r*n_per_row, n_per_row, (char *) dst + r*row_bytes, row_bytes);
        if (st != TBQ_OK) {
            GGML_ABORT("%s: tbq_quantize_f32 failed on row %lld: %s (tbq_status %d)", fn, (long long) r, tbq_status_str(st), (int) st);
        }
    }
    return (size_t) nrow * row_bytes;
}

size_t quantize_tbq4_0(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * imatrix) {
    (void) imatrix;
    return tbq_bridge_quantize_rows(TBQ_TYPE_TBQ4_0, src, dst, nrow, n_per_row, __func__);
}

size_t quantize_tbq3_0(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, const float * imatrix) {
    (void) imatrix;
    return tbq_bridge_quantize_rows(TBQ_TYPE_TBQ3_0, src, dst, nrow, n_per_row, __func__);
}

// ---------------------------------------------------------------------------------------------------
// rotation + dot product (CPU flash attention, mul_mat)
// ---------------------------------------------------------------------------------------------------

void ggml_tbq_rotate_row(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {
    TBQ_CHECK(tbq_rotate_f32(x, (float *) y, k));
}

static inline void tbq_bridge_vec_dot(int32_t t, int n, float * s, const void * vx, const void * vy, int nrc, const char * fn) {
    if (nrc != 1) {
        GGML_ABORT("%s: nrc = %d, only 1 is supported (cpu traits nrows = 1)", fn, nrc);
    }
    const size_t x_bytes = tbq_bridge_row_bytes(t, n, fn);
    const int32_t st = tbq_vec_dot_rotated(t, vx, x_bytes, (const float *) vy, (int64_t) n, s);
    if (st != TBQ_OK) {
        GGML_ABORT("%s: tbq_vec_dot_rotated failed: %s (tbq_status %d)", fn, tbq_status_str(st), (int) st);
    }
}

void ggml_vec_dot_tbq4_0_rot(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) {
    (void) bs; (void) bx; (void) by;
    tbq_bridge_vec_dot(TBQ_TYPE_TBQ4_0, n, s, vx, vy, nrc, __func__);
}

void ggml_vec_dot_tbq3_0_rot(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) {
    (void) bs; (void) bx; (void) by;
    tbq_bridge_vec_dot(TBQ_TYPE_TBQ3_0, n, s, vx, vy, nrc, __func__);
}

// ---------------------------------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------------------------------

bool ggml_tbq_validate_row_data(enum ggml_type type, const void * data, size_t nbytes) {
    int32_t t;
    switch (type) {
        case GGML_TYPE_TBQ4_0: t = TBQ_TYPE_TBQ4_0; break;
        case GGML_TYPE_TBQ3_0: t = TBQ_TYPE_TBQ3_0; break;
        default: GGML_ABORT("%s: %s is not a tbq type", __func__, ggml_type_name(type));
    }
    if (nbytes == 0) {
        return true;
    }
    const int32_t st = tbq_validate(t, data, nbytes);
    if (st == TBQ_OK) {
        return true;
    }
    if (st == TBQ_ERR_NONFINITE) {
        fprintf(stderr, "%s: %s data holds a block whose scale d is NaN or infinite\n", __func__, ggml_type_name(type));
        return false;
    }
    GGML_ABORT("%s: tbq_validate failed: %s (tbq_status %d)", __func__, tbq_status_str(st), (int) st);
}
