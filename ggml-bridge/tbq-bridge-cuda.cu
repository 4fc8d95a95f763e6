/*
 * tbq-bridge-cuda.cu — maps ggml's CUDA ops on tbq tensors onto the crate's C ABI (ffi/include/tbq.h,
 * tbq_cuda_*). See tbq-bridge-cuda.cuh for the op table. No format logic lives here: tensors are
 * described as they are (ne, nb, type), op parameters are passed through, every launch goes on
 * ctx.stream(), and every temporary buffer (split-K scratch, f16 staging for prefill) comes from
 * ggml's own CUDA pool (ggml_cuda_pool_alloc), so everything here may be captured into CUDA graphs.
 */
#include "tbq-bridge-cuda.cuh"

#include "common.cuh"
#include "convert.cuh"
#include "cpy.cuh"
#include "fattn.cuh"

#include "tbq.h"
#include "tbq-bridge.h"

#include <algorithm>
#include <cstring>

static_assert(TBQ_BLOCK_ELEMS == 128 && TBQ_NARROW_BLOCK_ELEMS == 64,
              "tbq-bridge-cuda: ggml registers the tbq types with blck_size 128 (the _64 types: 64)");

#define TBQ_CUDA_CHECK(call)                                                                              \
    do {                                                                                                  \
        const int32_t tbq_st_ = (call);                                                                   \
        if (tbq_st_ != TBQ_OK) {                                                                          \
            GGML_ABORT("%s: %s failed: %s (tbq_status %d): %s", __func__, #call,                          \
                       tbq_status_str(tbq_st_), (int) tbq_st_, tbq_cuda_last_error());                    \
        }                                                                                                 \
    } while (0)

// ---------------------------------------------------------------------------------------------------
// ggml tensors -> tbq_cuda_tensor
// ---------------------------------------------------------------------------------------------------

static int32_t tbq_cuda_type_of(ggml_type t) {
#define TBQ_CUDA_CASE(name, tbq_t, ggml_t) case ggml_t: return tbq_t;
    switch (t) {
        GGML_TBQ_TYPES(TBQ_CUDA_CASE)
        case GGML_TYPE_F32:    return TBQ_DTYPE_F32;
        case GGML_TYPE_F16:    return TBQ_DTYPE_F16;
        case GGML_TYPE_Q8_0:   return TBQ_DTYPE_Q8_0;
        case GGML_TYPE_I32:    return TBQ_DTYPE_I32;
        case GGML_TYPE_I64:    return TBQ_DTYPE_I64;
        default:               return -1;
    }
#undef TBQ_CUDA_CASE
}

// supports_op sees tensors that are not allocated yet: the crate's checks (types, shapes, strides,
// 2/4-byte alignment) then get an aligned stand-in address; it is never dereferenced.
static void * tbq_cuda_data_of(const ggml_tensor * t, bool check_only) {
    if (t->data != nullptr || !check_only) {
        return t->data;
    }
    return (void *) (uintptr_t) 256;
}

static tbq_cuda_tensor tbq_cuda_tensor_of(const ggml_tensor * t, bool check_only = false) {
    tbq_cuda_tensor r;
    memset(&r, 0, sizeof(r));
    if (t == nullptr) {
        r.type = TBQ_DTYPE_F32;
        return r; // absent: data == NULL
    }
    r.data = tbq_cuda_data_of(t, check_only);
    r.type = tbq_cuda_type_of(t->type);
    for (int i = 0; i < 4; ++i) {
        r.ne[i] = t->ne[i];
        r.nb[i] = t->nb[i];
    }
    return r;
}

// t with the shape `ne` and contiguous strides (t itself must be contiguous: same bytes, other shape)
static tbq_cuda_tensor tbq_cuda_tensor_reshaped(const ggml_tensor * t, const int64_t * ne, bool check_only) {
    tbq_cuda_tensor r = tbq_cuda_tensor_of(t, check_only);
    const size_t ts = ggml_type_size(t->type);
    const int64_t bs = ggml_blck_size(t->type);
    for (int i = 0; i < 4; ++i) {
        r.ne[i] = ne[i];
    }
    r.nb[0] = ts;
    r.nb[1] = ts * (size_t) (ne[0] / bs);
    r.nb[2] = r.nb[1] * (size_t) ne[1];
    r.nb[3] = r.nb[2] * (size_t) ne[2];
    return r;
}

