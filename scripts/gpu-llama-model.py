#!/usr/bin/env python3
"""Writes a random-weight GGUF (f16) and a text file, for GPU runs of llama-perplexity and llama-bench with
the tbq KV-cache types where no real model can be downloaded. Quality numbers mean nothing; the shapes
are real, so every op of a real model runs at a real size.

    python3 scripts/gpu-llama-model.py OUT_DIR [--gguf-py PATH] [--arch llama3b|llama8b|gemma3-270m]
                                       [--full] [--layers N] [--vocab N] [--outtype f16]

writes OUT_DIR/random-llama.gguf (llama3b), random-llama8b.gguf (llama8b) or random-gemma3.gguf
(gemma3-270m), prints its path,
and writes OUT_DIR/text.txt (random lowercase words, for llama-perplexity).

--arch llama3b (default): Llama-3.2-3B (arch "llama"): n_embd 3072, 24 query heads, 8 KV heads
    (head_dim 128, GQA 3), FFN 8192, rope base 500000.
    Reduced (default): 4 layers, the tiny vocabulary below, a separate output.weight, context 8192
    (exactly what this script wrote before --arch existed).
    --full: 28 layers, vocab 128256, context 131072, tied embeddings (no output.weight) and the
    llama3 rope factors (rope_freqs.weight: factor 32, low 1, high 4, original context 8192), as the
    real model: about 3.2 B parameters, 6.4 GB.
--arch llama8b: Llama-3.1-8B (arch "llama"): n_embd 4096, 32 query heads, 8 KV heads (head_dim 128,
    GQA 4), FFN 14336, rope base 500000. Reduced (default): 4 layers, the tiny vocabulary, context 8192.
    --full: 32 layers, vocab 128256, context 131072, a separate output.weight and the llama3 rope
    factors (factor 8) as the real model: about 8.0 B parameters, 16 GB.
--arch gemma3-270m: Gemma 3 270M (arch "gemma3"): n_embd 640, 4 query heads, 1 KV head,
    head_dim 256 (key_length = value_length = 256, GQA 4), FFN 2048 (GELU), sliding window 512 on 5 of
    every 6 layers (llama.cpp's default Gemma 3 pattern: layers 5, 11, 17 global), rope base 1e6 (global)
    and 10000 (local), q/k norms, post-attention and post-FFW norms, tied embeddings (no output.weight),
    rms eps 1e-6, context 32768.
    Reduced (default): 6 layers (one local/global period), the tiny vocabulary.
    --full: 18 layers, vocab 262144: about 268 M parameters, 0.54 GB.
--layers N and --vocab N override the layer count and vocabulary size, with or without --full.

The vocabulary is a byte-level SentencePiece one ("llama" tokenizer for both archs: <unk>=0, <s>=1 (BOS),
</s>=2 (EOS), 256 byte tokens, letters and a few bigrams: 348 tokens), padded up to --vocab with
synthetic NORMAL tokens "\u2581w<i>" that the text never uses.

Weights: a pool of ~16 MiB of N(0, 1) f16 values (std 0.02 for the matrices, 1.0 for the llama
embeddings) is drawn once; each tensor is that pool read cyclically from a random offset, so generation
costs a memory copy and the write is streamed one tensor at a time (peak memory: the largest tensor).
Norm weights are 1 (f32). Only --outtype f16 is supported; quantize afterwards with llama-quantize.
"""
import argparse
import math
import os
import random
import sys
import time

import numpy as np

