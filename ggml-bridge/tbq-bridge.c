/*
 * tbq-bridge.c — maps ggml's row-shaped quantization hooks onto the tbq C ABI (ffi/include/tbq.h).
 *
 * Compiled into ggml-base; links libtbq.a (the Rust crate). No logic of the format lives here: every
 * function computes the buffer sizes ggml implies (k elements = k/block blocks), calls the crate, and
 * turns a failed tbq_status into GGML_ABORT naming the function and the status. ggml validates shapes
 * before these are reached, so a failure is a bug, never a user error.
 */
#include "tbq-bridge.h"

#include "tbq.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static_assert(TBQ_BLOCK_ELEMS == 128 && TBQ_NARROW_BLOCK_ELEMS == 64,
              "tbq-bridge: the ggml types are registered with blck_size 128 (64 for the _64 types)");
// ggml's type_traits (patches/0001) register these sizes: the header must agree.
static_assert(TBQ4_0_BLOCK_BYTES == 66 && TBQ3_0_BLOCK_BYTES == 50, "tbq-bridge: ggml type sizes are 66 / 50 bytes");
static_assert(TBQ5_0_BLOCK_BYTES == 82 && TBQ6_0_BLOCK_BYTES == 98, "tbq-bridge: ggml type sizes are 82 / 98 bytes");
static_assert(TBQ3_1_BLOCK_BYTES == 52 && TBQ4_1_BLOCK_BYTES == 68 && TBQ5_1_BLOCK_BYTES == 84,
              "tbq-bridge: ggml type sizes are 52 / 68 / 84 bytes");
static_assert(sizeof(tbq4_0_block) == TBQ4_0_BLOCK_BYTES && sizeof(tbq3_0_block) == TBQ3_0_BLOCK_BYTES &&
              sizeof(tbq5_0_block) == TBQ5_0_BLOCK_BYTES && sizeof(tbq6_0_block) == TBQ6_0_BLOCK_BYTES &&
              sizeof(tbq3_1_block) == TBQ3_1_BLOCK_BYTES && sizeof(tbq4_1_block) == TBQ4_1_BLOCK_BYTES &&
              sizeof(tbq5_1_block) == TBQ5_1_BLOCK_BYTES, "tbq-bridge: a block struct disagrees with its size");
static_assert(TBQ4_0_64_BLOCK_BYTES == 34 && TBQ3_0_64_BLOCK_BYTES == 26 && TBQ5_0_64_BLOCK_BYTES == 42 &&
              TBQ6_0_64_BLOCK_BYTES == 50 && TBQ3_1_64_BLOCK_BYTES == 28 && TBQ4_1_64_BLOCK_BYTES == 36 &&
              TBQ5_1_64_BLOCK_BYTES == 44, "tbq-bridge: ggml type sizes of the _64 types are 34/26/42/50/28/36/44 bytes");
static_assert(TBQ3_1_64C_BLOCK_BYTES == 26 && TBQ4_1_64C_BLOCK_BYTES == 34 && TBQ5_1_64C_BLOCK_BYTES == 42,
              "tbq-bridge: ggml type sizes of the _64c types are 26/34/42 bytes");

#define TBQ_CHECK(call)                                                                         \
    do {                                                                                        \
        const int32_t tbq_st_ = (call);                                                         \
        if (tbq_st_ != TBQ_OK) {                                                                \
            GGML_ABORT("%s: %s failed: %s (tbq_status %d)", __func__, #call,                    \
                       tbq_status_str(tbq_st_), (int) tbq_st_);                                 \
        }                                                                                       \
    } while (0)

static enum ggml_type tbq_bridge_ggml_type(int32_t t) {
#define TBQ_BRIDGE_CASE(name, tbq_t, ggml_t) case tbq_t: return ggml_t;
    switch (t) {
        GGML_TBQ_TYPES(TBQ_BRIDGE_CASE)
        default: GGML_ABORT("tbq-bridge: %d is not a tbq_type", (int) t);
    }
#undef TBQ_BRIDGE_CASE
}

static int32_t tbq_bridge_tbq_type(enum ggml_type type, const char * fn) {
#define TBQ_BRIDGE_CASE(name, tbq_t, ggml_t) case ggml_t: return tbq_t;
    switch (type) {
        GGML_TBQ_TYPES(TBQ_BRIDGE_CASE)
        default: GGML_ABORT("%s: %s is not a tbq type", fn, ggml_type_name(type));
    }
#undef TBQ_BRIDGE_CASE
}

