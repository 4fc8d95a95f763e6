#!/usr/bin/env python3
"""Codec-level analysis: how much each KV-cache format distorts real K/V rows, against the
Lloyd-Max theory and against llama.cpp's q4_0 and q8_0.

    python validation/analysis/codec.py [--kv ROWS.bin] [--out DIR]

ROWS.bin comes from validation/capture/capture-kv (llama.cpp's eval callback on the real model:
the K and V rows exactly as they reach the cache, and the Q rows that score them). Without it
the script runs on synthetic rows — Gaussian, and Gaussian with outlier channels — and says so
in every output: those are not real K/V rows.

Metrics, per format and per kind of row:
- relative MSE  ||x - x̂||² / ||x||²  (the codec's distortion; Lloyd-Max theory for tbq on
  Gaussian-after-rotation coordinates: 0.0095 at 4 bits, 0.0345 at 3 bits);
- for K, the RMS error of the attention logits q·(k̂ - k)/sqrt(d) over real (q, k) pairs of the
  same layer (the error softmax actually sees; keys carry most of a cache's quality loss);
- excess kurtosis of the rotated, normalised coordinates sqrt(128)·T(x)_i/||x|| (0 for a
  Gaussian): how far real rows are from the codebook's assumption.

q8_0 and q4_0 are implemented here in numpy exactly as ggml's reference quantizers do them
(32-element blocks, f16 scale): q8_0 d = amax/127, q = round(x/d); q4_0 d = (signed value of
largest magnitude)/-8, q = min(15, trunc(x/d + 8.5)).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import tbq

BITS = {"f16": 16.0, "q8_0": 8.5, "q4_0": 4.5, "tbq4_0": 4.125, "tbq3_0": 3.125, "q4_0+rot": 4.5}


def q8_0(x: np.ndarray) -> np.ndarray:
    b = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(b).max(axis=1, keepdims=True)
    d = amax / 127.0
    idv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.clip(np.sign(b * idv) * np.floor(np.abs(b * idv) + 0.5), -127, 127)  # roundf
    return (q * d.astype(np.float16).astype(np.float32)).reshape(x.shape)


def q4_0(x: np.ndarray) -> np.ndarray:
    b = x.reshape(-1, 32).astype(np.float32)
    idx = np.abs(b).argmax(axis=1)
    mx = b[np.arange(b.shape[0]), idx][:, None]
    d = mx / -8.0
    idv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, np.trunc(b * idv + 8.5)).astype(np.float32)
    return ((q - 8.0) * d.astype(np.float16).astype(np.float32)).reshape(x.shape)


def q4_0_rot(x: np.ndarray) -> np.ndarray:
    """q4_0 of the rotated rows, rotated back: a stand-in for llama.cpp's attn_rot (a Hadamard
    rotation of the cache before q4_0; tbq's signed Hadamard here, not llama.cpp's exact one)."""
    return tbq.unrotate(q4_0(tbq.rotate(x)))


CODECS = {
    "q8_0": q8_0,
    "q4_0": q4_0,
    "q4_0+rot": q4_0_rot,
    "tbq4_0": lambda x: tbq.roundtrip(x, "tbq4_0"),
    "tbq3_0": lambda x: tbq.roundtrip(x, "tbq3_0"),
}


def read_capture(path: Path):
    """{(kind, layer): rows[n, head_dim]} from capture-kv's records; the last record of each
    (kind, layer, chunk) is the tensor the cache stores (Q: the roped query)."""
    raw = path.read_bytes()
    off, last = 0, {}
    while off < len(raw):
        name = raw[off:off + 64].split(b"\0")[0].decode()
        kind, layer, chunk, _ = np.frombuffer(raw, np.int32, 4, off + 64)
        ne = np.frombuffer(raw, np.int64, 3, off + 80)
        n = int(np.prod(ne))
        data = np.frombuffer(raw, np.float32, n, off + 104)
        off += 104 + 4 * n
        last[(int(kind), int(layer), int(chunk))] = (name, data, ne)
    head_dim = next(int(ne[0]) for (kind, _, _), (_, _, ne) in last.items() if kind == 0)
    rows = {}
    for (kind, layer, chunk), (name, data, ne) in sorted(last.items()):
        # one row per head and token, ne0 = head_dim fastest (Q: token-major, heads inside)
        rows.setdefault((kind, layer), []).append(data.reshape(-1, head_dim))
    return {k: np.concatenate(v) for k, v in rows.items()}, head_dim


def synthetic(seed=0, rows=4096, d=256):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((rows, d)).astype(np.float32)
    o = g.copy()
    ch = rng.choice(d, 6, replace=False)
    o[:, ch] *= 12.0  # a few outlier channels, as real keys have
    return {"gaussian": g, "gaussian+outliers": o}


def rel_mse(x, y):
    return float(((x - y) ** 2).sum() / (x ** 2).sum())


def excess_kurtosis(x):
    u = tbq.rotate(x) * np.sqrt(128.0)
    blocks = u.reshape(-1, 128)
    n = np.linalg.norm(x.reshape(-1, 128), axis=1, keepdims=True)
    z = (blocks / np.where(n == 0, 1, n)).ravel()
    return float((z ** 4).mean() / (z ** 2).mean() ** 2 - 3.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kv", type=Path, help="capture-kv output (real rows); synthetic rows without it")
    ap.add_argument("--out", type=Path, default=Path("build/validation/codec"))
    ap.add_argument("--max-rows", type=int, default=4096, help="rows per (kind, layer) used")
    ap.add_argument("--model", default="", help="model name for the titles")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    lm = {t: tbq.lloyd_max(2 ** tbq.bits(t))[1] for t in ("tbq4_0", "tbq3_0")}
    result = {"lloyd_max_mse": lm, "bits_per_element": BITS, "source": None, "sets": {}, "layers": {}}

    # Synthetic sets: always, as a calibration of the theory.
    sets = {k: v for k, v in synthetic().items()}
    real = args.kv is not None and args.kv.is_file()
    per_layer = {}
    logit = {}
    if real:
        cap, hd = read_capture(args.kv)
        result["source"] = f"real rows captured from {args.model or args.kv.name} by capture-kv (llama.cpp eval callback), head_dim {hd}"
        layers = sorted({l for (_, l) in cap})
        for kind, name in ((0, "K"), (1, "V")):
            allrows = []
            for l in layers:
                x = cap[(kind, l)][: args.max_rows]
                allrows.append(x)
                per_layer.setdefault(name, {})[l] = {c: rel_mse(x, f(x)) for c, f in CODECS.items()}
            sets[f"real {name}"] = np.concatenate(allrows)
        # Attention-logit error for keys, per codec: real queries of the same layer and chunk.
        for c, f in CODECS.items():
            num, cnt = 0.0, 0
            for l in layers:
                k = cap[(0, l)][:512]
                # the queries of the first chunk (all heads share the one KV head in GQA)
                n_q = cap[(2, l)].shape[0] * 512 // cap[(0, l)].shape[0]
                q = cap[(2, l)][:n_q]
                e = (q @ (f(k) - k).T) / np.sqrt(hd)
                num += float((e ** 2).sum())
                cnt += e.size
            logit[c] = float(np.sqrt(num / cnt))
        result["key_logit_rms_error"] = logit
    else:
        result["source"] = "SYNTHETIC rows only (no --kv capture given): not real K/V rows"

    for s, x in sets.items():
        result["sets"][s] = {
            "rows": int(x.shape[0]),
            "excess_kurtosis_rotated": excess_kurtosis(x),
            "rel_mse": {c: rel_mse(x, f(x)) for c, f in CODECS.items()},
        }
    result["layers"] = per_layer

    (args.out / "codec.json").write_text(json.dumps(result, indent=2))
    md = [f"Codec distortion — {result['source']}.", "",
          "Relative MSE ||x − x̂||²/||x||² (lower is better); Lloyd-Max theory for tbq on Gaussian "
          f"coordinates: tbq4_0 {lm['tbq4_0']:.5f}, tbq3_0 {lm['tbq3_0']:.5f}. "
          "Excess kurtosis of the rotated coordinates: 0 for a Gaussian.", ""]
    head = "| rows | excess kurtosis | " + " | ".join(f"{c} ({BITS[c]:g} b)" for c in CODECS) + " |"
    md += [head, "|" + "---|" * (len(CODECS) + 2)]
    for s, v in result["sets"].items():
        md.append(f"| {s} ({v['rows']}) | {v['excess_kurtosis_rotated']:.2f} | "
                  + " | ".join(f"{v['rel_mse'][c]:.5f}" for c in CODECS) + " |")
    if logit:
        md += ["", "RMS error of the attention logits q·(k̂ − k)/√d over real (q, k) pairs of each layer (keys only):", "",
               "| " + " | ".join(CODECS) + " |", "|" + "---|" * len(CODECS),
               "| " + " | ".join(f"{logit[c]:.4f}" for c in CODECS) + " |"]
    (args.out / "codec.md").write_text("\n".join(md) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if per_layer else 1, figsize=(15 if per_layer else 8, 5.5), squeeze=False)
    ax = axes[0][0]
    names = list(result["sets"])
    w = 0.8 / len(CODECS)
    for i, c in enumerate(CODECS):
        ax.bar(np.arange(len(names)) + (i - len(CODECS) / 2 + 0.5) * w,
               [result["sets"][s]["rel_mse"][c] for s in names], w, label=f"{c} ({BITS[c]:g} bpe)")
    for t, ls in (("tbq4_0", "--"), ("tbq3_0", ":")):
        ax.axhline(lm[t], color="k", ls=ls, lw=1, label=f"Lloyd-Max theory, {2 ** tbq.bits(t)} levels")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("relative MSE ||x−x̂||²/||x||²")
    ax.set_title("distortion per format" + ("" if real else " (SYNTHETIC rows)"))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=4)
    if per_layer:
        ax = axes[0][1]
        for kind, mk in (("K", "o-"), ("V", "s--")):
            for c in ("q4_0", "q4_0+rot", "tbq4_0", "tbq3_0"):
                ls = sorted(per_layer[kind])
                ax.plot(ls, [per_layer[kind][l][c] for l in ls], mk, ms=3, label=f"{kind} {c}")
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel("relative MSE")
        ax.set_title("per layer, real rows")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"KV-cache codecs on {'real K/V rows of ' + (args.model or args.kv.name) if real else 'synthetic rows'}")
    fig.tight_layout()
    fig.savefig(args.out / "codec.png", dpi=110)
    print((args.out / "codec.md").read_text())


if __name__ == "__main__":
    main()
