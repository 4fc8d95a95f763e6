#!/usr/bin/env python3
"""Writes a small random-weight Llama GGUF (f16) and a text file, for GPU runs of llama-perplexity and
llama-bench with the tbq KV-cache types where no real model can be downloaded.

    python3 scripts/gpu-llama-model.py OUT_DIR [--gguf-py PATH] [--layers 4]

The shape is Llama-3.2-3B's attention (n_embd 3072, 24 query heads, 8 KV heads: head_dim 128, GQA 3;
FFN 8192) with fewer layers and a byte-level SentencePiece vocabulary (<unk>, <s>, </s>, 256 byte tokens,
letters): quality numbers mean nothing, but every op of a real model runs at a real size.
"""
import argparse
import os
import random
import sys

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--gguf-py", default=None)
ap.add_argument("--layers", type=int, default=4)
args = ap.parse_args()
if args.gguf_py:
    sys.path.insert(0, args.gguf_py)
try:
    import yaml  # noqa: F401  (gguf-py's metadata module imports it; the writer never uses it)
except ImportError:
    import types
    sys.modules["yaml"] = types.ModuleType("yaml")
import gguf  # noqa: E402

os.makedirs(args.out, exist_ok=True)
n_embd, n_head, n_head_kv, n_ff, n_layer = 3072, 24, 8, 8192, args.layers
head_dim = n_embd // n_head

tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
types = [2, 3, 3] + [6] * 256
letters = "abcdefghijklmnopqrstuvwxyz"
pieces = ["\u2581"] + list(letters) + ["\u2581" + c for c in letters] + [a + b for a in "etaoin" for b in "nstrhe"]
tokens += pieces
types += [1] * len(pieces)
scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
n_vocab = len(tokens)

rng = np.random.default_rng(0)


def w(*shape, std=0.02):
    return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float16)


path = os.path.join(args.out, "random-llama.gguf")
wr = gguf.GGUFWriter(path, "llama")
wr.add_name("random-llama-3b-shape")
wr.add_context_length(8192)
wr.add_embedding_length(n_embd)
wr.add_block_count(n_layer)
wr.add_feed_forward_length(n_ff)
wr.add_head_count(n_head)
wr.add_head_count_kv(n_head_kv)
wr.add_rope_dimension_count(head_dim)
wr.add_rope_freq_base(500000.0)
wr.add_layer_norm_rms_eps(1e-5)
wr.add_vocab_size(n_vocab)
wr.add_file_type(1)  # MOSTLY_F16
wr.add_tokenizer_model("llama")
wr.add_token_list(tokens)
wr.add_token_scores(scores)
wr.add_token_types(types)
wr.add_bos_token_id(1)
wr.add_eos_token_id(2)
wr.add_unk_token_id(0)
wr.add_add_bos_token(True)
wr.add_add_eos_token(False)

wr.add_tensor("token_embd.weight", w(n_vocab, n_embd, std=1.0))
wr.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
wr.add_tensor("output.weight", w(n_vocab, n_embd))
for i in range(n_layer):
    p = f"blk.{i}."
    wr.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
    wr.add_tensor(p + "attn_q.weight", w(n_embd, n_embd))
    wr.add_tensor(p + "attn_k.weight", w(n_head_kv * head_dim, n_embd))
    wr.add_tensor(p + "attn_v.weight", w(n_head_kv * head_dim, n_embd))
    wr.add_tensor(p + "attn_output.weight", w(n_embd, n_embd))
    wr.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
    wr.add_tensor(p + "ffn_gate.weight", w(n_ff, n_embd))
    wr.add_tensor(p + "ffn_up.weight", w(n_ff, n_embd))
    wr.add_tensor(p + "ffn_down.weight", w(n_embd, n_ff))
wr.write_header_to_file()
wr.write_kv_data_to_file()
wr.write_tensors_to_file()
wr.close()

random.seed(0)
words = ["".join(random.choice(letters) for _ in range(random.randint(2, 8))) for _ in range(400)]
text = " ".join(random.choice(words) for _ in range(12000))
with open(os.path.join(args.out, "text.txt"), "w") as f:
    f.write(text + "\n")
print(f"{path}: {n_layer} layers, n_embd {n_embd}, heads {n_head}/{n_head_kv} (head_dim {head_dim}), vocab {n_vocab}; "
      f"text {len(text)} chars")
