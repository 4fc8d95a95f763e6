/*
 * A C user of tbq.h + libtbq.a: the golden vectors through the C ABI, and every error path.
 *
 *   cc -std=c11 -Wall -Wextra -Werror -Iffi/include ffi/tests/abi_test.c libtbq.a -lpthread -ldl -lm
 *   ./a.out tests/data/golden
 *
 * Prints one line per check that fails and a closing "N passed, N failed" line; exits non-zero on
 * any failure.
 */
#include "tbq.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (cond) {                                                   \
            passed++;                                                 \
        } else {                                                      \
            failed++;                                                 \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);      \
            fprintf(stderr, __VA_ARGS__);                             \
            fputc('\n', stderr);                                      \
        }                                                             \
    } while (0)

static void * read_file(const char * dir, const char * name, size_t * size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE * f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    *size = (size_t) ftell(f);
    fseek(f, 0, SEEK_SET);
    void * buf = malloc(*size);
    if (!buf || fread(buf, 1, *size, f) != *size) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    return buf;
}

static float half_to_float(uint16_t h) {
    const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
    const float mag = e == 0 ? ldexpf((float) m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float) (m | 0x400), e - 25);
    return (h & 0x8000) ? -mag : mag;
}

static void check_golden(const char * dir, int32_t type, const float * x, int64_t n) {
    const char * name = tbq_type_name(type);
    char file[64];
    size_t want_size, deq_size, row = 0;
    CHECK(tbq_row_size(type, n, &row) == TBQ_OK, "%s: row size", name);

    snprintf(file, sizeof file, "%s.bin", name);
    unsigned char * want = read_file(dir, file, &want_size);
    snprintf(file, sizeof file, "%s.dequant.f32", name);
    float * want_deq = read_file(dir, file, &deq_size);
    CHECK(want_size == row && deq_size == (size_t) n * sizeof(float), "%s: golden sizes", name);

    unsigned char * q = malloc(row);
    float * y = malloc((size_t) n * sizeof(float));
    CHECK(tbq_quantize_f32(type, x, n, q, row) == TBQ_OK, "%s: quantize", name);
    CHECK(memcmp(q, want, row) == 0, "%s: quantized bytes differ from the golden vectors", name);
    CHECK(tbq_dequantize_f32(type, q, row, y, n) == TBQ_OK, "%s: dequantize", name);
    CHECK(memcmp(y, want_deq, (size_t) n * sizeof(float)) == 0, "%s: dequantized floats differ", name);
    CHECK(tbq_validate(type, q, row) == TBQ_OK, "%s: validate", name);

    /* vec_dot: rotated query and plain query agree exactly (same arithmetic, same order). */
    const int32_t blk = (int32_t) tbq_type_block_elems(type);
    float * q_rot = malloc((size_t) n * sizeof(float));
    float a = 0, b = 0;
    CHECK(blk == 128 || blk == 64, "%s: block of %d elements", name, blk);
    CHECK(tbq_rotate_f32(x + 0, q_rot, blk, blk) == TBQ_OK, "%s: rotate", name);
    CHECK(tbq_vec_dot_rotated(type, q + row / (size_t) (n / blk), row, q_rot, blk, &a) == TBQ_OK, "%s: dot", name);
    CHECK(tbq_vec_dot_f32(type, q + row / (size_t) (n / blk), row, x, blk, &b) == TBQ_OK, "%s: dot f32", name);
    CHECK(a == b && isfinite(a) && a != 0, "%s: vec_dot_rotated %g vs vec_dot_f32 %g", name, a, b);

    /* mad_rotated: scale · T(x^) accumulated, unrotated once, is scale · x^ (f32 rounding) */
    float * acc = calloc((size_t) n, sizeof(float));
    CHECK(tbq_mad_rotated(type, q, row, 0.5f, acc, n) == TBQ_OK, "%s: mad_rotated", name);
    CHECK(tbq_unrotate_f32(acc, acc, n, blk) == TBQ_OK, "%s: unrotate acc", name);
    float worst = 0, big = 0;
    for (int64_t i = 0; i < n; i++) {
        worst = fmaxf(worst, fabsf(acc[i] - 0.5f * y[i]));
        big = fmaxf(big, fabsf(y[i]));
    }
    CHECK(worst <= 1e-5f * big, "%s: mad_rotated + unrotate off by %g (max |x^| %g)", name, worst, big);
    free(acc);

    /* f16 out: the f32 result rounded to half (within half a unit in the last place). */
    uint16_t * h = malloc((size_t) n * sizeof(uint16_t));
    CHECK(tbq_dequantize_f16(type, q, row, h, n) == TBQ_OK, "%s: dequantize f16", name);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const float back = half_to_float(h[i]);
        const float tol = fmaxf(fabsf(y[i]) * 0x1p-11f, 0x1p-25f);
        bad += !(fabsf(back - y[i]) <= tol || (isinf(back) && fabsf(y[i]) >= 65520.0f));
    }
    CHECK(bad == 0, "%s: %lld f16 values are not the rounding of the f32 ones", name, (long long) bad);

    free(want); free(want_deq); free(q); free(y); free(q_rot); free(h);
}