static bool tbq_same_shape(const ggml_tensor * a, const ggml_tensor * b) {
    return a->ne[0] == b->ne[0] && a->ne[1] == b->ne[1] && a->ne[2] == b->ne[2] && a->ne[3] == b->ne[3];
}

static bool tbq_is_float(ggml_type t) {
    return t == GGML_TYPE_F32 || t == GGML_TYPE_F16;
}

static bool tbq_rows_ok(const ggml_tensor * t) {
    return t->ne[0] > 0 && t->ne[0] % ggml_blck_size(t->type) == 0 && t->nb[0] == ggml_type_size(t->type) &&
           t->ne[1] >= 0 && t->ne[2] >= 0 && t->ne[3] >= 0;
}

// ---------------------------------------------------------------------------------------------------
// which ops are ours
// ---------------------------------------------------------------------------------------------------

// CPY/DUP/CONT: src -> dst (CPY writes into src[1]; DUP and CONT into the node itself)
static void tbq_cpy_operands(const ggml_tensor * op, const ggml_tensor ** src, const ggml_tensor ** dst) {
    *src = op->src[0];
    *dst = op->op == GGML_OP_CPY ? op->src[1] : op;
}

bool ggml_cuda_tbq_owns_op(const ggml_tensor * op) {
    switch (op->op) {
        case GGML_OP_SET_ROWS:
            return ggml_is_tbq(op->type);
        case GGML_OP_GET_ROWS:
            return ggml_is_tbq(op->src[0]->type);
        case GGML_OP_CPY:
        case GGML_OP_DUP:
        case GGML_OP_CONT:
            {
                const ggml_tensor * src;
                const ggml_tensor * dst;
                tbq_cpy_operands(op, &src, &dst);
                if (src == nullptr || dst == nullptr || (!ggml_is_tbq(src->type) && !ggml_is_tbq(dst->type))) {
                    return false;
                }
                // a plain byte copy of one type (upstream: cudaMemcpyAsync) stays upstream's
                return !(src->type == dst->type && ggml_is_contiguous(src) && ggml_is_contiguous(dst));
            }
        case GGML_OP_FLASH_ATTN_EXT:
            return ggml_is_tbq(op->src[1]->type) || ggml_is_tbq(op->src[2]->type);
        default:
            return false;
    }
}

// ---------------------------------------------------------------------------------------------------
// SET_ROWS, CPY, GET_ROWS: argument building shared by supports_op and compute
// ---------------------------------------------------------------------------------------------------

// SET_ROWS: src0 [ne00, ne01, ne02, ne03] f32/f16 -> dst tbq [ne00, ne1, ne02, ne03] at rows idx [ne01, ne11, ne12]
static bool tbq_set_rows_args(const ggml_tensor * op, bool check_only, tbq_cuda_tensor * s, tbq_cuda_tensor * i, tbq_cuda_tensor * d) {
    const ggml_tensor * src = op->src[0];
    const ggml_tensor * idx = op->src[1];
    if (!ggml_is_tbq(op->type) || !tbq_is_float(src->type) || !tbq_rows_ok(src) || idx == nullptr ||
        (idx->type != GGML_TYPE_I32 && idx->type != GGML_TYPE_I64)) {
        return false;
    }
    if (op->ne[0] != src->ne[0] || op->ne[0] % ggml_blck_size(op->type) != 0 || op->ne[2] != src->ne[2] || op->ne[3] != src->ne[3] || idx->ne[0] != src->ne[1] ||
        idx->ne[1] <= 0 || idx->ne[2] <= 0 || src->ne[2] % idx->ne[1] != 0 || src->ne[3] % idx->ne[2] != 0 ||
        idx->ne[3] != 1) {
        return false;
    }
    *s = tbq_cuda_tensor_of(src, check_only);
    *i = tbq_cuda_tensor_of(idx, check_only);
    *d = tbq_cuda_tensor_of(op, check_only);
    return true;
}