ARCHS = {
    # reduced layers / context; full layers / vocab / context
    "llama3b": dict(n_embd=3072, n_head=24, n_head_kv=8, head_dim=128, n_ff=8192,
                    layers=4, full_layers=28, full_vocab=128256, ctx=8192, full_ctx=131072,
                    file="random-llama.gguf", gguf_arch="llama", full_tied=True, rope_factor=32.0),
    "llama8b": dict(n_embd=4096, n_head=32, n_head_kv=8, head_dim=128, n_ff=14336,
                    layers=4, full_layers=32, full_vocab=128256, ctx=8192, full_ctx=131072,
                    file="random-llama8b.gguf", gguf_arch="llama", full_tied=False, rope_factor=8.0),
    "gemma3-270m": dict(n_embd=640, n_head=4, n_head_kv=1, head_dim=256, n_ff=2048,
                        layers=6, full_layers=18, full_vocab=262144, ctx=32768, full_ctx=32768,
                        file="random-gemma3.gguf", gguf_arch="gemma3", full_tied=True),
}

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                             formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("out")
ap.add_argument("--gguf-py", default=None, help="path of llama.cpp's gguf-py")
ap.add_argument("--arch", choices=sorted(ARCHS), default="llama3b")
ap.add_argument("--full", action="store_true", help="the real architecture at real size")
ap.add_argument("--layers", type=int, default=None, help="layer count (default: 4 llama3b and llama8b / 6 gemma3-270m, or the real one with --full)")
ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: 348, or the real one with --full)")
ap.add_argument("--outtype", choices=["f16"], default="f16")
args = ap.parse_args()
if args.gguf_py:
    sys.path.insert(0, args.gguf_py)
try:
    import yaml  # noqa: F401  (gguf-py's metadata module imports it; the writer never uses it)
except ImportError:
    import types
    sys.modules["yaml"] = types.ModuleType("yaml")
import gguf  # noqa: E402

t_start = time.time()
A = ARCHS[args.arch]
is_gemma = args.arch == "gemma3-270m"
n_embd, n_head, n_head_kv, head_dim, n_ff = A["n_embd"], A["n_head"], A["n_head_kv"], A["head_dim"], A["n_ff"]
n_layer = args.layers if args.layers is not None else (A["full_layers"] if args.full else A["layers"])
n_ctx = A["full_ctx"] if args.full else A["ctx"]
tied = (args.full and A["full_tied"]) or is_gemma
if n_layer < 1:
    sys.exit("--layers must be >= 1")

# --- vocabulary --------------------------------------------------------------------------------------------
tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
toktypes = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, CONTROL, BYTE
letters = "abcdefghijklmnopqrstuvwxyz"
pieces = ["\u2581"] + list(letters) + ["\u2581" + c for c in letters] + [a + b for a in "etaoin" for b in "nstrhe"]
tokens += pieces
toktypes += [1] * len(pieces)  # NORMAL
scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
n_base = len(tokens)
n_vocab = args.vocab if args.vocab is not None else (A["full_vocab"] if args.full else n_base)
if n_vocab < n_base:
    sys.exit(f"--vocab must be >= {n_base} (the byte-level base vocabulary)")
n_pad = n_vocab - n_base
tokens += [f"\u2581w{i}" for i in range(n_pad)]
toktypes += [1] * n_pad
scores += [-float(len(pieces) + i) for i in range(n_pad)]

# --- weights: a random pool read cyclically ----------------------------------------------------------------
rng = np.random.default_rng(0)
POOL = 8 * 1024 * 1024 + 9  # f16 elements (~16 MiB); not a multiple of any row length, so rows differ
pool_unit = rng.standard_normal(POOL, dtype=np.float32)
pools = {}


def pool(std):
    if std not in pools:
        pools[std] = (pool_unit * std).astype(np.float16)
    return pools[std]


def rand_f16(shape, std):
    """numpy shape (rows, cols) = ggml {cols, rows}; values pool(std)[(off + i) % POOL]."""
    p = pool(std)
    n = math.prod(shape)
    out = np.empty(n, dtype=np.float16)
    off = int(rng.integers(POOL))
    i = 0
    while i < n:
        k = min(n - i, POOL - off)
        out[i:i + k] = p[off:off + k]
        i += k
        off = 0
    return out.reshape(shape)


# (name, numpy shape, maker): makers are called one at a time while writing
specs = []


def mat(name, rows, cols, std=0.02):
    specs.append((name, (rows, cols), np.float16, lambda: rand_f16((rows, cols), std)))


def ones(name, n):
    specs.append((name, (n,), np.float32, lambda: np.ones(n, dtype=np.float32)))


def llama3_rope_factors(base=500000.0, factor=32.0, low=1.0, high=4.0, old_ctx=8192):
    # as convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors) for Llama 3.x rope scaling
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


n_q, n_kv = n_head * head_dim, n_head_kv * head_dim
mat("token_embd.weight", n_vocab, n_embd, std=0.02 if is_gemma else 1.0)
ones("output_norm.weight", n_embd)
if not tied:
    mat("output.weight", n_vocab, n_embd)