static void check_errors(void) {
    float x[256], y[256], out = 0;
    unsigned char q[132];
    for (int i = 0; i < 256; i++) x[i] = sinf((float) i);
    size_t row;

    CHECK(tbq_abi_version() == TBQ_ABI_VERSION, "ABI version %u vs header %u", tbq_abi_version(), TBQ_ABI_VERSION);
    CHECK(tbq_type_size(TBQ_TYPE_TBQ4_0) == sizeof(tbq4_0_block) && sizeof(tbq4_0_block) == TBQ4_0_BLOCK_BYTES, "tbq4_0 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ3_0) == sizeof(tbq3_0_block) && sizeof(tbq3_0_block) == TBQ3_0_BLOCK_BYTES, "tbq3_0 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ5_0) == sizeof(tbq5_0_block) && sizeof(tbq5_0_block) == TBQ5_0_BLOCK_BYTES, "tbq5_0 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ6_0) == sizeof(tbq6_0_block) && sizeof(tbq6_0_block) == TBQ6_0_BLOCK_BYTES, "tbq6_0 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ3_1) == sizeof(tbq3_1_block) && sizeof(tbq3_1_block) == TBQ3_1_BLOCK_BYTES, "tbq3_1 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ4_1) == sizeof(tbq4_1_block) && sizeof(tbq4_1_block) == TBQ4_1_BLOCK_BYTES, "tbq4_1 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ5_1) == sizeof(tbq5_1_block) && sizeof(tbq5_1_block) == TBQ5_1_BLOCK_BYTES, "tbq5_1 size");
    CHECK(strcmp(tbq_type_name(TBQ_TYPE_TBQ5_1), "tbq5_1") == 0, "name tbq5_1");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ4_0_64) == sizeof(tbq4_0_64_block) && sizeof(tbq4_0_64_block) == TBQ4_0_64_BLOCK_BYTES, "tbq4_0_64 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ3_0_64) == sizeof(tbq3_0_64_block) && sizeof(tbq3_0_64_block) == TBQ3_0_64_BLOCK_BYTES, "tbq3_0_64 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ5_0_64) == sizeof(tbq5_0_64_block) && sizeof(tbq5_0_64_block) == TBQ5_0_64_BLOCK_BYTES, "tbq5_0_64 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ6_0_64) == sizeof(tbq6_0_64_block) && sizeof(tbq6_0_64_block) == TBQ6_0_64_BLOCK_BYTES, "tbq6_0_64 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ3_1_64) == sizeof(tbq3_1_64_block) && sizeof(tbq3_1_64_block) == TBQ3_1_64_BLOCK_BYTES, "tbq3_1_64 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ4_1_64) == sizeof(tbq4_1_64_block) && sizeof(tbq4_1_64_block) == TBQ4_1_64_BLOCK_BYTES, "tbq4_1_64 size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ5_1_64) == sizeof(tbq5_1_64_block) && sizeof(tbq5_1_64_block) == TBQ5_1_64_BLOCK_BYTES, "tbq5_1_64 size");
    CHECK(strcmp(tbq_type_name(TBQ_TYPE_TBQ3_1_64), "tbq3_1_64") == 0, "name tbq3_1_64");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ3_1_64C) == sizeof(tbq3_1_64c_block) && sizeof(tbq3_1_64c_block) == TBQ3_1_64C_BLOCK_BYTES, "tbq3_1_64c size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ4_1_64C) == sizeof(tbq4_1_64c_block) && sizeof(tbq4_1_64c_block) == TBQ4_1_64C_BLOCK_BYTES, "tbq4_1_64c size");
    CHECK(tbq_type_size(TBQ_TYPE_TBQ5_1_64C) == sizeof(tbq5_1_64c_block) && sizeof(tbq5_1_64c_block) == TBQ5_1_64C_BLOCK_BYTES, "tbq5_1_64c size");
    CHECK(strcmp(tbq_type_name(TBQ_TYPE_TBQ4_1_64C), "tbq4_1_64c") == 0, "name tbq4_1_64c");
    CHECK(tbq_type_block_elems(TBQ_TYPE_TBQ4_1) == 128 && tbq_type_block_elems(TBQ_TYPE_TBQ4_1_64) == 64 &&
          tbq_type_block_elems(TBQ_TYPE_TBQ5_1_64C) == 64 && tbq_type_block_elems(17) == 0, "block elems");
    CHECK(tbq_type_size(17) == 0 && tbq_type_name(17) == NULL, "unknown type has no size or name");
    static const float gains[16] = TBQ_GAINS;
    for (int k = 0; k < 16; k++) CHECK(gains[k] == (float) exp2((2 * k - 15) / 24.0), "TBQ_GAINS[%d]", k);
    static const float mantissas[8] = TBQ_SCALE8_MANTISSAS;
    for (int f = 0; f < 8; f++) CHECK(mantissas[f] == (float) exp2(f / 8.0), "TBQ_SCALE8_MANTISSAS[%d]", f);
    CHECK(strcmp(tbq_type_name(TBQ_TYPE_TBQ3_0), "tbq3_0") == 0, "name");
    CHECK(strcmp(tbq_status_str(TBQ_ERR_BUFFER), "buffer too short for the row") == 0, "status string");
    CHECK(strcmp(tbq_status_str(12345), "unknown status") == 0, "unknown status string");

    CHECK(tbq_row_size(TBQ_TYPE_TBQ4_0, 256, NULL) == TBQ_ERR_NULL, "row_size NULL");
    CHECK(tbq_row_size(TBQ_TYPE_TBQ4_0, 100, &row) == TBQ_ERR_LENGTH, "row_size 100");
    CHECK(tbq_row_size(TBQ_TYPE_TBQ4_0, -128, &row) == TBQ_ERR_LENGTH, "row_size negative");
    CHECK(tbq_row_size(99, 128, &row) == TBQ_ERR_TYPE, "row_size bad type");
    CHECK(tbq_row_size(TBQ_TYPE_TBQ4_0_64, 192, &row) == TBQ_OK && row == 3 * 34, "row_size of a _64 type");
    CHECK(tbq_row_size(TBQ_TYPE_TBQ4_0, 192, &row) == TBQ_ERR_LENGTH, "row_size 192 of a 128-wide type");

    memset(q, 0xAA, sizeof q);
    CHECK(tbq_quantize_f32(TBQ_TYPE_TBQ4_0, NULL, 256, q, sizeof q) == TBQ_ERR_NULL, "quantize NULL src");
    CHECK(tbq_quantize_f32(TBQ_TYPE_TBQ4_0, x, 256, NULL, sizeof q) == TBQ_ERR_NULL, "quantize NULL dst");
    CHECK(tbq_quantize_f32(TBQ_TYPE_TBQ4_0, x, 256, q, 131) == TBQ_ERR_BUFFER, "quantize short dst");
    CHECK(tbq_quantize_f32(TBQ_TYPE_TBQ4_0, x, 0, q, sizeof q) == TBQ_ERR_LENGTH, "quantize n=0");
    CHECK(tbq_quantize_f32(-1, x, 256, q, sizeof q) == TBQ_ERR_TYPE, "quantize bad type");
    CHECK(tbq_quantize_f16(TBQ_TYPE_TBQ4_0, NULL, 256, q, sizeof q) == TBQ_ERR_NULL, "quantize_f16 NULL");
    int untouched = 1;
    for (size_t i = 0; i < sizeof q; i++) untouched &= q[i] == 0xAA;
    CHECK(untouched, "nothing written on error");

    CHECK(tbq_quantize_f32(TBQ_TYPE_TBQ4_0, x, 256, q, sizeof q) == TBQ_OK, "quantize");
    CHECK(tbq_dequantize_f32(TBQ_TYPE_TBQ4_0, q, 100, y, 256) == TBQ_ERR_BUFFER, "dequantize short src");
    CHECK(tbq_dequantize_f16(TBQ_TYPE_TBQ4_0, q, sizeof q, NULL, 256) == TBQ_ERR_NULL, "dequantize_f16 NULL");
    CHECK(tbq_vec_dot_f32(TBQ_TYPE_TBQ4_0, q, sizeof q, x, 256, NULL) == TBQ_ERR_NULL, "vec_dot NULL out");
    CHECK(tbq_vec_dot_rotated(TBQ_TYPE_TBQ4_0, q, 65, x, 128, &out) == TBQ_ERR_BUFFER, "vec_dot short x");
    memcpy(y, x, sizeof y);
    CHECK(tbq_mad_rotated(TBQ_TYPE_TBQ4_0, NULL, sizeof q, 1.0f, y, 256) == TBQ_ERR_NULL, "mad NULL x");
    CHECK(tbq_mad_rotated(TBQ_TYPE_TBQ4_0, q, sizeof q, 1.0f, NULL, 256) == TBQ_ERR_NULL, "mad NULL acc");
    CHECK(tbq_mad_rotated(TBQ_TYPE_TBQ4_0, q, 131, 1.0f, y, 256) == TBQ_ERR_BUFFER, "mad short x");
    CHECK(tbq_mad_rotated(TBQ_TYPE_TBQ4_0, q, sizeof q, 1.0f, y, 200) == TBQ_ERR_LENGTH, "mad n=200");
    CHECK(tbq_mad_rotated(17, q, sizeof q, 1.0f, y, 256) == TBQ_ERR_TYPE, "mad bad type");
    CHECK(memcmp(y, x, sizeof y) == 0, "mad writes nothing on error");
    CHECK(tbq_rotate_f32(x, y, 127, 128) == TBQ_ERR_LENGTH, "rotate 127");
    CHECK(tbq_rotate_f32(x, y, 192, 128) == TBQ_ERR_LENGTH, "rotate 192 in blocks of 128");
    CHECK(tbq_rotate_f32(x, y, 192, 96) == TBQ_ERR_LENGTH, "rotate in blocks of 96");
    CHECK(tbq_rotate_f32(x, y, 192, 64) == TBQ_OK, "rotate 192 in blocks of 64");
    CHECK(tbq_validate(TBQ_TYPE_TBQ4_0, q, 67) == TBQ_ERR_BUFFER, "validate partial block");
    CHECK(tbq_validate(TBQ_TYPE_TBQ4_0, NULL, 66) == TBQ_ERR_NULL, "validate NULL");

    /* rotate in place, then unrotate: the identity within float rounding */
    memcpy(y, x, sizeof y);
    CHECK(tbq_rotate_f32(y, y, 256, 128) == TBQ_OK && tbq_unrotate_f32(y, y, 256, 128) == TBQ_OK, "rotate in place");
    float worst = 0;
    for (int i = 0; i < 256; i++) worst = fmaxf(worst, fabsf(y[i] - x[i]));
    CHECK(worst < 1e-5f, "unrotate(rotate(x)) off by %g", worst);

    /* a corrupted norm is found */
    q[66] = 0x00; q[67] = 0x7E; /* NaN in block 1 */
    CHECK(tbq_validate(TBQ_TYPE_TBQ4_0, q, sizeof q) == TBQ_ERR_NONFINITE, "validate NaN d");
}

