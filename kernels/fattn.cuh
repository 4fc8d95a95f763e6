// fattn.cuh — flash-attention decode on tbq K/V caches (ggml FLASH_ATTN_EXT, few query rows).
#pragma once

#include <stdint.h>

// Warps per thread block; each walks its own share of the split's tokens.
#define TBQ_FATTN_WARPS 4
// Tokens whose K/V bytes a warp loads before it uses the first (loads in flight per warp).
#define TBQ_FATTN_UNROLL 4
// Rows (query heads of one KV group × query positions) one thread block serves from one read
// of each K/V block; more rows are split into row groups (more blocks, K/V re-read from L2).
#define TBQ_FATTN_MAX_ROWS 8
// Query positions (ggml ne[1] of q) served; more goes to dequantize + upstream (prefill).
#define TBQ_FATTN_MAX_Q 8

// Kernel parameters, passed by value; layout shared with src/cuda/fattn.rs.
// q [D, n_q, n_head, n_seq] f32; k [D, n_kv, n_head_kv, n_seq_kv] and v [D, n_kv, n_head_kv,
// n_seq_kv]: tbq (or f16 / q8_0 keys); mask f16 [>= n_kv, >= n_q, mask_ne2, mask_ne3] or NULL;
// sinks f32 [n_head] or NULL; dst f32 [D, n_head, n_q, n_seq] contiguous (ggml's permuted
// output). Strides in bytes. `scale` is already divided by `softcap` when softcap != 0.
// partial: n_seq·n_q·n_head·n_splits records of (2 + D) floats (M, S, rotated accumulator) for
// the combine kernel (n_splits > 1, or exact keys), or NULL: the decode kernel writes dst.
// exact_k: f16 [D, >= n_exact, n_head_kv, n_seq_kv] (rows contiguous) or NULL: key row
// t < n_exact (≤ n_kv; 0 without) is read from it instead of k (tensor-core kernel: its tiles
// leave those tokens to k_tbq_fattn_combine_exact_*).
struct tbq_fattn_params {
    const float * q;
    const void * k;
    const void * v;
    const void * mask;
    const float * sinks;
    float * dst;
    float * partial;
    const void * exact_k;
    int64_t nbq1, nbq2, nbq3;
    int64_t nbk1, nbk2, nbk3;
    int64_t nbv1, nbv2, nbv3;
    int64_t nbm1, nbm2, nbm3;
    int64_t nbe1, nbe2, nbe3;
    int32_t n_q, n_head, n_seq, n_kv;
    int32_t n_head_kv, n_seq_kv, mask_ne2, mask_ne3;
    int32_t n_splits, split_len, n_row_groups, n_head_log2;
    int32_t n_exact;
    float scale, max_bias, softcap, m0, m1;
    float sparse_v; // skip a token's V when every row's weight exp(s - running max) < this; 0: off
};