// CPY f32/f16 -> tbq (quantize, tbq_cuda_set_rows without index) or tbq -> f32/f16 (tbq_cuda_get_rows,
// whole tensor). The destination gets the source's shape when it is contiguous (ggml_cpy only asks for
// the same number of elements); the row length must agree.
static bool tbq_cpy_args(const ggml_tensor * op, bool check_only, bool * quantize, tbq_cuda_tensor * s, tbq_cuda_tensor * d) {
    const ggml_tensor * src;
    const ggml_tensor * dst;
    tbq_cpy_operands(op, &src, &dst);
    if (ggml_is_tbq(dst->type) && tbq_is_float(src->type)) {
        *quantize = true;
    } else if (ggml_is_tbq(src->type) && tbq_is_float(dst->type)) {
        *quantize = false;
    } else {
        return false; // tbq -> tbq of another type or layout: not served
    }
    if (!tbq_rows_ok(src) || !tbq_rows_ok(dst) || src->ne[0] != dst->ne[0] || ggml_nelements(src) != ggml_nelements(dst)) {
        return false;
    }
    *s = tbq_cuda_tensor_of(src, check_only);
    if (tbq_same_shape(src, dst)) {
        *d = tbq_cuda_tensor_of(dst, check_only);
    } else if (ggml_is_contiguous(dst)) {
        *d = tbq_cuda_tensor_reshaped(dst, src->ne, check_only);
    } else {
        return false;
    }
    return true;
}

// GET_ROWS: src0 tbq [ne00, ne01, ne02, ne03], idx i32 [ne10, ne11 = ne02, ne12 = ne03] -> dst [ne00, ne10, ne11, ne12]
static bool tbq_get_rows_args(const ggml_tensor * op, bool check_only, tbq_cuda_tensor * s, tbq_cuda_tensor * i, tbq_cuda_tensor * d) {
    const ggml_tensor * src = op->src[0];
    const ggml_tensor * idx = op->src[1];
    if (!ggml_is_tbq(src->type) || !tbq_is_float(op->type) || !tbq_rows_ok(src) || idx == nullptr || idx->type != GGML_TYPE_I32) {
        return false;
    }
    if (op->nb[0] != ggml_type_size(op->type) || op->ne[0] != src->ne[0] || op->ne[1] != idx->ne[0] ||
        op->ne[2] != idx->ne[1] || op->ne[3] != idx->ne[2] || idx->ne[1] != src->ne[2] || idx->ne[2] != src->ne[3] ||
        idx->ne[3] != 1) {
        return false;
    }
    *s = tbq_cuda_tensor_of(src, check_only);
    *i = tbq_cuda_tensor_of(idx, check_only);
    *d = tbq_cuda_tensor_of(op, check_only);
    return true;
}

// ---------------------------------------------------------------------------------------------------
// FLASH_ATTN_EXT
// ---------------------------------------------------------------------------------------------------

static tbq_fattn_args tbq_fattn_args_of(const ggml_tensor * dst, bool check_only) {
    tbq_fattn_args a;
    memset(&a, 0, sizeof(a));
    a.q     = tbq_cuda_tensor_of(dst->src[0], check_only);
    a.k     = tbq_cuda_tensor_of(dst->src[1], check_only);
    a.v     = tbq_cuda_tensor_of(dst->src[2], check_only);
    a.mask  = tbq_cuda_tensor_of(dst->src[3], check_only);
    a.sinks = tbq_cuda_tensor_of(dst->src[4], check_only);
    a.dst   = tbq_cuda_tensor_of(dst, check_only);
    a.exact_k = tbq_cuda_tensor_of(dst->src[5], check_only);
    memcpy(&a.scale,         (const float *) dst->op_params + 0, sizeof(float));
    memcpy(&a.max_bias,      (const float *) dst->op_params + 1, sizeof(float));
    memcpy(&a.logit_softcap, (const float *) dst->op_params + 2, sizeof(float));
    a.reserved = 0;
    return a;
}