int main(int argc, char ** argv) {
    const char * dir = argc > 1 ? argv[1] : "tests/data/golden";
    size_t size;
    float * x = read_file(dir, "input.f32", &size);
    int64_t n = (int64_t) (size / sizeof(float));

    check_errors();
    check_golden(dir, TBQ_TYPE_TBQ4_0, x, n);
    check_golden(dir, TBQ_TYPE_TBQ3_0, x, n);
    check_golden(dir, TBQ_TYPE_TBQ5_0, x, n);
    check_golden(dir, TBQ_TYPE_TBQ6_0, x, n);
    check_golden(dir, TBQ_TYPE_TBQ3_1, x, n);
    check_golden(dir, TBQ_TYPE_TBQ4_1, x, n);
    check_golden(dir, TBQ_TYPE_TBQ5_1, x, n);
    check_golden(dir, TBQ_TYPE_TBQ4_0_64, x, n);
    check_golden(dir, TBQ_TYPE_TBQ3_0_64, x, n);
    check_golden(dir, TBQ_TYPE_TBQ5_0_64, x, n);
    check_golden(dir, TBQ_TYPE_TBQ6_0_64, x, n);
    check_golden(dir, TBQ_TYPE_TBQ3_1_64, x, n);
    check_golden(dir, TBQ_TYPE_TBQ4_1_64, x, n);
    check_golden(dir, TBQ_TYPE_TBQ5_1_64, x, n);
    free(x);

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
