#!/usr/bin/env python3
"""Codec lab: candidate KV-cache codecs measured OFFLINE on real Q/K/V rows (issue 12, steps 1-2).

    python validation/analysis/codec_lab.py golden                      # numpy tbq == Rust, bit for bit
    python validation/analysis/codec_lab.py synthetic [--out DIR]       # the whole lab on Gaussian rows
    python validation/analysis/codec_lab.py run --kv ROWS.bin --model gemma-3-270m \
        [--kld validation/results/gemma-3-270m/ppl/results.json] --out DIR

ROWS.bin is validation/capture/capture-kv's output (llama-perplexity's chunks, BOS first). The first
`--calib` chunks calibrate whatever a candidate fits (empirical levels, key means, the per-layer
allocation); every number in the tables comes from the other chunks (held out).

Why offline: a new cache type costs a CUDA kernel, a CPU path, golden vectors and a KLD matrix
run; this lab says which candidates are worth that, from the rows the cache would really hold.
Three metrics, in increasing order of fidelity to what perplexity/KLD sees:
  (a) relative MSE ||x̂ − x||² / ||x||² of K and V rows;
  (b) RMS error of the attention logits q·(k̂ − k)/√d over the real causal (q, k) pairs of each
      layer and head (query heads mapped to their KV head, GQA);
  (c) attention OUTPUT of real windows: per layer and query head, softmax(q·K̂ᵀ/√d) V̂ over the whole
      causal 512-token chunk, for the queries KLD scores (the second half of the chunk), against
      f16 K/V/Q (the f16/f16 base of the KLD runs); relative squared error of the output and the KL
      divergence of the attention distribution. (c) is trusted only as far as it ranks the measured
      KLD of the existing pairs (`rank` section of the results).

The rotation is the format's (src/rotation.rs): T(x) = H·D·x/√128 with the fixed signs SIGNS, never a
fresh random one. head_dim 64 (SmolLM2) has no tbq type yet (DESIGN.md: "64-element variants"); the
lab's 64-element variant uses the 64-point Hadamard and the FIRST 64 signs of SIGNS, and pays its
header over 64 elements (tbq4_0 at 64 = 4.25 bits per element, not 4.125).

Stock llama.cpp is modelled as the pinned tree does it (src/llama-kv-cache.cpp): attn_rot multiplies
K and Q by the plain normalised Sylvester Hadamard of the largest power of two dividing head_dim
(256 for Gemma 3, 64 for SmolLM2) and V by the 64-point one (the output is rotated back); q4_0/q8_0
as ggml's reference quantizers; the query of a q4_0/q8_0 key cache is quantized to q8_0 (its
vec_dot_type), the query of a tbq key cache stays f32 (vec_dot_type TBQ_ROT).

Bits per element always include every scale and header: a block of B elements with an f16 norm
costs 16/B bits per element on top of its codes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a shared 2-core machine: one thread
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

F32 = np.float32
REPO = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------------------------
# The format's constants (src/rotation.rs, src/codebook.rs), written out here so the lab needs no
# build; `golden` checks them against the committed golden vectors.

SIGNS = 0xDE573C583FEA2DF6AF21E4F2AA31BCB4
SQRT_128 = F32(11.313708)
INV_SQRT_128 = F32(0.08838835)

NORMAL_HALF = {
    2: [0.4527800, 1.5104176],  # 4-level Lloyd-Max for N(0, 1) (Max 1960); no tbq2 type exists
    3: [0.245094, 0.756005, 1.343909, 2.151946],
    4: [0.128395, 0.388048, 0.656759, 0.942340, 1.256231, 1.618046, 2.069017, 2.73259],
    5: [0.065890, 0.198052, 0.331378, 0.466700, 0.604934, 0.747136, 0.894565, 1.048783, 1.211804,
        1.38634, 1.576228, 1.787233, 2.028728, 2.317739, 2.69112, 3.260732],
    6: [0.033410, 0.100278, 0.167297, 0.234567, 0.302193, 0.370283, 0.438950, 0.508314, 0.578503,
        0.649656, 0.721922, 0.795468, 0.870477, 0.947155, 1.025736, 1.106488, 1.18972, 1.275794,
        1.365141, 1.458276, 1.555831, 1.658589, 1.767542, 1.883977, 2.009611, 2.14681, 2.298981,
        2.471305, 2.672274, 2.917407, 3.240437, 3.744101],
}
GAINS = np.array([0.6484198, 0.68697685, 0.7278266, 0.7711054, 0.8169577, 0.8655366, 0.91700405,
                  0.9715319, 1.0293022, 1.0905077, 1.1553527, 1.2240535, 1.2968396, 1.3739537,
                  1.4556532, 1.5422108], F32)


def signs(n: int) -> np.ndarray:
    """The first n signs of D (the 64-element variant takes the first 64)."""
    return np.array([-1.0 if (SIGNS >> i) & 1 else 1.0 for i in range(n)], F32)


def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh-Hadamard butterfly over the last axis, spans 1, 2, 4, ... as the crate
    runs it ((a + b, a − b) at every stage), in f32."""
    n = x.shape[-1]
    y = np.ascontiguousarray(x, F32).reshape(-1, n)
    h = 1
    while h < n:
        y = y.reshape(-1, n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = np.stack([a + b, a - b], axis=2)
        h *= 2
    return y.reshape(x.shape)


def rot(x: np.ndarray, n: int) -> np.ndarray:
    """T(x) blockwise over blocks of n (128, or 64 for head_dim 64): H·D·x/√n with the format's signs."""
    b = x.reshape(-1, n).astype(F32) * signs(n)
    return (fwht(b) * (INV_SQRT_128 if n == 128 else F32(1 / math.sqrt(n)))).reshape(x.shape)


def unrot(u: np.ndarray, n: int) -> np.ndarray:
    """T⁻¹(u) = D·H·u/√n blockwise."""
    b = fwht(u.reshape(-1, n).astype(F32)) * (INV_SQRT_128 if n == 128 else F32(1 / math.sqrt(n)))
    return (b * signs(n)).reshape(u.shape)


def llama_hadamard(x: np.ndarray, n: int) -> np.ndarray:
    """llama.cpp's attn_rot: x times the plain normalised Sylvester Hadamard H_n/√n (no signs),
    blockwise along the row; the matrix is symmetric and its own inverse."""
    return (fwht(x.reshape(-1, n)) / F32(math.sqrt(n))).reshape(x.shape)


def f16(x):
    return np.asarray(x, F32).astype(np.float16).astype(F32)


def mirror(half) -> np.ndarray:
    h = np.asarray(half, F32)
    return np.concatenate([-h[::-1], h])


def encode(y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Nearest level by the format's rule: code = #{thresholds t : y > t} over the f32 midpoints
    (a value on a threshold, and 0, go to the lower level)."""
    bounds = ((levels[:-1] + levels[1:]) * F32(0.5)).astype(F32)
    return np.searchsorted(bounds, y, side="left")


def canon_sumsq(v: np.ndarray) -> np.ndarray:
    """Σ v² of 128-blocks in the warp's order (4 slots per lane, then an xor butterfly over 32 lanes),
    f32: the order src/rotation.rs pins, so d agrees bit for bit with the crate."""
    b = v.reshape(-1, 4, 32).astype(F32)
    lane = b[:, 0] * b[:, 0]
    for s in range(1, 4):
        lane = lane + b[:, s] * b[:, s]
    off = 16
    while off:
        lane = lane + lane[:, np.arange(32) ^ off]
        off //= 2
    return lane[:, 0]


def sumsq(v: np.ndarray) -> np.ndarray:
    return canon_sumsq(v) if v.shape[-1] == 128 else (v.astype(np.float64) ** 2).sum(-1).astype(F32)


# ----------------------------------------------------------------------------------------------
# Scalar codecs in the format's rotation: norm, codes, optional per-32 gains, a choice of scale.

def log8(d: np.ndarray) -> np.ndarray:
    """d on an 8-bit log scale: 2^((k − 128)/16), k = 0..255 (step 2^(1/16): ≤ 2.2% off, a relative
    MSE of ≈ 1.6e-4 on top of the codes'; range 2^−8 … 2^7.94, enough for these models' rows, not a
    format guarantee — a real type would need a per-tensor exponent or a wider range)."""
    k = np.clip(np.round(16 * np.log2(np.maximum(d, 1e-30))) + 128, 0, 255)
    return np.where(d > 0, np.exp2((k - 128) / 16), 0).astype(F32)


def log8_grid(rho: np.ndarray, step: int = 8) -> np.ndarray:
    """rho rounded to 2^((k − 128)/step), k = 1..255 (k = 0 is reserved for an all-zero block); step 8
    spans 2^−15.9 … 2^15.9 (f16's normal range), step 16 2^−7.9 … 2^7.9. Rounding is to the nearest
    grid point in the log domain."""
    k = np.clip(np.round(step * np.log2(np.maximum(rho, 1e-30))) + 128, 1, 255)
    return np.where(rho > 0, np.exp2((k - 128) / step), 0).astype(F32)


def fit_gains(y: np.ndarray, levels: np.ndarray, gains: np.ndarray, group: int = 32) -> np.ndarray:
    """The gained code vector r[N, B] of y[N, B]: every group of `group` coordinates picks the gain
    of `gains` with the least squared error (first best wins), coding y/g level by level."""
    N, B = y.shape
    G = y.reshape(N, B // group, group)
    best_err = np.full(G.shape[:2], np.inf, F32)
    r = np.zeros_like(G)
    for kk, g in enumerate(gains):
        rk = g * levels[encode(G * gains[len(gains) - 1 - kk], levels)]
        err = ((G - rk) ** 2).sum(-1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        r = np.where(better[..., None], rk, r)
    return r.reshape(N, B)


def tbq_rotated_fit(w: np.ndarray, levels: np.ndarray, gains: np.ndarray, step: int = 8, group: int = 32) -> np.ndarray:
    """A compact-header sub-scaled block: an 8-bit log scale d (log8_grid of the coordinates' RMS
    ||u||/√B) and per-group gains fitted to u/d (each group picks the gain of least squared error):
    no norm correction, the gains absorb d's rounding (their ladder steps 2^(1/12), finer than d's)."""
    N, B = w.shape
    sq = SQRT_128 if B == 128 else F32(math.sqrt(B))
    u = (w / sq).astype(F32)
    rho = np.sqrt(sumsq(u) / B).astype(F32)
    ok = (rho > 0) & np.isfinite(rho)
    d = log8_grid(np.where(ok, rho, 0), step)
    t = (u / np.where(d > 0, d, 1)[:, None]).astype(F32)
    return (d[:, None] * fit_gains(t, levels, gains, group)).astype(F32)


def tbq_rotated(w: np.ndarray, levels: np.ndarray, gains: np.ndarray | None = None,
                scale: str = "norm", group: int = 32, dbits: int = 16) -> np.ndarray:
    """Quantize blocks w[N, B] = H·D·x (the unnormalised butterfly, B = 128 or 64), returning d·r,
    the reconstruction of u = T(x) = w/√B.

    As src/reference.rs: s = Σ w² (warp order), y = w·√B/√s is coded level by level; with gains,
    every group of `group` coordinates picks the gain of GAINS with the least squared error (first
    best wins). The block scale d multiplies the code vector r:
      norm: d = ||u||/||r||          (format v1: the reconstruction keeps the norm)
      mse:  d = <u, r>/||r||²        (least squares: MSE-optimal for this r)
      unb:  d = ||u||²/<u, r>        (slope 1 of q·k̂ against q·k for isotropic q: unbiased logits,
                                      and for V an unbiased reconstruction in the sum Σ p_t v̂_t)
    d is stored as f16 (16 bits per block)."""
    N, B = w.shape
    sq = SQRT_128 if B == 128 else F32(math.sqrt(B))
    s = sumsq(w)
    ok = (s > 0) & np.isfinite(s)
    nw = np.sqrt(np.where(ok, s, 1)).astype(F32)
    y = w * (sq / nw)[:, None]
    r = (levels[encode(y, levels)] if gains is None else fit_gains(y, levels, gains, group)).astype(F32)
    if scale == "norm":
        d = nw / (sq * np.sqrt(sumsq(r)))
    else:
        u = w.astype(np.float64) / float(sq)
        ur = (u * r).sum(-1)
        uu = (u * u).sum(-1)
        d = ur / (r.astype(np.float64) ** 2).sum(-1) if scale == "mse" else uu / np.maximum(ur, 1e-30)
        if scale not in ("mse", "unb"):
            raise ValueError(scale)
    d = np.minimum(np.where(ok, d, 0), 65504)
    d = f16(d) if dbits == 16 else log8(d)
    return d[:, None] * r


def uniform_rotated(u: np.ndarray, bits: int, scale_bits: str = "f16") -> np.ndarray:
    """q4_0's rule inside the format's rotation: per 32 rotated coordinates, d = (value of largest
    magnitude)/−2^(b−1), q = min(2^b − 1, trunc(x/d + 2^(b−1) + 0.5)), levels (q − 2^(b−1))·d.
    scale_bits 'f16': one f16 d per 32 (b + 0.5 bits per element); '8': one f16 max per block and
    an 8-bit linear ratio per 32 (rounded up so no group's range is cut: b + 0.25 + 16/B)."""
    N, B = u.shape
    u = u / F32(math.sqrt(B))  # w -> u = T(x)
    g = u.reshape(N, B // 32, 32).astype(F32)
    idx = np.abs(g).argmax(-1)
    mx = np.take_along_axis(g, idx[..., None], -1)[..., 0]
    half = 2 ** (bits - 1)
    d = mx / -half
    if scale_bits == "f16":
        dq = f16(d)
    else:
        am = np.abs(d)
        top = f16(am.max(-1, keepdims=True))
        ratio = np.ceil(np.divide(am, top, out=np.zeros_like(am), where=top > 0) * 255) / 255
        dq = np.sign(d) * ratio * top
    idv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0).astype(F32)
    q = np.minimum(2 * half - 1, np.trunc(g * idv[..., None] + (half + 0.5))).astype(F32)
    q = np.maximum(q, 0)
    return ((q - half) * dq[..., None]).reshape(N, B)


# ----------------------------------------------------------------------------------------------
# Trellis-coded quantization (Marcellin & Fischer): 2^(R+1) levels in 4 subsets D0..D3 (level j in
# D(j mod 4)); a state allows the union of two subsets (D0∪D2 or D1∪D3); one bit per coordinate picks
# the branch, R−1 bits the level inside the subset: R bits per coordinate. The Viterbi encoder finds
# the path of least squared error over the 128 coordinates of a block, from state 0.

TRELLIS = {
    # state: ((subset, next) for branch 0, (subset, next) for branch 1)
    4: [((0, 0), (2, 1)), ((1, 2), (3, 3)), ((2, 0), (0, 1)), ((3, 2), (1, 3))],
    8: [((0, 0), (2, 1)), ((1, 2), (3, 3)), ((2, 4), (0, 5)), ((3, 6), (1, 7)),
        ((2, 0), (0, 1)), ((3, 2), (1, 3)), ((0, 4), (2, 5)), ((1, 6), (3, 7))],
}


# The doubled Lloyd-Max codebook shrunk by 0.9: the best of 0.85–1.0 at 3 and 4 bits on i.i.d. N(0, 1)
# (job_tcq_gaussian), chosen on Gaussian rows, not on the real rows it is scored on.
TCQ_LEVEL_SCALE = F32(0.9)


def tcq_codes(y: np.ndarray, levels: np.ndarray, states: int) -> np.ndarray:
    """Viterbi: the reconstruction r[N, B] on the trellis path of least Σ (y − r)²."""
    N, B = y.shape
    subs = [levels[j::4] for j in range(4)]
    val, dist = [], []
    for s in subs:
        c = encode(y, s)
        v = s[c]
        val.append(v)
        dist.append((y - v) ** 2)
    T = TRELLIS[states]
    cost = np.full((N, states), np.inf, np.float64)
    cost[:, 0] = 0
    back = np.zeros((B, N, states), np.int16)  # previous state * 2 + branch
    for i in range(B):
        new = np.full((N, states), np.inf, np.float64)
        bp = np.zeros((N, states), np.int16)
        for s in range(states):
            for br in range(2):
                sub, nx = T[s][br]
                c = cost[:, s] + dist[sub][:, i]
                better = c < new[:, nx]
                new[:, nx] = np.where(better, c, new[:, nx])
                bp[:, nx] = np.where(better, s * 2 + br, bp[:, nx])
        cost = new
        back[i] = bp
    st = cost.argmin(1)
    r = np.zeros((N, B), F32)
    ar = np.arange(N)
    valarr = np.stack(val)  # (4, N, B)
    for i in range(B - 1, -1, -1):
        p = back[i][ar, st]
        prev, br = p // 2, p % 2
        sub = np.array([T[s][b][0] for s in range(states) for b in range(2)])[prev * 2 + br]
        r[:, i] = valarr[sub, ar, i]
        st = prev
    return r


def tcq_rotated(u: np.ndarray, levels: np.ndarray, states: int, scale: str = "mse") -> np.ndarray:
    N, B = u.shape
    u = u / F32(math.sqrt(B))  # w -> u = T(x)
    n = np.sqrt((u.astype(np.float64) ** 2).sum(-1)).astype(F32)
    ok = n > 0
    y = u * (F32(math.sqrt(B)) / np.where(ok, n, 1))[:, None]
    r = tcq_codes(y, levels, states)
    rr = (r * r).sum(-1)
    if scale == "norm":
        d = n / np.sqrt(np.maximum(rr, 1e-30))
    else:
        d = (u * r).sum(-1) / np.maximum(rr, 1e-30)
    return f16(np.where(ok, d, 0))[:, None] * r


# ----------------------------------------------------------------------------------------------
# Stock ggml quantizers (reference implementations, 32-element blocks, f16 scale).

def q8_0(x: np.ndarray) -> np.ndarray:
    b = x.reshape(-1, 32).astype(F32)
    d = np.abs(b).max(1, keepdims=True) / F32(127)
    idv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.clip(np.sign(b * idv) * np.floor(np.abs(b * idv) + 0.5), -127, 127)
    return (q * f16(d)).reshape(x.shape)


def q4_0(x: np.ndarray) -> np.ndarray:
    b = x.reshape(-1, 32).astype(F32)
    idx = np.abs(b).argmax(1)
    d = b[np.arange(b.shape[0]), idx][:, None] / F32(-8)
    idv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, np.trunc(b * idv + F32(8.5))).astype(F32)
    return ((q - 8) * f16(d)).reshape(x.shape)


# ----------------------------------------------------------------------------------------------
# A codec = how one side (K or V) of the cache stores a row of head_dim values.

@dataclass
class Codec:
    """name, bits per element (everything stored, for this head_dim), x[N, hd] -> x̂, and for keys the
    query the attention actually multiplies (the stock types quantize it to q8_0)."""
    name: str
    bpe: float
    fn: Callable[[np.ndarray], np.ndarray]
    qfn: Callable[[np.ndarray], np.ndarray] | None = None
    family: str = ""
    note: str = ""
    offset: bool = False  # quantize x − μ (μ = calibrated per-(layer, KV head) mean of this side), add μ back
    sink: bool = False    # keep the context's first token (BOS, the attention sink) in f16


def block_of(hd: int) -> int:
    return 128 if hd % 128 == 0 else 64


def in_rotation(hd: int, inner: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    B = block_of(hd)

    sg = signs(B)

    def f(x):
        w = fwht(x.reshape(-1, B).astype(F32) * sg)  # H·D·x, unnormalised, as the crate
        return unrot(inner(w), B).reshape(x.shape)
    return f


def stock_codecs(hd: int, side: str) -> list[Codec]:
    nk = hd & -hd if hd & -hd >= 64 else 64  # largest power of two dividing hd (llama-kv-cache.cpp)
    n = nk if side == "K" else 64
    q8q = lambda q: llama_hadamard(q8_0(llama_hadamard(q, nk)), nk)  # noqa: E731  (Q of a rotated q4_0/q8_0 K)
    rot_q = q8q if side == "K" else None
    return [
        Codec("f16", 16, f16, None, "stock"),
        Codec("q8_0+rot", 8.5, lambda x: llama_hadamard(q8_0(llama_hadamard(x, n)), n), rot_q, "stock"),
        Codec("q4_0", 4.5, q4_0, (lambda q: q8_0(q)) if side == "K" else None, "stock"),
        Codec("q4_0+rot", 4.5, lambda x: llama_hadamard(q4_0(llama_hadamard(x, n)), n), rot_q, "stock"),
    ]


def tbq_codecs(hd: int, fitted: dict | None = None, side: str = "K") -> list[Codec]:
    """Every tbq-family candidate for head_dim hd. `fitted` holds the levels fitted on the calibration
    chunks ({bits: levels}) for the empirical-level candidates."""
    B = block_of(hd)
    hdr0 = 16 / B                  # f16 norm per block
    hdr1 = (16 + 4 * B // 32) / B  # + a 4-bit gain per 32
    out = []
    for b in (2, 3, 4, 5, 6):
        L = mirror(NORMAL_HALF[b])
        for sc in ("norm", "mse") if b == 2 else ("norm", "mse", "unb") if b < 5 else ("norm", "mse") if b == 5 else ("norm",):
            nm = f"tbq{b}_0" + ("" if sc == "norm" else f" d={sc}")
            out.append(Codec(nm, b + hdr0, in_rotation(hd, lambda u, L=L, sc=sc: tbq_rotated(u, L, None, sc)),
                             None, "tbq_0" if sc == "norm" else f"scale:{sc}"))
        if b < 6:
            for sc in ("norm", "mse"):
                nm = f"tbq{b}_1" + ("" if sc == "norm" else f" d={sc}")
                out.append(Codec(nm, b + hdr1, in_rotation(hd, lambda u, L=L, sc=sc: tbq_rotated(u, L, GAINS, sc)),
                                 None, "tbq_1" if sc == "norm" else f"scale:{sc}"))
    for b in (3, 4):
        out.append(Codec(f"uni{b}/32 f16 (rot)", b + 0.5, in_rotation(hd, lambda u, b=b: uniform_rotated(u, b, "f16")),
                         None, "uniform/32", "q4_0's rule (absmax/−2^(b−1)) on our rotated coords, f16 d per 32"))
        if b == 4:
            out.append(Codec(f"uni{b}/32 8b (rot)", b + 0.25 + 16 / B, in_rotation(hd, lambda u, b=b: uniform_rotated(u, b, "8")),
                             None, "uniform/32", "same, f16 max per block + 8-bit ratio per 32"))
        # uniform (midrise) levels in the tbqN_1 structure: f16 norm + 4-bit gains per 32
        step = {3: 0.5860, 4: 0.3352, 5: 0.1881}[b]  # Max's optimal uniform step for N(0,1)
        L = ((np.arange(2 ** b) - (2 ** b - 1) / 2) * step).astype(F32)
        for sc in ("mse",):
            out.append(Codec(f"uni{b}_1 d={sc}", b + hdr1, in_rotation(hd, lambda u, L=L, sc=sc: tbq_rotated(u, L, GAINS, sc)),
                             None, "uniform_1", "uniform levels (Max's step) + tbqN_1 gains"))
    if fitted:
        for b, L in sorted(fitted.items()):
            L = np.asarray(L, F32)
            for sc in ("norm", "mse"):
                out.append(Codec(f"emp{b}_0 d={sc}", b + hdr0, in_rotation(hd, lambda u, L=L, sc=sc: tbq_rotated(u, L, None, sc)),
                                 None, "empirical", f"Lloyd-Max on the calibration chunks' rotated {side}"))
            out.append(Codec(f"emp{b}_1 d=mse", b + hdr1, in_rotation(hd, lambda u, L=L: tbq_rotated(u, L, GAINS, "mse")),
                             None, "empirical", "empirical levels + gains"))
    # Offsets: q·μ is the same for every key of a query (softmax is unchanged), and Σ_t p_t = 1 makes
    # Σ_t p_t (v̂_t − μ) + μ exact for values: only the residual x − μ is quantized, on either side.
    # μ costs 16 bits per head_dim elements per layer and head, once per context: 16/n_ctx bits per
    # element, counted here at the measured context of 512 (→ 0 at long context).
    mu_bits = 16 / 512
    for b in (3, 4, 5) if side == "K" else (3, 4):
        L = mirror(NORMAL_HALF[b])
        out.append(Codec(f"tbq{b}_0 −μ", b + hdr0 + mu_bits, in_rotation(hd, lambda u, L=L: tbq_rotated(u, L, None, "norm")),
                         None, "offset", "tbq_0 of x − μ", offset=True))
        out.append(Codec(f"tbq{b}_1 d=mse −μ", b + hdr1 + mu_bits, in_rotation(hd, lambda u, L=L: tbq_rotated(u, L, GAINS, "mse")),
                         None, "offset", "tbq_1 (MSE d) of x − μ", offset=True))
    # an 8-bit log norm instead of the f16 one: 8/B bits per element less (0.125 at head_dim 64)
    for b in (2, 3, 4, 5):
        L = mirror(NORMAL_HALF[b])
        for off in (False, True):
            t = " −μ" if off else ""
            out.append(Codec(f"tbq{b}_0 d8{t}", b + 8 / B + (mu_bits if off else 0),
                             in_rotation(hd, lambda u, L=L: tbq_rotated(u, L, None, "norm", dbits=8)),
                             None, "8-bit norm", "tbq_0 with an 8-bit log norm" + (" of x − μ" if off else ""), offset=off))
            out.append(Codec(f"tbq{b}_1 d=mse d8{t}", b + (8 + 4 * B // 32) / B + (mu_bits if off else 0),
                             in_rotation(hd, lambda u, L=L: tbq_rotated(u, L, GAINS, "mse", dbits=8)),
                             None, "8-bit norm", "tbq_1 (MSE d) with an 8-bit log norm" + (" of x − μ" if off else ""), offset=off))
    # the compact header of a 64-wide sub-scaled block: one byte of log scale + one of two gains
    # (16/B bits per element of header: 0.25 at B = 64), its gains fitted after the scale
    for b in (3, 4, 5):
        L = mirror(NORMAL_HALF[b])
        for st in (8, 16):
            for off in (False, True) if side == "K" else (False,):
                t = " −μ" if off else ""
                out.append(Codec(f"tbq{b}_1 s8/{st}{t}", b + (8 + 4 * B // 32) / B + (mu_bits if off else 0),
                                 in_rotation(hd, lambda u, L=L, st=st: tbq_rotated_fit(u, L, GAINS, st)),
                                 None, "8-bit scale", f"tbq_1 with an 8-bit log scale (step 2^(1/{st})), gains fitted after it"
                                 + (" of x − μ" if off else ""), offset=off))
    L = mirror(NORMAL_HALF[4]) * TCQ_LEVEL_SCALE
    out.append(Codec("tcq3 8-state −μ", 3 + hdr0 + mu_bits, in_rotation(hd, lambda u, L=L: tcq_rotated(u, L, 8, "mse")),
                     None, "offset", "8-state TCQ of x − μ", offset=True))
    for b in (2, 3):
        for st in (4, 8) if b == 3 else (8,):
            L = mirror(NORMAL_HALF[b + 1]) * TCQ_LEVEL_SCALE
            out.append(Codec(f"tcq{b} {st}-state", b + hdr0, in_rotation(hd, lambda u, L=L, st=st: tcq_rotated(u, L, st, "mse")),
                             None, "tcq", f"{st}-state TCQ, {2 ** (b + 1)} Gaussian Lloyd-Max levels ×{TCQ_LEVEL_SCALE} in 4 cosets, MSE d"))
    # the attention sink (token 0, BOS: most of the attention mass in many heads) kept in f16: one
    # token of the context, (16 − bpe)/n_ctx bits per element, counted at n_ctx = 512
    base = {cd.name: cd for cd in out}
    for nm in (["tbq4_0", "tbq3_1 d=mse −μ", "tbq4_1 d=mse −μ", "tbq5_0 −μ", "tbq4_0 d8 −μ",
                "tbq3_1 d=mse d8 −μ", "tbq4_1 d=mse d8 −μ", "tbq5_1 d=mse d8 −μ", "tbq5_1 d=mse −μ", "tcq3 8-state −μ",
                "tbq3_1 s8/8 −μ", "tbq4_1 s8/8 −μ", "tbq5_1 s8/8 −μ"]
               if side == "K" else
               ["tbq3_0", "tbq3_1 d=mse", "tbq4_0", "tbq3_0 −μ", "tbq3_0 d8", "tbq4_0 d8",
                "tbq3_1 d=mse d8", "tbq4_1 d=mse d8", "tcq3 8-state", "tcq2 8-state", "tbq2_1 d=mse d8",
                "tbq3_1 s8/8", "tbq4_1 s8/8", "tbq5_1 s8/8"]):
        cd = base[nm]
        out.append(Codec(nm + " +sink", cd.bpe + (16 - cd.bpe) / 512, cd.fn, None, "sink f16",
                         cd.note + "; token 0 in f16", offset=cd.offset, sink=True))
    return out


# ----------------------------------------------------------------------------------------------
# Reading the capture.

def read_capture(path: Path):
    """{'K'|'V'|'Q': array[chunk, layer, token, head, hd]} from capture-kv's records: the last record
    of each (kind, layer, chunk) that is not a permuted view is what reaches the cache/attention (the
    roped Q and K, or a 2-D view [n_embd_gqa, tokens] of the same data; "(permuted)" views hold the
    same values in another order and are skipped)."""
    raw = np.memmap(path, np.uint8, "r")
    off, last, names, hds = 0, {}, {}, set()
    size = raw.shape[0]
    while off < size:
        name = bytes(raw[off:off + 64]).split(b"\0")[0].decode()
        kind, layer, chunk, _ = np.frombuffer(raw, np.int32, 4, off + 64)
        ne = np.frombuffer(raw, np.int64, 3, off + 80).copy()
        n = int(np.prod(ne))
        if kind == 0 and ne[2] > 1:
            hds.add(int(ne[0]))  # a 3-D K record [hd, heads, tokens]
        if "(permuted)" not in name:
            last[(int(kind), int(layer), int(chunk))] = (off + 104, ne)
            names.setdefault((int(kind), int(layer)), []).append(f"{name} {list(map(int, ne))}")
        off += 104 + 4 * n
    hd = min(hds)
    T = max(int(ne[2]) if ne[2] > 1 else int(ne[1]) for (_, ne) in last.values())
    chunks = sorted({c for (_, _, c) in last})
    layers = sorted({l for (_, l, _) in last})
    out = {}
    for kind, kn in ((0, "K"), (1, "V"), (2, "Q")):
        arrs = []
        for c in chunks:
            per = []
            for l in layers:
                o, ne = last[(kind, l, c)]
                a = np.frombuffer(raw, F32, int(np.prod(ne)), o)
                per.append(np.array(a).reshape(T, -1, hd))  # ne0 fastest: [tokens, heads, hd]
            arrs.append(np.stack(per))
        out[kn] = np.stack(arrs)
    return out, {k: v[-1] for k, v in names.items()}


def synthetic_capture(chunks=3, layers=4, T=512, hq=4, hkv=2, hd=128, seed=0):
    """Gaussian stand-in with the shapes of a capture (and an outlier channel and a key mean, as real
    keys have): tests the plumbing, says nothing about real rows."""
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((chunks, layers, T, hkv, hd)).astype(F32)
    K[..., 3] *= 6
    K += 0.8 * rng.standard_normal((1, layers, 1, hkv, hd)).astype(F32)
    V = rng.standard_normal((chunks, layers, T, hkv, hd)).astype(F32)
    Q = rng.standard_normal((chunks, layers, T, hq, hd)).astype(F32)
    return {"K": K, "V": V, "Q": Q}


# ----------------------------------------------------------------------------------------------
# Metrics.

SCORED_FROM = 256  # llama-perplexity scores (and KLD compares) the second half of each 512 chunk


class Lab:
    """The held-out rows of one model and the f16 reference attention, cached once."""

    def __init__(self, cap: dict, calib: int):
        self.hd = cap["K"].shape[-1]
        self.hq, self.hkv = cap["Q"].shape[3], cap["K"].shape[3]
        self.group = self.hq // self.hkv
        self.cal = {k: v[:calib] for k, v in cap.items()}
        self.ev = {k: v[calib:] for k, v in cap.items()}
        C, L, T = self.ev["K"].shape[:3]
        self.C, self.L, self.T = C, L, T
        self.scale = 1 / math.sqrt(self.hd)
        self.mask = np.tril(np.ones((T, T), bool))[SCORED_FROM:]
        # reference: f16 Q, K, V (the f16/f16 base run)
        self.ref = {}
        for l in range(L):
            for c in range(C):
                q, k, v = (f16(self.ev[s][c, l]) for s in ("Q", "K", "V"))
                P = self.softmax(q, k)
                self.ref[(c, l)] = (P, self.mix(P, v))
        self.cache = {}  # (side, codec name) -> x̂ of the held-out rows, for codecs used again
        # per-(layer, KV head) mean of the CALIBRATION chunks' K and V, stored as f16: [layer, hkv, hd]
        self.mu = {s: f16(self.cal[s].astype(np.float64).mean(axis=(0, 2))) for s in ("K", "V")}
        self.exact_scores = {}

    def scores(self, q, k):
        """q·k for the scored queries: [hq, scored queries, keys] (query head h reads KV head h // group)."""
        kk = k[:, np.repeat(np.arange(self.hkv), self.group)].astype(F32)
        return np.matmul(q[SCORED_FROM:].astype(F32).transpose(1, 0, 2), kk.transpose(1, 2, 0))

    def mix(self, P, v):
        """Σ_s P[h, t, s] v[s, kv(h)]: the attention output [scored queries, hq, hd]."""
        vv = v[:, np.repeat(np.arange(self.hkv), self.group)].astype(F32)
        return np.matmul(P, vv.transpose(1, 0, 2)).transpose(1, 0, 2)

    def softmax(self, q, k):
        """Attention probabilities [hq, scored queries, keys] of q [T, hq, hd] against k [T, hkv, hd]."""
        S = self.scores(q, k) * F32(self.scale)
        S = np.where(self.mask[None], S, -np.inf)
        S = S - S.max(-1, keepdims=True)
        P = np.exp(S)
        return P / P.sum(-1, keepdims=True)

    def quantize(self, codec: Codec | None, side: str, layers=None, keep=False):
        """x̂ of the held-out rows of `side`, layer by layer ({(c, l): x̂ [T, h, hd]}); `keep` caches it."""
        if codec is not None and (side, codec.name) in self.cache:
            full = self.cache[(side, codec.name)]
            return full if layers is None else {k: v for k, v in full.items() if k[1] in layers}
        out = {}
        for l in layers if layers is not None else range(self.L):
            for c in range(self.C):
                x = self.ev[side][c, l]
                if codec is None:
                    out[(c, l)] = f16(x)
                elif codec.offset:
                    mu = self.mu[side][l][None]
                    out[(c, l)] = codec.fn((x - mu).reshape(-1, self.hd)).reshape(x.shape) + mu
                else:
                    out[(c, l)] = codec.fn(x.reshape(-1, self.hd)).reshape(x.shape)
                if codec is not None and codec.sink:
                    out[(c, l)] = out[(c, l)].copy()
                    out[(c, l)][0] = f16(x[0])
        if keep and layers is None and codec is not None:
            self.cache[(side, codec.name)] = out
        return out

    def rel_mse(self, side, xh):
        num = sum(float(((xh[key] - self.ev[side][key]) ** 2).sum()) for key in xh)
        den = sum(float((self.ev[side][key] ** 2).sum()) for key in xh)
        return num / den

    def rel_mse_layers(self, side, xh):
        out = {}
        for (c, l) in xh:
            e = float(((xh[(c, l)] - self.ev[side][c, l]) ** 2).sum())
            n = float((self.ev[side][c, l] ** 2).sum())
            a = out.setdefault(l, [0.0, 0.0])
            a[0] += e
            a[1] += n
        return {l: a[0] / a[1] for l, a in out.items()}

    def logit_rms(self, codec: Codec, kh):
        """RMS of q·k̂ − q·k (over √d) for the real causal pairs of the scored queries."""
        num, cnt = 0.0, 0
        for (c, l), k in kh.items():
            q = self.ev["Q"][c, l]
            qe = q if codec.qfn is None else codec.qfn(q.reshape(-1, self.hd)).reshape(q.shape)
            if (c, l) not in self.exact_scores:
                self.exact_scores[(c, l)] = self.scores(q, self.ev["K"][c, l])
            e = (self.scores(qe, k) - self.exact_scores[(c, l)]) * self.scale
            m = np.broadcast_to(self.mask[None], e.shape)
            num += float((e[m] ** 2).sum())
            cnt += int(m.sum())
        return math.sqrt(num / cnt)

    def attention(self, kcodec: Codec | None, kh, vh, per_layer=False, kcodec_of=None):
        """(c): relative output error Σ||Ô − O||²/Σ||O||² and mean KL(P || P̂) of the scored queries,
        per layer, or pooled (the mean of the layers' relative errors; KL over every query row).
        kh/vh: {(chunk, layer): x̂} (None = f16); kcodec_of(layer) gives the K codec of a layer
        (its query path) when layers use different ones."""
        res = {}
        for (c, l), (P, O) in self.ref.items():
            if (kh is not None and (c, l) not in kh) or (vh is not None and (c, l) not in vh):
                continue
            if kcodec_of is not None:
                kcodec = kcodec_of(l)
            if kh is None:
                Ph = P
            else:
                q = self.ev["Q"][c, l]
                qe = f16(q) if kcodec is None or kcodec.qfn is None else kcodec.qfn(q.reshape(-1, self.hd)).reshape(q.shape)
                Ph = self.softmax(qe, kh[(c, l)])
            v = f16(self.ev["V"][c, l]) if vh is None else vh[(c, l)]
            Oh = self.mix(Ph, v)
            with np.errstate(divide="ignore", invalid="ignore"):
                kl = np.where(P > 0, P * (np.log(np.maximum(P, 1e-38)) - np.log(np.maximum(Ph, 1e-38))), 0).sum(-1)
            a = res.setdefault(l, [0.0, 0.0, 0.0, 0])
            a[0] += float(((Oh - O) ** 2).sum())
            a[1] += float((O ** 2).sum())
            a[2] += float(kl.sum())
            a[3] += kl.size
        if per_layer:
            return {l: (a[0] / a[1], a[2] / a[3]) for l, a in sorted(res.items())}
        # layers weighted equally (each layer's relative error, then the mean): a layer's output
        # error enters the residual stream on the scale of that layer's own output.
        rel = float(np.mean([a[0] / a[1] for a in res.values()]))
        kl = sum(a[2] for a in res.values()) / sum(a[3] for a in res.values())
        return rel, kl


def excess_kurtosis(x: np.ndarray, B: int) -> float:
    u = rot(x.reshape(-1, B), B)
    n = np.linalg.norm(u, axis=1, keepdims=True)
    z = (u / np.where(n == 0, 1, n) * math.sqrt(B)).ravel().astype(np.float64)
    return float((z ** 4).mean() / (z ** 2).mean() ** 2 - 3)


def lloyd_empirical(samples: np.ndarray, bits: int, iters: int = 200) -> np.ndarray:
    """Symmetric Lloyd-Max levels for the empirical distribution of |y| (y = √B·T(x)_i/||x||),
    started from the Gaussian codebook: the levels a width would use if fitted to real rotated rows."""
    a = np.sort(np.abs(samples.astype(np.float64)))
    cs = np.concatenate([[0], np.cumsum(a)])
    h = np.array(NORMAL_HALF[bits], np.float64)
    for _ in range(iters):
        t = (h[:-1] + h[1:]) / 2
        idx = np.concatenate([[0], np.searchsorted(a, t), [len(a)]])
        cnt = np.diff(idx)
        new = np.where(cnt > 0, (cs[idx[1:]] - cs[idx[:-1]]) / np.maximum(cnt, 1), h)
        if np.abs(new - h).max() < 1e-9:
            h = new
            break
        h = new
    return mirror(h.astype(F32))


# ----------------------------------------------------------------------------------------------
# Jobs.

def job_golden() -> dict:
    """The numpy tbq quantizer reproduces the committed golden dequantized floats (src/reference.rs),
    so every tbq number of the lab is the format's own."""
    gd = REPO / "tests/data/golden"
    x = np.fromfile(gd / "input.f32", F32).reshape(-1, 128)
    x = np.where(np.isfinite(x), x, 0).astype(F32)
    res = {}
    for name, b, g in (("tbq3_0", 3, False), ("tbq4_0", 4, False), ("tbq5_0", 5, False), ("tbq6_0", 6, False),
                       ("tbq3_1", 3, True), ("tbq4_1", 4, True), ("tbq5_1", 5, True)):
        ref = np.fromfile(gd / f"{name}.dequant.f32", F32).reshape(-1, 128)
        with np.errstate(all="ignore"):
            got = unrot(tbq_rotated(fwht(x * signs(128)), mirror(NORMAL_HALF[b]), GAINS if g else None, "norm"), 128)
        fin = np.isfinite(got).all(1) & (np.abs(x).max(1) < 1e5) & (np.abs(x).max(1) > 1e-15)
        diff = np.abs(got - ref)[fin].max() / np.abs(ref[fin]).max()
        res[name] = {"blocks": int(fin.sum()), "max_rel_diff": float(diff)}
    return res


def job_kurtosis(lab: Lab) -> dict:
    B = block_of(lab.hd)
    return {s: excess_kurtosis(lab.ev[s], B) for s in ("K", "V", "Q")}


def job_fit_levels(lab: Lab) -> dict:
    """Empirical Lloyd-Max levels per side from the CALIBRATION chunks only."""
    B = block_of(lab.hd)
    fitted = {}
    for s in ("K", "V"):
        x = lab.cal[s].reshape(-1, B)
        x = x[np.random.default_rng(1).permutation(len(x))[:200000]]
        u = rot(x, B)
        n = np.linalg.norm(u, axis=1, keepdims=True)
        y = (u / np.where(n == 0, 1, n) * math.sqrt(B)).ravel()
        fitted[s] = {b: lloyd_empirical(y, b) for b in (3, 4, 5)}
    return fitted


MENU = ["tbq3_0", "tbq3_1", "tbq4_0", "tbq4_1", "tbq5_0", "tbq5_1", "tbq6_0", "q8_0+rot"]
# the new candidates the allocation may also use per layer
ALLOC_EXTRA = {"K": ["tbq3_1 d=mse −μ", "tbq4_1 d=mse −μ", "tbq5_1 d=mse −μ", "tbq4_0 −μ", "tbq5_0 −μ",
                     "tbq3_1 d=mse d8 −μ", "tbq4_1 d=mse d8 −μ", "tbq5_1 d=mse d8 −μ", "tbq4_0 d8 −μ", "tbq5_0 d8 −μ",
                     "tbq3_1 d=mse d8 −μ +sink", "tbq4_1 d=mse d8 −μ +sink", "tbq5_1 d=mse d8 −μ +sink", "tbq4_0 d8 −μ +sink"],
               "V": ["tbq3_1 d=mse", "tbq4_1 d=mse", "tbq5_1 d=mse", "tbq3_1 d=mse −μ", "tbq4_1 d=mse −μ",
                     "tbq3_0 d8", "tbq3_1 d=mse d8", "tbq4_0 d8", "tbq4_1 d=mse d8", "tbq5_0 d8",
                     "tbq2_0 d8", "tbq2_1 d=mse", "tbq2_1 d=mse d8",
                     "tbq3_1 d=mse d8 +sink", "tbq4_1 d=mse d8 +sink", "tbq3_0 d8 +sink", "tbq2_1 d=mse d8 +sink"]}
PAIR_CODECS = {"q4_0+rot", "q4_0", "tbq3_0", "tbq4_0", "tbq5_0", "tbq6_0", "tbq3_1", "tbq4_1", "tbq5_1", "q8_0+rot"}


def job_candidates(lab: Lab, fitted: dict, log, only: str = "") -> dict:
    """(a), (b), (c) for every candidate on each side, the other side at f16; (c) also per layer (the
    sensitivity table and the allocation use it)."""
    out = {}
    for side in ("K", "V"):
        cands = stock_codecs(lab.hd, side) + tbq_codecs(lab.hd, fitted[side], side)
        if only:
            import re
            cands = [cd for cd in cands if re.search(only, cd.name)]
        for cd in cands:
            t0 = time.time()
            xh = lab.quantize(cd, side, keep=cd.name in PAIR_CODECS or cd.name in MENU or cd.name in ALLOC_EXTRA[side])
            row = {"bpe": cd.bpe, "family": cd.family, "note": cd.note, "rel_mse": lab.rel_mse(side, xh)}
            if side == "K":
                row["logit_rms"] = lab.logit_rms(cd, xh)
                per = lab.attention(cd, xh, None, per_layer=True)
            else:
                per = lab.attention(None, None, xh, per_layer=True)
            row["layers_out_rel"] = {l: v[0] for l, v in per.items()}
            row["out_rel"] = float(np.mean([v[0] for v in per.values()]))
            if side == "K":
                row["layers_attn_kl"] = {l: v[1] for l, v in per.items()}
                row["attn_kl"] = float(np.mean([v[1] for v in per.values()]))  # layers hold equal query rows
            out.setdefault(side, {})[cd.name] = row
            log(f"{side} {cd.name:24s} {cd.bpe:6.3f} b  mse {row['rel_mse']:.5f}  out {row['out_rel']:.6f}"
                + (f"  logit {row['logit_rms']:.4f}  kl {row['attn_kl']:.6f}" if side == "K" else "")
                + f"  ({time.time() - t0:.1f}s)")
    return out


def codec_by_name(lab: Lab, side: str, name: str, fitted=None) -> Codec:
    nm = {"q8_0": "q8_0+rot", "q4_0r": "q4_0+rot"}.get(name, name)
    fitted = fitted or getattr(lab, "fitted", None)
    for cd in stock_codecs(lab.hd, side) + tbq_codecs(lab.hd, (fitted or {}).get(side), side):
        if cd.name == nm:
            return cd
    raise KeyError(name)


def job_pairs(lab: Lab, kld_json: Path | None, log) -> dict:
    """(c) for the K/V pairs of the measured KLD matrix, and the rank correlation with it."""
    pairs = {}
    measured = {}
    if kld_json and kld_json.is_file():
        for r in json.loads(kld_json.read_text())["results"]:
            if r.get("kld") and r.get("ok"):
                k, v, ar = r["config"]["k"], r["config"]["v"], r["config"]["attn_rot"]
                kn = k if k.startswith("tbq") or k == "f16" else (f"{k}+rot" if ar else k)
                vn = v if v.startswith("tbq") or v == "f16" else (f"{v}+rot" if ar else v)
                measured[(kn, vn)] = r["kld"]["kld_mean"] if isinstance(r["kld"], dict) else r["kld"]
    if not measured:
        measured = {(k, v): None for k, v in (("q8_0+rot", "q8_0+rot"), ("q4_0+rot", "q4_0+rot"), ("q4_0", "q4_0"),
                                               ("tbq4_0", "tbq4_0"), ("tbq4_0", "tbq3_0"), ("tbq5_1", "tbq3_1"))}
    for (kn, vn), kld in measured.items():
        try:
            kc, vc = codec_by_name(lab, "K", kn), codec_by_name(lab, "V", vn)
        except KeyError:
            log(f"pair {kn}/{vn}: no codec, skipped")
            continue
        rel, kl = lab.attention(kc, lab.quantize(kc, "K"), lab.quantize(vc, "V"))
        pairs[f"{kn}/{vn}"] = {"bpe": (kc.bpe + vc.bpe) / 2, "measured_kld": kld, "out_rel": rel, "attn_kl": kl}
        log(f"pair {kn}/{vn}: out_rel {rel:.6f} kl {kl:.6f} measured {kld}")
    rank = {}
    got = [(p["measured_kld"], p["out_rel"], p["attn_kl"]) for p in pairs.values() if p["measured_kld"] is not None]
    if len(got) >= 4:
        m, o, k = (np.array(z) for z in zip(*got))
        rank = {"pairs": len(got), "spearman_out_rel": spearman(m, o), "spearman_attn_kl": spearman(m, k),
                "pearson_log_out_rel": float(np.corrcoef(np.log(m), np.log(o))[0, 1])}
    return {"pairs": pairs, "rank": rank}


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def job_predictor(cands: dict, pairs: dict, kfeat: str = "out_rel") -> dict:
    """KLD ≈ c + a·E_K + b·E_V, least squares over the measured pairs, with E_K, E_V the (c) output
    errors of the pair's K codec alone and V codec alone (job_candidates). It turns (c) into a
    predicted KLD for pairs never run, and its weights a, b say how much more a key error costs than a
    value error on this model. Without measured pairs: a = b = 1, c = 0 (a plain sum)."""
    rows = [(p["measured_kld"], cands["K"][n.split("/")[0]][kfeat], cands["V"][n.split("/")[1]]["out_rel"])
            for n, p in pairs.get("pairs", {}).items() if p["measured_kld"] is not None]
    if len(rows) < 4:
        return {"a": 1.0, "b": 1.0, "c": 0.0, "fitted": False}
    y, ek, ev = (np.array(z) for z in zip(*rows))
    A = np.stack([np.ones_like(ek), ek, ev], 1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    pred = A @ coef
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {"kfeat": kfeat, "c": float(coef[0]), "a": float(coef[1]), "b": float(coef[2]), "r2": float(r2), "pairs": len(rows),
            "max_abs_err": float(np.abs(y - pred).max()), "fitted": True,
            "spearman_pred": spearman(y, pred)}


def job_best_pairs(lab: Lab, cands: dict, pred: dict, log, top: int = 4) -> dict:
    """For the bars (≤ 4.25 bits: KLD ≤ 0.5× q4_0+rot; ≤ 3.5 bits: ≤ 1.0×): every K candidate × V
    candidate whose average bits fit, scored by the predictor (c + a·E_K + b·E_V); the best `top`
    of each budget are then run with both sides quantized together, as the check that the errors add."""
    a, b, c0 = pred["a"], pred["b"], pred["c"]
    score = lambda kn, vn: c0 + a * cands["K"][kn]["out_rel"] + b * cands["V"][vn]["out_rel"]  # noqa: E731
    ref = score("q4_0+rot", "q4_0+rot")
    out = {"reference_q4_0+rot": ref}
    for budget, bar in ((4.25, 0.5), (3.5, 1.0)):
        allp = []
        for kn, kr in cands["K"].items():
            for vn, vr in cands["V"].items():
                bits = (kr["bpe"] + vr["bpe"]) / 2
                if bits <= budget + 1e-9:
                    allp.append((score(kn, vn), kn, vn, bits))
        allp.sort()
        best = []
        for sc, kn, vn, bits in allp[:top]:
            kc, vc = codec_by_name(lab, "K", kn, lab.fitted), codec_by_name(lab, "V", vn, lab.fitted)
            rel, kl = lab.attention(kc, lab.quantize(kc, "K"), lab.quantize(vc, "V"))
            best.append({"K": kn, "V": vn, "bpe": bits, "pred": sc, "pred_ratio": sc / ref,
                         "joint_out_rel": rel, "joint_attn_kl": kl,
                         "sum_out_rel": cands["K"][kn]["out_rel"] + cands["V"][vn]["out_rel"]})
            log(f"best pair ≤{budget}: {kn}/{vn} {bits:.4g} b pred {sc:.4g} ({sc / ref:.3f}× q4_0+rot) joint out {rel:.5f}")
        out[str(budget)] = {"bar_ratio": bar, "best": best, "candidates_scored": len(allp)}
    return out


def job_tcq_gaussian(log) -> dict:
    """TCQ and scalar Lloyd-Max on i.i.d. N(0,1) blocks: checks the trellis against the literature
    (8-state TCQ ≈ 1 dB over Lloyd-Max at 2–3 bits) before trusting it on real rows."""
    y = np.random.default_rng(3).standard_normal((4000, 128)).astype(F32)
    out = {}
    for b in (2, 3, 4):
        lm = mirror(NORMAL_HALF[b])
        e_lm = float(((y - lm[encode(y, lm)]) ** 2).mean())
        row = {"lloyd_max": e_lm}
        for st in (4, 8):
            L2 = mirror(NORMAL_HALF[b + 1])
            for a in (0.85, 0.9, 0.95, 1.0):
                r = tcq_codes(y, L2 * F32(a), st)
                e = float(((y - r) ** 2).mean())
                row[f"tcq{st} x{a}"] = e
        out[b] = row
        log(f"gaussian {b} bits: {row}")
    return out


def job_sensitivity(lab: Lab, cands: dict, log, weights=(1.0, 1.0), select: dict | None = None) -> dict:
    """Per layer: the output error (c) when only that layer's K (or V) is quantized with each codec
    of the menus (from job_candidates); then the per-layer allocation that minimises
    Σ_layers (a·K error + b·V error) (a, b: the predictor's weights) at an average of 4.25 and 3.5
    bits per element over K and V (equally many elements), by exact dynamic programming over the
    codecs' bit costs (multiples of 1/32 bit). Every layer's relative output error counts the same:
    a proxy (a layer's error reaches the logits through the rest of the network, not run here)."""
    menus = {"K": MENU + [m for m in ALLOC_EXTRA["K"] if m in cands["K"]],
             "V": MENU + [m for m in ALLOC_EXTRA["V"] if m in cands["V"]]}
    wt = {"K": weights[0], "V": weights[1]}
    err = {side: {nm: {int(l): e for l, e in cands[side][nm]["layers_out_rel"].items()} for nm in menus[side]}
           for side in ("K", "V")}  # (layer keys are strings after a JSON round trip)
    held_out = err
    if select is not None:  # choose on these per-layer errors (the calibration chunk), report held-out ones
        err = select
    bpe = {side: {nm: cands[side][nm]["bpe"] for nm in menus[side]} for side in ("K", "V")}
    L = lab.L
    items = [(s, l) for s in ("K", "V") for l in range(L)]
    # costs in 1/32 bit, rounded UP (the sink variants' (16 − bpe)/512 is not a multiple): the budget
    # holds for the true bits too, which are what the result reports
    units = {side: {nm: math.ceil(bpe[side][nm] * 32 - 1e-9) for nm in menus[side]} for side in ("K", "V")}
    alloc = {}
    for budget in (4.25, 3.5):
        cap = int(math.floor(budget * 32 * len(items) + 1e-9))
        best = {0: (0.0, [])}
        for (sd, l) in items:
            nxt = {}
            for used, (e, ch) in best.items():
                for nm in menus[sd]:
                    u2 = used + units[sd][nm]
                    if u2 > cap:
                        continue
                    e2 = e + wt[sd] * err[sd][nm][l]
                    if u2 not in nxt or e2 < nxt[u2][0]:
                        nxt[u2] = (e2, ch + [nm])
            keep, bestE = {}, math.inf  # drop states that use more bits for more error
            for u2 in sorted(nxt):
                if nxt[u2][0] < bestE:
                    keep[u2] = nxt[u2]
                    bestE = nxt[u2][0]
            best = keep
        u, (e, ch) = min(best.items(), key=lambda kv: kv[1][0])
        e_held = sum(wt[sd] * held_out[sd][nm][l] for (sd, l), nm in zip(items, ch))
        true_bits = sum(bpe[sd][nm] for (sd, _), nm in zip(items, ch)) / len(items)
        alloc[str(budget)] = {"avg_bits": true_bits, "weighted_err_selection": e / L,
                              "weighted_err": e_held / L, "K": ch[:L], "V": ch[L:]}
        log(f"allocation {budget}: avg {true_bits:.4f} K {ch[:L]} V {ch[L:]}")
    return {"menus": menus, "weights": weights, "bpe": bpe, "err": held_out, "alloc": alloc,
            "selected_on": "held-out chunks (in-sample)" if select is None else "calibration chunk"}


def job_select_on_calibration(lab: Lab, menus: dict, log) -> dict:
    """Per-layer (c) errors of the allocation menus on the CALIBRATION chunk, so the allocation is
    chosen on rows it is not scored on (μ and the empirical levels come from that chunk too)."""
    sub = {k: np.concatenate([v[: lab.cal["K"].shape[0]]] * 2) for k, v in
           {"K": lab.cal["K"], "V": lab.cal["V"], "Q": lab.cal["Q"]}.items()}
    cl = Lab(sub, lab.cal["K"].shape[0])  # calibration rows as its "held-out" rows
    cl.fitted = lab.fitted
    out = {"K": {}, "V": {}}
    for side in ("K", "V"):
        for nm in menus[side]:
            cd = codec_by_name(cl, side, nm)
            xh = cl.quantize(cd, side)
            per = cl.attention(cd, xh, None, per_layer=True) if side == "K" else cl.attention(None, None, xh, per_layer=True)
            out[side][nm] = {l: v[0] for l, v in per.items()}
        log(f"calibration-chunk sensitivity {side} done")
    return out


def job_eval_alloc(lab: Lab, sens: dict, fitted, log) -> dict:
    """(c) of each allocation with K and V quantized together (the query path follows each layer's
    K type: stock q8_0 keys quantize it, tbq keys do not)."""
    out = {}
    for budget, a in sens["alloc"].items():
        kc = {l: codec_by_name(lab, "K", a["K"][l], fitted) for l in range(lab.L)}
        kh, vh = {}, {}
        for l in range(lab.L):
            kh.update(lab.quantize(kc[l], "K", [l]))
            vh.update(lab.quantize(codec_by_name(lab, "V", a["V"][l], fitted), "V", [l]))
        res = lab.attention(None, kh, vh, per_layer=True, kcodec_of=lambda l: kc[l])
        rel = float(np.mean([r[0] for r in res.values()]))
        kl = float(np.mean([r[1] for r in res.values()]))
        out[budget] = {"avg_bits": a["avg_bits"], "out_rel": rel, "attn_kl": kl}
        log(f"allocation {budget} evaluated: {out[budget]}")
    return out


# ----------------------------------------------------------------------------------------------
# Output.

def write_table(out: Path, model: str, res: dict):
    lines = [f"# Codec lab — {model}", "", res["source"], "",
             "Held-out rows: " + res["rows"], "",
             "Excess kurtosis of rotated, normalised coordinates (0 = Gaussian): "
             + ", ".join(f"{k} {v:+.3f}" for k, v in res["kurtosis"].items()), "",
             "(a) rel MSE ||x̂−x||²/||x||²; (b) RMS of q·(k̂−k)/√d over real causal pairs; (c) attention output "
             "relative squared error (mean over layers) and mean KL(P‖P̂) of the attention distribution, "
             "the other side at f16. bpe = bits per element, everything stored. ×q4r = (c) output error "
             "relative to q4_0+rot on the same side.", ""]
    for side in ("K", "V"):
        rows = res["candidates"][side]
        ref = rows["q4_0+rot"]["out_rel"]
        lines += [f"## {side} side", "",
                  "| candidate | family | bpe | (a) rel MSE | " + ("(b) logit RMS | (c) out rel err | (c) attn KL | ×q4r |" if side == "K" else "(c) out rel err | ×q4r |"),
                  "|---|---|---|---|" + ("---|---|---|---|" if side == "K" else "---|---|")]
        for nm, r in sorted(rows.items(), key=lambda kv: (kv[1]["bpe"], kv[1]["out_rel"])):
            s = f"| {nm} | {r['family']} | {r['bpe']:.4g} | {r['rel_mse']:.5f} | "
            if side == "K":
                s += f"{r['logit_rms']:.4f} | {r['out_rel']:.6f} | {r['attn_kl']:.6f} | {r['out_rel'] / ref:.3f} |"
            else:
                s += f"{r['out_rel']:.6f} | {r['out_rel'] / ref:.3f} |"
            lines.append(s)
        lines.append("")
    pr = res.get("pairs", {})
    if pr.get("pairs"):
        lines += ["## Pairs of the measured KLD matrix: does (c) rank them as the KLD does?", "",
                  "| K/V | bpe | measured mean KLD | (c) out rel err | (c) attn KL |", "|---|---|---|---|---|"]
        for nm, p in sorted(pr["pairs"].items(), key=lambda kv: kv[1]["measured_kld"] or 0):
            mk = f"{p['measured_kld']:.4g}" if p["measured_kld"] is not None else "—"
            lines.append(f"| {nm} | {p['bpe']:.4g} | {mk} | {p['out_rel']:.6f} | {p['attn_kl']:.6f} |")
        if pr.get("rank"):
            r = pr["rank"]
            lines += ["", f"Spearman rank correlation over {r['pairs']} pairs: measured KLD vs (c) output error "
                      f"{r['spearman_out_rel']:.3f}, vs (c) attention KL {r['spearman_attn_kl']:.3f}; Pearson of the logs "
                      f"(KLD vs output error) {r['pearson_log_out_rel']:.3f}."]
        lines.append("")
    for side in ("K", "V"):
        X = res["candidates"][side]
        offs = [(nm, nm[: -len(" −μ")]) for nm in X if nm.endswith(" −μ")]
        if not offs:
            continue
        lines += [f"## {side}: subtract the calibrated per-(layer, KV head) mean μ "
                  + ("(q·μ is the same for every key: softmax unchanged)" if side == "K" else "(Σ p_t = 1: the output is Σ p_t (v̂_t − μ) + μ, exact)"), "",
                  f"Share of {side} energy in the per-(layer, head) mean (calibration chunk): {res['mean_energy_share'][side]:.3f}. "
                  "μ is stored once per context in f16: 16/n_ctx bits per element, counted at n_ctx = 512.", "",
                  "| codec | bpe | (a) rel MSE | " + ("(b) logit RMS | (c) out rel err | (c) attn KL | same without μ: (b) / (c) out / KL |" if side == "K" else "(c) out rel err | same without μ: (a) / (c) out |"),
                  "|---|---|---|---|" + ("---|---|---|" if side == "K" else "---|")]
        for nm, base in offs:
            r, p0 = X[nm], X.get(base)
            if side == "K":
                tail = f"{p0['logit_rms']:.4f} / {p0['out_rel']:.6f} / {p0['attn_kl']:.6f}" if p0 else "—"
                lines.append(f"| {nm} | {r['bpe']:.4g} | {r['rel_mse']:.5f} | {r['logit_rms']:.4f} | {r['out_rel']:.6f} | {r['attn_kl']:.6f} | {tail} |")
            else:
                tail = f"{p0['rel_mse']:.5f} / {p0['out_rel']:.6f}" if p0 else "—"
                lines.append(f"| {nm} | {r['bpe']:.4g} | {r['rel_mse']:.5f} | {r['out_rel']:.6f} | {tail} |")
        lines.append("")
    pd = res.get("predictor")
    if pd:
        if pd.get("fitted"):
            lines += ["## Predicted KLD from (c)", "",
                      f"KLD ≈ {pd['c']:.4g} + {pd['a']:.4g}·E_K + {pd['b']:.4g}·E_V over {pd['pairs']} measured pairs "
                      f"(E = (c) output error of that side alone): R² {pd['r2']:.3f}, largest miss {pd['max_abs_err']:.4g}, "
                      f"Spearman of the prediction {pd['spearman_pred']:.3f}."]
            p2 = res.get("predictor_attn_kl")
            if p2 and p2.get("fitted"):
                lines += ["", f"The same fit with the key side's (c) attention KL instead of its output error: KLD ≈ "
                          f"{p2['c']:.4g} + {p2['a']:.4g}·KL_K + {p2['b']:.4g}·E_V, R² {p2['r2']:.3f}, largest miss "
                          f"{p2['max_abs_err']:.4g}, Spearman {p2['spearman_pred']:.3f}."]
            lines.append("")
        else:
            lines += ["## Pair score from (c)", "", "No measured KLD for this model: score = E_K + E_V (both sides' (c) "
                      "output errors), compared with the q4_0+rot pair's.", ""]
    bp = res.get("best_pairs")
    if bp:
        lines += ["## Best pairs under the bars", "",
                  f"Score of q4_0+rot/q4_0+rot: {bp['reference_q4_0+rot']:.5g}. Bars: ≤ 4.25 bits at ≤ 0.5×, ≤ 3.5 bits at ≤ 1.0×.", "",
                  "| budget | K | V | bpe | score | × q4_0+rot | joint (c) out rel err | joint (c) attn KL | E_K + E_V |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for budget in ("4.25", "3.5"):
            for r in bp[budget]["best"]:
                lines.append(f"| ≤{budget} | {r['K']} | {r['V']} | {r['bpe']:.4g} | {r['pred']:.5g} | {r['pred_ratio']:.3f} | "
                             f"{r['joint_out_rel']:.6f} | {r['joint_attn_kl']:.6f} | {r['sum_out_rel']:.6f} |")
        lines.append("")
    if "sensitivity" in res:
        se = res["sensitivity"]
        lines += ["## Per-layer sensitivity ((c) output rel err, that layer only, other side f16)", "",
                  "| layer | " + " | ".join(f"K {m}" for m in ("tbq3_0", "tbq4_0", "tbq5_0")) + " | "
                  + " | ".join(f"V {m}" for m in ("tbq3_0", "tbq4_0", "tbq5_0")) + " |",
                  "|---|" + "---|" * 6]
        for l in sorted(se["err"]["K"]["tbq4_0"], key=int):
            lines.append(f"| {l} | " + " | ".join(f"{se['err']['K'][m][l]:.5f}" for m in ("tbq3_0", "tbq4_0", "tbq5_0")) + " | "
                         + " | ".join(f"{se['err']['V'][m][l]:.5f}" for m in ("tbq3_0", "tbq4_0", "tbq5_0")) + " |")
        lines += ["", f"Allocations minimising Σ_layers ({se['weights'][0]:.3g}·K + {se['weights'][1]:.3g}·V output error); "
                  "K menu: " + ", ".join(se["menus"]["K"]) + "; V menu: " + ", ".join(se["menus"]["V"]) + ":", ""]
        pdc = res.get("predictor", {})
        lines += [f"Chosen on: {se.get('selected_on', 'held-out chunks (in-sample)')}; scored on the held-out chunks.", ""]
        for b, a in se["alloc"].items():
            ev = res.get("alloc_eval", {}).get(b, {})
            ref = res.get("best_pairs", {}).get("reference_q4_0+rot")
            sc = pdc.get("c", 0.0) + a["weighted_err"]
            lines.append(f"- budget {b}: average {a['avg_bits']:.4f} bits; held-out score {sc:.5g}"
                         + (f" ({sc / ref:.3f}× q4_0+rot's)" if ref else "")
                         + f"; (c) with both sides quantized together: out rel err "
                         f"{ev.get('out_rel', float('nan')):.6f}, attn KL {ev.get('attn_kl', float('nan')):.6f}")
            lines.append(f"  - K: {' '.join(a['K'])}")
            lines.append(f"  - V: {' '.join(a['V'])}")
        lines.append("")
    if "tcq_gaussian" in res:
        lines += ["## TCQ check on i.i.d. N(0,1) (per-coordinate MSE; the codebook scale ×a is a free choice)", ""]
        for b, row in res["tcq_gaussian"].items():
            lm = row["lloyd_max"]
            best = min((v, k) for k, v in row.items() if k != "lloyd_max")
            lines.append(f"- {b} bits: Lloyd-Max {lm:.5f}; best TCQ {best[1]} {best[0]:.5f} "
                         f"({10 * math.log10(lm / best[0]):.2f} dB)")
        lines.append("")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, model: str, res: dict):
    """Per side: (c) output error against bits per element, one colour per family; only the Pareto
    frontier (no candidate with fewer bits and less error) and the stock types are labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(16, 7))
    colors = {}
    for ax, side in zip(axes, ("K", "V")):
        rows = {nm: r for nm, r in res["candidates"][side].items() if 2 <= r["bpe"] <= 7}
        front = [nm for nm, r in rows.items()
                 if not any(o["bpe"] <= r["bpe"] and o["out_rel"] < r["out_rel"] and on != nm for on, o in rows.items())]
        for nm, r in rows.items():
            fam = r["family"] or "other"
            c = colors.setdefault(fam, plt.cm.tab20(len(colors) % 20))
            ax.scatter(r["bpe"], r["out_rel"], color=c, s=30 if nm in front else 12, label=fam,
                       edgecolors="k" if nm in front else "none", linewidths=0.6)
            if nm in front or r["family"] == "stock":
                ax.annotate(nm, (r["bpe"], r["out_rel"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
        ref = res["candidates"][side]["q4_0+rot"]["out_rel"]
        ax.axhline(ref, color="k", ls="--", lw=1, label="q4_0+rot")
        ax.axhline(ref * 0.5, color="k", ls=":", lw=1, label="½ × q4_0+rot")
        for x in (3.5, 4.25):
            ax.axvline(x, color="grey", lw=0.6)
        ax.set_yscale("log")
        ax.set_xlabel("bits per element (every scale, norm and offset counted)")
        ax.set_ylabel("(c) attention output relative squared error")
        ax.set_title(f"{side} quantized, {'V' if side == 'K' else 'K'} at f16 (labelled: Pareto frontier and stock)")
        h, lab_ = ax.get_legend_handles_labels()
        uniq = dict(zip(lab_, h))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper right")
    fig.suptitle(f"Codec lab on real rows of {model} (held-out chunks; q8_0 and f16 off the chart)")
    fig.tight_layout()
    fig.savefig(out / "codec-lab.png", dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("job", choices=["golden", "synthetic", "run", "render"])
    ap.add_argument("--kv", type=Path)
    ap.add_argument("--model", default="")
    ap.add_argument("--kld", type=Path)
    ap.add_argument("--calib", type=int, default=1, help="chunks used for calibration (the rest are held out)")
    ap.add_argument("--eval", type=int, default=0, help="held-out chunks used (0 = all the others)")
    ap.add_argument("--out", type=Path, default=Path("build/validation/codec-lab"))
    ap.add_argument("--skip", default="", help="comma list of sections to skip: sens,tcq")
    ap.add_argument("--realloc", action="store_true", help="redo only the per-layer allocation (chosen on the "
                    "calibration chunk) in the existing results.json of --out")
    ap.add_argument("--only", default="", help="regex: run only the candidates it matches, merged into the "
                    "existing results.json of --out (then the predictor and best pairs are redone)")
    args = ap.parse_args()
    log = lambda s: print(f"[{time.strftime('%H:%M:%S')}] {s}", flush=True)  # noqa: E731

    if args.job == "golden":
        r = job_golden()
        print(json.dumps(r, indent=1))
        sys.exit(0 if all(v["max_rel_diff"] < 1e-6 for v in r.values()) else 1)

    if args.job == "render":  # table.md and the plot again from an existing results.json
        res = json.loads((args.out / "results.json").read_text())
        res["predictor_attn_kl"] = job_predictor(res["candidates"], res["pairs"], "attn_kl")
        write_table(args.out, res["model"], res)
        plot(args.out, res["model"], res)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    if args.job == "synthetic":
        cap = synthetic_capture()
        source = "SYNTHETIC Gaussian rows (plumbing test only; not real K/V rows)"
        model = args.model or "synthetic"
    else:
        cap, names = read_capture(args.kv)
        h = hashlib.sha256()
        with open(args.kv, "rb") as f:
            for blk in iter(lambda: f.read(1 << 24), b""):
                h.update(blk)
        source = (f"Real rows of {args.model} captured by validation/capture/capture-kv ({args.kv.name}, "
                  f"{args.kv.stat().st_size} bytes, sha256 {h.hexdigest()}); records used: "
                  + ", ".join(sorted({n for n in names.values()})))
        model = args.model
    log(f"shapes: " + ", ".join(f"{k} {v.shape}" for k, v in cap.items()))
    if args.eval:
        cap = {k: v[:args.calib + args.eval] for k, v in cap.items()}
    lab = Lab(cap, args.calib)
    lab.fitted = None
    res = {"model": model, "source": source, "head_dim": lab.hd, "heads_q": lab.hq, "heads_kv": lab.hkv,
           "layers": lab.L, "calib_chunks": args.calib, "eval_chunks": lab.C,
           "rows": (f"{lab.C} chunks × {lab.L} layers × {lab.T} tokens × {lab.hkv} KV heads = "
                    f"{lab.C * lab.L * lab.T * lab.hkv} K rows and as many V rows; attention windows: "
                    f"{lab.C} chunks × {lab.L} layers × {lab.hq} query heads × {lab.T - SCORED_FROM} scored "
                    f"queries (causal over the {lab.T}-token chunk) = {lab.C * lab.L * lab.hq * (lab.T - SCORED_FROM)} "
                    f"query rows; calibration: {args.calib} other chunk(s)")}
    if args.realloc:
        res = json.loads((args.out / "results.json").read_text())
        lab.fitted = {sd: {int(b): mirror(h) for b, h in d.items()} for sd, d in res["fitted_levels"].items()}
        menus = {sd: MENU + [m for m in ALLOC_EXTRA[sd] if m in res["candidates"][sd]] for sd in ("K", "V")}
        sel = job_select_on_calibration(lab, menus, log)
        res["sensitivity"] = job_sensitivity(lab, res["candidates"], log, weights=(res["predictor"]["a"], res["predictor"]["b"]), select=sel)
        res["alloc_eval"] = job_eval_alloc(lab, res["sensitivity"], lab.fitted, log)
        (args.out / "results.json").write_text(json.dumps(res, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
        write_table(args.out, model, res)
        plot(args.out, model, res)
        log(f"allocation redone in {args.out}/results.json")
        return
    if args.only:
        res = json.loads((args.out / "results.json").read_text())
        lab.fitted = {sd: {int(b): mirror(h) for b, h in d.items()} for sd, d in res["fitted_levels"].items()}
        new = job_candidates(lab, lab.fitted, log, args.only)
        for sd in new:
            res["candidates"][sd].update(new[sd])
        res["best_pairs"] = job_best_pairs(lab, res["candidates"], res["predictor"], log)
        if "sensitivity" in res:
            menus = {sd: MENU + [m for m in ALLOC_EXTRA[sd] if m in res["candidates"][sd]] for sd in ("K", "V")}
            sel = job_select_on_calibration(lab, menus, log)
            res["sensitivity"] = job_sensitivity(lab, res["candidates"], log, weights=(res["predictor"]["a"], res["predictor"]["b"]), select=sel)
            res["alloc_eval"] = job_eval_alloc(lab, res["sensitivity"], lab.fitted, log)
        res["merged"] = res.get("merged", []) + [args.only]
        (args.out / "results.json").write_text(json.dumps(res, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
        write_table(args.out, model, res)
        plot(args.out, model, res)
        log(f"merged {args.only} into {args.out}/results.json")
        return
    res["kurtosis"] = job_kurtosis(lab)
    log(f"kurtosis {res['kurtosis']}")
    fitted = job_fit_levels(lab)
    lab.fitted = fitted
    res["fitted_levels"] = {s: {b: [float(v) for v in L[len(L) // 2:]] for b, L in d.items()} for s, d in fitted.items()}
    if "tcq" not in skip:
        res["tcq_gaussian"] = job_tcq_gaussian(log)
    res["candidates"] = job_candidates(lab, fitted, log)
    res["pairs"] = job_pairs(lab, args.kld, log)
    res["mean_energy_share"] = {sd: float((np.linalg.norm(lab.mu[sd], axis=-1) ** 2).mean()
                                          / (lab.cal[sd].astype(np.float64) ** 2).sum(-1).mean()) for sd in ("K", "V")}
    res["predictor"] = job_predictor(res["candidates"], res["pairs"])
    res["predictor_attn_kl"] = job_predictor(res["candidates"], res["pairs"], "attn_kl")
    log(f"predictor {res['predictor']}")
    res["best_pairs"] = job_best_pairs(lab, res["candidates"], res["predictor"], log)
    if "sens" not in skip:
        menus = {sd: MENU + [m for m in ALLOC_EXTRA[sd] if m in res["candidates"][sd]] for sd in ("K", "V")}
        sel = job_select_on_calibration(lab, menus, log)
        sens = job_sensitivity(lab, res["candidates"], log, weights=(res["predictor"]["a"], res["predictor"]["b"]), select=sel)
        res["sensitivity"] = sens
        res["alloc_eval"] = job_eval_alloc(lab, sens, fitted, log)
    (args.out / "results.json").write_text(json.dumps(res, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    write_table(args.out, model, res)
    plot(args.out, model, res)
    log(f"wrote {args.out}/table.md, results.json, codec-lab.png")


if __name__ == "__main__":
    main()