// the crate's decode kernel takes this node as it is
static bool tbq_fattn_crate_supported(const ggml_tensor * dst, bool check_only) {
    if (dst->src[1]->type == GGML_TYPE_F32 || dst->src[0]->type != GGML_TYPE_F32 || dst->type != GGML_TYPE_F32) {
        return false;
    }
    const tbq_fattn_args a = tbq_fattn_args_of(dst, check_only);
    return tbq_cuda_fattn_supported(&a, nullptr) == TBQ_OK;
}

// K or V -> contiguous f16 of the same shape: tbq through the crate, other types through upstream's converter
static bool tbq_f16_convertible(const ggml_tensor * t) {
    if (t->type == GGML_TYPE_F16) {
        return true;
    }
    if (ggml_is_tbq(t->type)) {
        return tbq_rows_ok(t);
    }
    return t->nb[0] == ggml_type_size(t->type) && ggml_get_to_fp16_nc_cuda(t->type) != nullptr;
}

// an f16 stand-in for t (shape of t, contiguous, at data)
static ggml_tensor tbq_f16_view(const ggml_tensor * t, void * data) {
    ggml_tensor r = *t;
    r.type     = GGML_TYPE_F16;
    r.data     = data;
    r.view_src = nullptr;
    r.view_offs = 0;
    r.nb[0] = sizeof(half);
    r.nb[1] = r.nb[0] * t->ne[0];
    r.nb[2] = r.nb[1] * t->ne[1];
    r.nb[3] = r.nb[2] * t->ne[2];
    return r;
}

static void tbq_to_f16(ggml_backend_cuda_context & ctx, const ggml_tensor * t, half * out) {
    cudaStream_t stream = ctx.stream();
    if (ggml_is_tbq(t->type)) {
        const tbq_cuda_tensor s = tbq_cuda_tensor_of(t);
        ggml_tensor v = tbq_f16_view(t, out);
        const tbq_cuda_tensor d = tbq_cuda_tensor_of(&v);
        TBQ_CUDA_CHECK(tbq_cuda_get_rows(&s, nullptr, &d, stream));
        return;
    }
    const size_t ts = ggml_type_size(t->type);
    to_fp16_nc_cuda_t to_fp16 = ggml_get_to_fp16_nc_cuda(t->type);
    GGML_ASSERT(to_fp16 != nullptr && t->nb[0] == ts);
    to_fp16(t->data, out, t->ne[0], t->ne[1], t->ne[2], t->ne[3],
            (int64_t) (t->nb[1] / ts), (int64_t) (t->nb[2] / ts), (int64_t) (t->nb[3] / ts), stream);
}

// Exact keys (src[5], ggml_flash_attn_ext_set_exact_keys) on the dequantize + upstream path: f16 keys of K's
// head size, heads and sequences that the f16 copy of a tbq K takes over its first rows (never K itself).
static bool tbq_exact_keys_copyable(const ggml_tensor * K, const ggml_tensor * E) {
    return ggml_is_tbq(K->type) && E->type == GGML_TYPE_F16 && E->nb[0] == sizeof(half) && E->ne[0] == K->ne[0] &&
           E->ne[1] > 0 && E->ne[2] == K->ne[2] && E->ne[3] == K->ne[3];
}

// rows t < min(n_exact, n_kv) of every head and sequence of K16 (the f16 copy of K) <- the exact keys E:
// upstream's strided copy on ctx.stream(), nothing allocated (capture-safe)
static void tbq_copy_exact_keys(ggml_backend_cuda_context & ctx, const ggml_tensor * E, const ggml_tensor * K16) {
    ggml_tensor src = *E;
    ggml_tensor dst = *K16;
    src.ne[1] = dst.ne[1] = std::min(E->ne[1], K16->ne[1]);
    ggml_cuda_cpy(ctx, &src, &dst);
}