if not is_gemma and args.full:
    rf = llama3_rope_factors(factor=A["rope_factor"])
    specs.append(("rope_freqs.weight", rf.shape, np.float32, lambda: rf))
for i in range(n_layer):
    p = f"blk.{i}."
    ones(p + "attn_norm.weight", n_embd)
    mat(p + "attn_q.weight", n_q, n_embd)
    mat(p + "attn_k.weight", n_kv, n_embd)
    mat(p + "attn_v.weight", n_kv, n_embd)
    mat(p + "attn_output.weight", n_embd, n_q)
    if is_gemma:
        ones(p + "attn_q_norm.weight", head_dim)
        ones(p + "attn_k_norm.weight", head_dim)
        ones(p + "post_attention_norm.weight", n_embd)
    ones(p + "ffn_norm.weight", n_embd)
    mat(p + "ffn_gate.weight", n_ff, n_embd)
    mat(p + "ffn_up.weight", n_ff, n_embd)
    mat(p + "ffn_down.weight", n_embd, n_ff)
    if is_gemma:
        ones(p + "post_ffw_norm.weight", n_embd)

# --- metadata ----------------------------------------------------------------------------------------------
os.makedirs(args.out, exist_ok=True)
path = os.path.join(args.out, A["file"])
wr = gguf.GGUFWriter(path, A["gguf_arch"])
wr.add_name(f"random-{args.arch}-shape" + ("-full" if args.full else ""))
wr.add_context_length(n_ctx)
wr.add_embedding_length(n_embd)
wr.add_block_count(n_layer)
wr.add_feed_forward_length(n_ff)
wr.add_head_count(n_head)
wr.add_head_count_kv(n_head_kv)
if is_gemma:
    # as conversion/gemma.py (Gemma3Model): no sliding_window_pattern key, llama.cpp's gemma3 loader
    # applies its default pattern 6 (5 local layers, then 1 global); no final logit softcapping.
    wr.add_key_length(head_dim)
    wr.add_value_length(head_dim)
    wr.add_rope_freq_base(1000000.0)
    wr.add_rope_freq_base_swa(10000.0)
    wr.add_sliding_window(512)
    wr.add_layer_norm_rms_eps(1e-6)
else:
    wr.add_rope_dimension_count(head_dim)
    wr.add_rope_freq_base(500000.0)
    wr.add_layer_norm_rms_eps(1e-5)
wr.add_vocab_size(n_vocab)
wr.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
wr.add_tokenizer_model("llama")
wr.add_token_list(tokens)
wr.add_token_scores(scores)
wr.add_token_types(toktypes)
wr.add_bos_token_id(1)
wr.add_eos_token_id(2)
wr.add_unk_token_id(0)
wr.add_add_bos_token(True)
wr.add_add_eos_token(False)
if is_gemma:
    wr.add_add_space_prefix(False)

# --- streamed write: tensor infos first, then each tensor made and written on its own ---------------------
for name, shape, dtype, _ in specs:
    wr.add_tensor_info(name, shape, np.dtype(dtype), math.prod(shape) * np.dtype(dtype).itemsize)
wr.write_header_to_file()
wr.write_kv_data_to_file()
wr.write_ti_data_to_file()
n_params = 0
for name, shape, dtype, make in specs:
    t = make()
    assert t.shape == tuple(shape) and t.dtype == dtype, name
    wr.write_tensor_data(t, tensor_endianess=gguf.GGUFEndian.LITTLE)
    n_params += t.size
    del t
wr.close()
t_model = time.time() - t_start

random.seed(0)
words = ["".join(random.choice(letters) for _ in range(random.randint(2, 8))) for _ in range(400)]
text = " ".join(random.choice(words) for _ in range(12000))
with open(os.path.join(args.out, "text.txt"), "w") as f:
    f.write(text + "\n")
print(f"{path}: {args.arch}{' (full)' if args.full else ''}, {n_layer} layers, n_embd {n_embd}, "
      f"heads {n_head}/{n_head_kv} (head_dim {head_dim}), FFN {n_ff}, vocab {n_vocab}, "
      f"{'tied embeddings' if tied else 'output.weight'}; {n_params / 1e6:.1f} M params, "
      f"{os.path.getsize(path) / 1e9:.2f} GB in {t_model:.1f} s; text {len(text)} chars")