static size_t tbq_bridge_row_bytes(int32_t t, int64_t k, const char * fn) {
    const int64_t block = (int64_t) tbq_type_block_elems(t);
    if (k <= 0 || block == 0 || k % block != 0) {
        GGML_ABORT("%s: row of %lld elements is not a positive multiple of %lld", fn, (long long) k, (long long) block);
    }
    return (size_t) (k / block) * ggml_type_size(tbq_bridge_ggml_type(t));
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

#define TBQ_BRIDGE_CHECK_SIZE(name, tbq_t, ggml_t)                                                          \
    if (tbq_type_size(tbq_t) != ggml_type_size(ggml_t) ||                                                     \
        (int64_t) tbq_type_block_elems(tbq_t) != ggml_blck_size(ggml_t)) {                                    \
        fprintf(stderr,                                                                                       \
                "ggml: tbq block size mismatch: libtbq.a says " #name " = %zu bytes per %zu elements; "       \
                "ggml expects %zu per %lld.\n"                                                                 \
                "ggml: rebuild libtbq.a and llama.cpp from the same checkout.\n",                             \
                tbq_type_size(tbq_t), tbq_type_block_elems(tbq_t), ggml_type_size(ggml_t),                    \
                (long long) ggml_blck_size(ggml_t));                                                          \
        GGML_ABORT("tbq block size mismatch");                                                                \
    }
    GGML_TBQ_TYPES(TBQ_BRIDGE_CHECK_SIZE)
#undef TBQ_BRIDGE_CHECK_SIZE

    checked = 1;
}

// ---------------------------------------------------------------------------------------------------
// quantize / dequantize
// ---------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------
// rotation, dot product and value accumulation (CPU flash attention, mul_mat)
// ---------------------------------------------------------------------------------------------------

void ggml_tbq_rotate_row(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {
    TBQ_CHECK(tbq_rotate_f32(x, (float *) y, k, TBQ_BLOCK_ELEMS));
}

void ggml_tbq_rotate_row_64(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {
    TBQ_CHECK(tbq_rotate_f32(x, (float *) y, k, TBQ_NARROW_BLOCK_ELEMS));
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

void ggml_tbq_mad_rotated(enum ggml_type type, const void * GGML_RESTRICT v, float scale, float * GGML_RESTRICT acc, int64_t n) {
    const int32_t t = tbq_bridge_tbq_type(type, __func__);
    TBQ_CHECK(tbq_mad_rotated(t, v, tbq_bridge_row_bytes(t, n, __func__), scale, acc, n));
}

void ggml_tbq_unrotate_row(enum ggml_type type, float * x, int64_t n) {
    const int32_t t = tbq_bridge_tbq_type(type, __func__);
    TBQ_CHECK(tbq_unrotate_f32(x, x, n, (int32_t) tbq_type_block_elems(t)));
}

// ---------------------------------------------------------------------------------------------------
// the per-type entry points (tbq-bridge.h): one definition each, from GGML_TBQ_TYPES
// ---------------------------------------------------------------------------------------------------

#define TBQ_BRIDGE_DEFINE(name, tbq_t, ggml_t)                                                                         \
    void quantize_row_##name##_ref(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {                \
        TBQ_CHECK(tbq_quantize_f32(tbq_t, x, k, y, tbq_bridge_row_bytes(tbq_t, k, __func__)));                        \
    }                                                                                                                 \
    void quantize_row_##name(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {                      \
        quantize_row_##name##_ref(x, y, k);                                                                           \
    }                                                                                                                 \
    void dequantize_row_##name(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) {                    \
        TBQ_CHECK(tbq_dequantize_f32(tbq_t, x, tbq_bridge_row_bytes(tbq_t, k, __func__), y, k));                      \
    }                                                                                                                 \
    size_t quantize_##name(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrow, int64_t n_per_row, \
                           const float * imatrix) {                                                                   \
        (void) imatrix;                                                                                               \
        return tbq_bridge_quantize_rows(tbq_t, src, dst, nrow, n_per_row, __func__);                                  \
    }                                                                                                                 \
    void ggml_vec_dot_##name##_rot(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx,           \
                                   size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) {                    \
        (void) bs; (void) bx; (void) by;                                                                              \
        tbq_bridge_vec_dot(tbq_t, n, s, vx, vy, nrc, __func__);                                                       \
    }
GGML_TBQ_TYPES(TBQ_BRIDGE_DEFINE)
#undef TBQ_BRIDGE_DEFINE

// ---------------------------------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------------------------------

bool ggml_tbq_validate_row_data(enum ggml_type type, const void * data, size_t nbytes) {
    const int32_t t = tbq_bridge_tbq_type(type, __func__);
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