static bool tbq_fattn_supported(int device, const ggml_tensor * dst) {
    const ggml_tensor * K = dst->src[1];
    const ggml_tensor * V = dst->src[2];
    const ggml_tensor * E = dst->src[5];
    if (tbq_fattn_crate_supported(dst, /*check_only=*/true)) {
        return true;
    }
    // dequantize + upstream: K and V must convert to f16 (exact keys copy into K's), and upstream must run the
    // f16 node
    if (!tbq_f16_convertible(K) || !tbq_f16_convertible(V) || (E != nullptr && !tbq_exact_keys_copyable(K, E))) {
        return false;
    }
    ggml_tensor K16 = tbq_f16_view(K, K->data);
    ggml_tensor V16 = tbq_f16_view(V, V->data);
    ggml_tensor node = *dst;
    node.src[1] = &K16;
    node.src[2] = &V16;
    node.src[5] = nullptr; // the exact keys are in K16
    return ggml_cuda_flash_attn_ext_supported(device, &node);
}

static void tbq_fattn_compute(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    if (tbq_fattn_crate_supported(dst, /*check_only=*/false)) {
        // decode: the crate's kernel; split-K partials in ggml's pool
        const tbq_fattn_args a = tbq_fattn_args_of(dst, false);
        size_t need = 0;
        TBQ_CUDA_CHECK(tbq_cuda_fattn_scratch_bytes(&a, &need));
        ggml_cuda_pool_alloc<char> scratch(ctx.pool());
        void * sp = need > 0 ? (void *) scratch.alloc(need) : nullptr;
        TBQ_CUDA_CHECK(tbq_cuda_flash_attn_ext(&a, sp, need, ctx.stream()));
        return;
    }

    // prefill (or a pair the crate's kernel does not take): K/V -> f16 from ggml's pool, then upstream
    const ggml_tensor * K = dst->src[1];
    const ggml_tensor * V = dst->src[2];
    const ggml_tensor * E = dst->src[5];
    GGML_ASSERT(tbq_f16_convertible(K) && tbq_f16_convertible(V));
    GGML_ASSERT(E == nullptr || tbq_exact_keys_copyable(K, E));

    ggml_cuda_pool_alloc<half> K_f16(ctx.pool());
    ggml_cuda_pool_alloc<half> V_f16(ctx.pool());

    ggml_tensor K16 = *K;
    ggml_tensor V16 = *V;
    if (K->type != GGML_TYPE_F16) {
        K16 = tbq_f16_view(K, K_f16.alloc(ggml_nelements(K)));
        tbq_to_f16(ctx, K, (half *) K16.data);
    }
    if (E != nullptr) {
        tbq_copy_exact_keys(ctx, E, &K16);
    }
    if (V->type != GGML_TYPE_F16) {
        // V reads K's quantized rows: it shares K's copy only when no exact keys overwrote some
        const bool V_same_as_K = E == nullptr && V->data == K->data && V->type == K->type && tbq_same_shape(V, K) &&
                                 V->nb[1] == K->nb[1] && V->nb[2] == K->nb[2] && V->nb[3] == K->nb[3];
        if (V_same_as_K) {
            V16 = tbq_f16_view(V, K16.data);
        } else {
            V16 = tbq_f16_view(V, V_f16.alloc(ggml_nelements(V)));
            tbq_to_f16(ctx, V, (half *) V16.data);
        }
    }

    ggml_tensor node = *dst;
    node.src[1] = &K16;
    node.src[2] = &V16;
    node.src[5] = nullptr; // the exact keys are in K16
    ggml_cuda_flash_attn_ext(ctx, &node);
}

// ---------------------------------------------------------------------------------------------------
// supports_op / compute
// ---------------------------------------------------------------------------------------------------

// the linked libtbq.a must have been built with the crate's `cuda` feature: a CPU-only library would
// make every tbq op fall back to the CPU (or fail), so refuse to run instead
static void tbq_cuda_check_lib(void) {
    static const bool ok = [] {
        if (tbq_cuda_available() != 1) {
            GGML_LOG_ERROR("ggml-cuda: the linked libtbq.a has no CUDA kernels or finds no device (tbq_cuda_available() = 0: %s).\n"
                           "ggml-cuda: build it with `cargo build --release --features cuda` (the top-level CMakeLists does so "
                           "when GGML_CUDA=ON) and pass it as GGML_TBQ_LIB.\n", tbq_cuda_last_error());
            return false;
        }
        return true;
    }();
    if (!ok) {
        GGML_ABORT("ggml-cuda: tbq KV-cache types need a CUDA-enabled libtbq.a");
    }
}

bool ggml_cuda_tbq_supports_op(int device, const ggml_tensor * op) {
    tbq_cuda_tensor s, i, d;
    tbq_cuda_check_lib();
    switch (op->op) {
        case GGML_OP_SET_ROWS:
            return tbq_set_rows_args(op, true, &s, &i, &d);
        case GGML_OP_GET_ROWS:
            return tbq_get_rows_args(op, true, &s, &i, &d);
        case GGML_OP_CPY:
        case GGML_OP_DUP:
        case GGML_OP_CONT:
            {
                bool quantize;
                return tbq_cpy_args(op, true, &quantize, &s, &d);
            }
        case GGML_OP_FLASH_ATTN_EXT:
            return tbq_fattn_supported(device, op);
        default:
            return false;
    }
}

void ggml_cuda_tbq_compute_forward(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    cudaStream_t stream = ctx.stream();
    tbq_cuda_tensor s, i, d;
    switch (dst->op) {
        case GGML_OP_SET_ROWS:
            if (!tbq_set_rows_args(dst, false, &s, &i, &d)) {
                GGML_ABORT("%s: SET_ROWS %s -> %s not supported (supports_op said no)", __func__,
                           ggml_type_name(dst->src[0]->type), ggml_type_name(dst->type));
            }
            TBQ_CUDA_CHECK(tbq_cuda_set_rows(&s, &i, &d, stream));
            break;
        case GGML_OP_GET_ROWS:
            if (!tbq_get_rows_args(dst, false, &s, &i, &d)) {
                GGML_ABORT("%s: GET_ROWS %s -> %s not supported (supports_op said no)", __func__,
                           ggml_type_name(dst->src[0]->type), ggml_type_name(dst->type));
            }
            TBQ_CUDA_CHECK(tbq_cuda_get_rows(&s, &i, &d, stream));
            break;
        case GGML_OP_CPY:
        case GGML_OP_DUP:
        case GGML_OP_CONT:
            {
                bool quantize;
                if (!tbq_cpy_args(dst, false, &quantize, &s, &d)) {
                    GGML_ABORT("%s: %s %s -> %s not supported (supports_op said no)", __func__, ggml_op_name(dst->op),
                               ggml_type_name(dst->src[0]->type),
                               ggml_type_name((dst->op == GGML_OP_CPY ? dst->src[1] : dst)->type));
                }
                if (quantize) {
                    TBQ_CUDA_CHECK(tbq_cuda_set_rows(&s, nullptr, &d, stream));
                } else {
                    TBQ_CUDA_CHECK(tbq_cuda_get_rows(&s, nullptr, &d, stream));
                }
            } break;
        case GGML_OP_FLASH_ATTN_EXT:
            tbq_fattn_compute(ctx, dst);
            break;
        default:
            GGML_ABORT("%s: op %s is not a tbq op", __func__, ggml_op_name(dst->op));
    }
}

// ---------------------------------------------------------------------------------------------------
// converters (convert.cu): whole tensors of k elements, or non-contiguous [ne00, ne01, ne02, ne03] with
// strides s01..s03 in blocks (ggml's nb / type size)
// ---------------------------------------------------------------------------------------------------

template <int32_t T, typename dst_t>
static void tbq_convert_cont(const void * x, dst_t * y, int64_t k, cudaStream_t stream) {
    const int64_t blk = (int64_t) tbq_type_block_elems(T);
    GGML_ASSERT(blk > 0 && k % blk == 0);
    if (k == 0) {
        return;
    }
    const size_t bs = tbq_type_size(T);
    tbq_cuda_tensor s;
    tbq_cuda_tensor d;
    memset(&s, 0, sizeof(s));
    memset(&d, 0, sizeof(d));
    // one block per row: any k that is a multiple of the block
    s.data = (void *) x;
    s.type = T;
    s.ne[0] = blk; s.ne[1] = k / blk; s.ne[2] = 1; s.ne[3] = 1;
    s.nb[0] = bs; s.nb[1] = bs; s.nb[2] = bs * (size_t) s.ne[1]; s.nb[3] = s.nb[2];
    d.data = (void *) y;
    d.type = std::is_same<dst_t, half>::value ? TBQ_DTYPE_F16 : TBQ_DTYPE_F32;
    for (int i = 0; i < 4; ++i) {
        d.ne[i] = s.ne[i];
    }
    d.nb[0] = sizeof(dst_t); d.nb[1] = sizeof(dst_t) * (size_t) blk; d.nb[2] = d.nb[1] * (size_t) d.ne[1]; d.nb[3] = d.nb[2];
    TBQ_CUDA_CHECK(tbq_cuda_get_rows(&s, nullptr, &d, stream));
}

template <int32_t T, typename dst_t>
static void tbq_convert_nc(const void * x, dst_t * y, int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne03,
                           int64_t s01, int64_t s02, int64_t s03, cudaStream_t stream) {
    if (ne00 * ne01 * ne02 * ne03 == 0) {
        return;
    }
    const size_t bs = tbq_type_size(T);
    tbq_cuda_tensor s;
    tbq_cuda_tensor d;
    memset(&s, 0, sizeof(s));
    memset(&d, 0, sizeof(d));
    s.data = (void *) x;
    s.type = T;
    s.ne[0] = ne00; s.ne[1] = ne01; s.ne[2] = ne02; s.ne[3] = ne03;
    s.nb[0] = bs; s.nb[1] = bs * (size_t) s01; s.nb[2] = bs * (size_t) s02; s.nb[3] = bs * (size_t) s03;
    d.data = (void *) y;
    d.type = std::is_same<dst_t, half>::value ? TBQ_DTYPE_F16 : TBQ_DTYPE_F32;
    for (int i = 0; i < 4; ++i) {
        d.ne[i] = s.ne[i];
    }
    d.nb[0] = sizeof(dst_t); d.nb[1] = sizeof(dst_t) * (size_t) ne00; d.nb[2] = d.nb[1] * (size_t) ne01; d.nb[3] = d.nb[2] * (size_t) ne02;
    TBQ_CUDA_CHECK(tbq_cuda_get_rows(&s, nullptr, &d, stream));
}

ggml_cuda_tbq_to_fp16_t ggml_cuda_tbq_get_to_fp16(ggml_type type) {
    switch (type) {
#define TBQ_CUDA_CASE(name, tbq_t, ggml_t) case ggml_t: return tbq_convert_cont<tbq_t, half>;
        GGML_TBQ_TYPES(TBQ_CUDA_CASE)
#undef TBQ_CUDA_CASE
        default: return nullptr;
    }
}

ggml_cuda_tbq_to_fp32_t ggml_cuda_tbq_get_to_fp32(ggml_type type) {
    switch (type) {
#define TBQ_CUDA_CASE(name, tbq_t, ggml_t) case ggml_t: return tbq_convert_cont<tbq_t, float>;
        GGML_TBQ_TYPES(TBQ_CUDA_CASE)
#undef TBQ_CUDA_CASE
        default: return nullptr;
    }
}

ggml_cuda_tbq_to_fp16_nc_t ggml_cuda_tbq_get_to_fp16_nc(ggml_type type) {
    switch (type) {
#define TBQ_CUDA_CASE(name, tbq_t, ggml_t) case ggml_t: return tbq_convert_nc<tbq_t, half>;
        GGML_TBQ_TYPES(TBQ_CUDA_CASE)
#undef TBQ_CUDA_CASE
        default: return nullptr;
    }
}

ggml_cuda_tbq_to_fp32_nc_t ggml_cuda_tbq_get_to_fp32_nc(ggml_type type) {
    switch (type) {
#define TBQ_CUDA_CASE(name, tbq_t, ggml_t) case ggml_t: return tbq_convert_nc<tbq_t, float>;
        GGML_TBQ_TYPES(TBQ_CUDA_CASE)
#undef TBQ_CUDA_CASE
        default: return nullptr;
    }
}
