#!/usr/bin/env python3
"""Train the project's head_dim-128 reference model: a small Llama (GQA) trained from scratch in a
few minutes on one H100, exported in Hugging Face format and converted to GGUF with llama.cpp's own
convert_hf_to_gguf.py. Seeded and offline: nothing is downloaded.

    python3 validation/train-ref-model.py --out build/ref-model \\
        --convert build/llama.cpp/convert_hf_to_gguf.py [--minutes 6] [--seed 1]

Why: Gemma 3 270M (the default validation model) has head_dim 256 and a single KV head. Most
models people run (Llama 3, Qwen, MiniMax) have head_dim 128 and several KV heads; tbq's block is
exactly one such head. This model gives the validation matrix that shape with real, trained
attention — not random weights.

Corpus (never the WikiText-2 test text): the English documentation that ships inside Python
packages installed from PyPI — docstrings, comments and .md/.rst/.txt files of the packages in
DEFAULT_PACKAGES that are installed (transformers, torch, numpy, scipy, sympy, …; `--packages`
overrides), read in sorted path order, de-duplicated, up to --max-corpus-mb (60 MB), with their
versions and the corpus's sha256 written to out/recipe.json. Training stops after --max-epochs
(1.5) passes over it: the first trial (4.2 M tokens, ~7 passes) memorised its corpus. It is technical English with
code, so the model's WikiText-2 perplexity is high; it is stated in the recipe so readers can
judge it. `--corpus FILE` trains on a text file instead (e.g. one carried to the GPU machine).

Shape (defaults): 8 layers, d_model 1024, 8 query heads and 2 KV heads of head_dim 128 (GQA 4),
SwiGLU FFN 2816, RMSNorm, RoPE θ = 10000 (Hugging Face's rotate-half convention, which
convert_hf_to_gguf permutes to ggml's), tied embeddings, a SentencePiece BPE vocabulary of 8192
trained on the same corpus (byte fallback), context 1024. ~88M parameters. bf16 autocast, AdamW,
cosine schedule, fixed seeds and a deterministic data order: the same seed and corpus give the
same model up to GPU non-determinism of the kernels.

Outputs in --out: hf/ (config.json, model.safetensors, tokenizer.model, tokenizer_config.json),
ref-128-f16.gguf (if --convert is given), recipe.json (settings, corpus hash, versions, losses,
held-out perplexity of the trained model on a corpus split it never saw), train.log.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import math
import os
import random
import subprocess
import sys
import time
import tokenize as pytokenize
from pathlib import Path


def log(msg: str, f=None):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if f:
        f.write(line + "\n")
        f.flush()


# --- the corpus -------------------------------------------------------------------------------------


def python_text(src: str) -> list[str]:
    """Docstrings and comment blocks of a Python source file (the prose in it)."""
    out = []
    try:
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc and len(doc) > 40:
                    out.append(doc)
    except (SyntaxError, ValueError, RecursionError):
        pass
    try:
        block = []
        for tok in pytokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == pytokenize.COMMENT:
                block.append(tok.string.lstrip("#").strip())
            elif tok.type not in (pytokenize.NL, pytokenize.NEWLINE, pytokenize.INDENT, pytokenize.DEDENT):
                if len(block) >= 2:
                    out.append(" ".join(block))
                block = []
    except (pytokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


# English docstrings, comments and docs of widely installed PyPI packages (~tens of M tokens together
# on a scientific Python image); only the ones installed are read, their versions go to recipe.json.
DEFAULT_PACKAGES = ("transformers,torch,numpy,scipy,sympy,pandas,matplotlib,networkx,sklearn,setuptools,pip,"
                    "jinja2,docutils,sphinx,IPython,jedi,pygments,requests,urllib3,click,yaml,PIL,tokenizers,"
                    "safetensors,huggingface_hub,datasets,triton,onnx,nltk,statsmodels,skimage")


def build_corpus(packages: list[str], max_bytes: int) -> tuple[str, dict]:
    import importlib
    import importlib.metadata as md

    seen, parts, versions, size = set(), [], {}, 0
    for name in packages:
        try:
            mod = importlib.import_module(name)
        except Exception:  # not installed here: the recipe lists what was used
            continue
        if getattr(mod, "__file__", None) is None:  # a namespace package: no single root to read
            continue
        root = Path(mod.__file__).parent
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = getattr(mod, "__version__", "?")
        for p in sorted(root.rglob("*")):
            if p.suffix not in (".py", ".md", ".rst", ".txt") or not p.is_file():
                continue
            try:
                src = p.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            texts = python_text(src) if p.suffix == ".py" else [src]
            for t in texts:
                t = t.strip()
                h = hashlib.sha1(t.encode()).digest()
                if len(t) > 40 and h not in seen:
                    seen.add(h)
                    parts.append(t)
                    size += len(t) + 2
        if size >= max_bytes:  # enough text for a few minutes of training; the rest is not read
            break
    return "\n\n".join(parts) + "\n", versions


# --- the model ---------------------------------------------------------------------------------------


def make_model(torch, cfg):
    nn = torch.nn
    F = torch.nn.functional

    class RMSNorm(nn.Module):
        def __init__(self, d, eps):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))
            self.eps = eps

        def forward(self, x):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight

    def rope(x, cos, sin):  # Hugging Face's rotate-half convention
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h], x[..., h:]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            d, hd = cfg["hidden_size"], cfg["head_dim"]
            self.nh, self.nkv, self.hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], hd
            self.q_proj = nn.Linear(d, self.nh * hd, bias=False)
            self.k_proj = nn.Linear(d, self.nkv * hd, bias=False)
            self.v_proj = nn.Linear(d, self.nkv * hd, bias=False)
            self.o_proj = nn.Linear(self.nh * hd, d, bias=False)
            self.gate_proj = nn.Linear(d, cfg["intermediate_size"], bias=False)
            self.up_proj = nn.Linear(d, cfg["intermediate_size"], bias=False)
            self.down_proj = nn.Linear(cfg["intermediate_size"], d, bias=False)
            self.input_layernorm = RMSNorm(d, cfg["rms_norm_eps"])
            self.post_attention_layernorm = RMSNorm(d, cfg["rms_norm_eps"])

        def forward(self, x, cos, sin):
            b, t, _ = x.shape
            h = self.input_layernorm(x)
            q = self.q_proj(h).view(b, t, self.nh, self.hd).transpose(1, 2)
            k = self.k_proj(h).view(b, t, self.nkv, self.hd).transpose(1, 2)
            v = self.v_proj(h).view(b, t, self.nkv, self.hd).transpose(1, 2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            rep = self.nh // self.nkv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o_proj(a.transpose(1, 2).reshape(b, t, -1))
            h = self.post_attention_layernorm(x)
            return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
            self.layers = nn.ModuleList([Block() for _ in range(cfg["num_hidden_layers"])])
            self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
            hd = cfg["head_dim"]
            inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
            pos = torch.arange(cfg["max_position_embeddings"]).float()
            fr = torch.outer(pos, inv)
            emb = torch.cat((fr, fr), dim=-1)
            self.register_buffer("cos", emb.cos(), persistent=False)
            self.register_buffer("sin", emb.sin(), persistent=False)
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, std=0.02)
            for blk in self.layers:  # scaled init of the residual projections
                nn.init.normal_(blk.o_proj.weight, std=0.02 / math.sqrt(2 * cfg["num_hidden_layers"]))
                nn.init.normal_(blk.down_proj.weight, std=0.02 / math.sqrt(2 * cfg["num_hidden_layers"]))

        def forward(self, idx):
            t = idx.shape[1]
            x = self.embed_tokens(idx)
            cos, sin = self.cos[:t].to(x.dtype), self.sin[:t].to(x.dtype)
            for blk in self.layers:
                x = blk(x, cos, sin)
            return self.norm(x) @ self.embed_tokens.weight.T  # tied

    return Llama()


def hf_state_dict(model):
    """Our parameter names → LlamaForCausalLM's."""
    sd = {}
    for k, v in model.state_dict().items():
        if k in ("cos", "sin"):
            continue
        if k.startswith("layers."):
            _, i, name, w = k.split(".", 3)
            group = "self_attn" if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else (
                "mlp" if name.endswith(("gate_proj", "up_proj", "down_proj")) else None)
            k = f"model.layers.{i}.{group + '.' if group else ''}{name}.{w}"
        else:
            k = "model." + k
        sd[k] = v.detach().to("cpu").contiguous()
    return sd


# --- main ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/ref-model"))
    ap.add_argument("--convert", type=Path, help="llama.cpp's convert_hf_to_gguf.py (from the patched tree)")
    ap.add_argument("--llama-tokenize", type=Path,
                    help="llama.cpp's llama-tokenize: after --convert, check that it tokenizes held-out text as "
                         "the trainer did (the run fails if not)")
    ap.add_argument("--corpus", type=Path, help="train on this text file instead of the PyPI package docs")
    ap.add_argument("--packages", default=DEFAULT_PACKAGES,
                    help="packages whose docs make the corpus; those not installed are skipped (and listed)")
    ap.add_argument("--max-corpus-mb", type=float, default=60.0,
                    help="stop reading packages once the corpus holds this many MB of text")
    ap.add_argument("--max-epochs", type=float, default=1.5,
                    help="never pass over the training tokens more often than this: a model that memorises "
                         "its corpus (the first trial: train loss 1.06, held-out PPL 8.84) is a poor stand-in "
                         "for a trained LLM's attention")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=6.0, help="training time budget")
    ap.add_argument("--max-steps", type=int, default=6000)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64, help="sequences per step")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    args = ap.parse_args()

    import numpy as np
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    hf = args.out / "hf"
    hf.mkdir(exist_ok=True)
    logf = open(args.out / "train.log", "w")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    log(f"device {dev} {torch.cuda.get_device_name(0) if dev == 'cuda' else ''}, torch {torch.__version__}", logf)

    # Corpus and its split: the last 1% (by bytes, at a paragraph) is held out for perplexity.
    if args.corpus:
        text, versions = args.corpus.read_text(encoding="utf-8"), {"corpus_file": str(args.corpus)}
    else:
        text, versions = build_corpus([p for p in args.packages.split(",") if p], int(args.max_corpus_mb * 1e6))
    sha = hashlib.sha256(text.encode()).hexdigest()
    cut = text.rfind("\n\n", 0, int(len(text) * 0.99))
    train_text, held_text = text[:cut], text[cut:]
    (args.out / "corpus-train.txt").write_text(train_text)
    (args.out / "corpus-heldout.txt").write_text(held_text)
    log(f"corpus {len(text) / 1e6:.1f} MB, sha256 {sha}, sources {versions}", logf)

    # Tokenizer: SentencePiece BPE with byte fallback (llama.cpp's "llama" SPM vocabulary). The
    # text is kept as it is (identity normalisation, whitespace kept, runs of spaces as pieces):
    # llama.cpp's SPM tokenizer does no normalisation, so a model trained on SentencePiece's default
    # (newlines, tabs and indentation folded into single spaces) meets tokens in llama-perplexity it
    # never saw in training — the first reference models did (held-out PPL 21 in training, 152 in
    # llama.cpp). --llama-tokenize checks the agreement after conversion.
    import sentencepiece as spm

    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(args.seed)
    spm.SentencePieceTrainer.train(
        input=str(args.out / "corpus-train.txt"), model_prefix=str(hf / "tokenizer"), model_type="bpe",
        vocab_size=args.vocab, byte_fallback=True, character_coverage=0.9995, split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, input_sentence_size=2_000_000, shuffle_input_sentence=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        num_threads=os.cpu_count() or 4, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(hf / "tokenizer.model"))

    def encode(t):
        # One stream, as llama-perplexity tokenizes a file: BOS, then the text in blocks of ~1 MB
        # cut after a blank line (each block gets SentencePiece's dummy-prefix space, as llama.cpp
        # gives the start of a text: once per MB).
        ids, pos = [1], 0
        while pos < len(t):
            end = t.find("\n\n", pos + 1_000_000)
            end = len(t) if end < 0 else end + 2
            ids.extend(sp.encode(t[pos:end]))
            pos = end
        return np.array(ids, dtype=np.int32)

    train_ids, held_ids = encode(train_text), encode(held_text)
    log(f"tokens: train {len(train_ids) / 1e6:.1f}M, held-out {len(held_ids) / 1e3:.0f}k", logf)

    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": args.vocab, "hidden_size": args.d_model, "intermediate_size": 2816 * args.d_model // 1024,
        "num_hidden_layers": args.layers, "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads,
        "head_dim": args.d_model // args.heads, "max_position_embeddings": args.ctx, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "torch_dtype": "float16",
    }
    assert cfg["head_dim"] == 128, "the reference model exists for head_dim 128"
    model = make_model(torch, cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.1f}M parameters, {cfg}", logf)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=dev == "cuda")
    g = torch.Generator().manual_seed(args.seed)
    data = torch.from_numpy(train_ids.astype(np.int64))
    n_windows = (len(data) - 1) // args.ctx
    order = torch.randperm(n_windows, generator=g)
    warmup = 200
    budget = args.minutes * 60
    start = time.time()
    losses, step, pos = [], 0, 0
    # Steps are planned from a measured rate so the cosine schedule ends inside the time budget.
    total = args.max_steps
    model.train()
    while step < total:
        if pos + args.batch > n_windows:
            order, pos = torch.randperm(n_windows, generator=g), 0
        idx = order[pos:pos + args.batch] * args.ctx
        pos += args.batch
        x = torch.stack([data[i:i + args.ctx + 1] for i in idx.tolist()])
        x[:, 0] = 1  # every window starts with BOS, as every chunk of llama-perplexity does
        x = x.to(dev, non_blocking=True)
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        with torch.autocast(device_type="cuda" if dev == "cuda" else "cpu", dtype=torch.bfloat16):
            logits = model(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, cfg["vocab_size"]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step == 50:
            rate = (time.time() - start) / 50
            epoch_cap = int(args.max_epochs * len(train_ids) / (args.batch * args.ctx))
            total = max(100, min(args.max_steps, int(budget / rate), epoch_cap))
            log(f"{rate * 1000:.0f} ms/step: planning {total} steps for {args.minutes} min", logf)
        if step % 100 == 0 or step == total:
            losses.append((step, float(loss)))
            log(f"step {step}/{total} loss {float(loss):.4f} lr {lr:.2e} ({time.time() - start:.0f} s)", logf)

    # Held-out perplexity (tokens the model never trained on), per token of the SPM vocabulary.
    model.eval()
    nll, cnt = 0.0, 0
    held = torch.from_numpy(held_ids.astype(np.int64))
    with torch.no_grad(), torch.autocast(device_type="cuda" if dev == "cuda" else "cpu", dtype=torch.bfloat16):
        for i in range(0, len(held) - args.ctx - 1, args.ctx):
            x = held[i:i + args.ctx + 1][None].clone()
            x[0, 0] = 1
            x = x.to(dev)
            lg = model(x[:, :-1]).float()
            nll += float(torch.nn.functional.cross_entropy(lg[0], x[0, 1:], reduction="sum"))
            cnt += args.ctx
    held_ppl = math.exp(nll / max(cnt, 1))
    log(f"held-out perplexity {held_ppl:.3f} over {cnt} tokens", logf)

    # Hugging Face export, checked against transformers' own Llama when it is installed.
    from safetensors.torch import save_file

    sd = hf_state_dict(model)
    save_file({k: v.to(torch.float16) for k, v in sd.items()}, str(hf / "model.safetensors"), metadata={"format": "pt"})
    (hf / "config.json").write_text(json.dumps(cfg, indent=2))
    (hf / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "model_max_length": args.ctx}, indent=2))
    check = None
    try:
        from transformers import LlamaConfig, LlamaForCausalLM

        ref = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures",)}))
        missing = ref.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
        ref = ref.to(dev).eval()
        x = held[: args.ctx][None].to(dev)
        with torch.no_grad():
            a = model.float()(x)
            b = ref(x).logits
        check = float((a - b).abs().max())
        log(f"transformers LlamaForCausalLM agrees with the trained model: max |Δlogit| = {check:.2e} "
            f"(missing keys: {missing.missing_keys})", logf)
        if check > 1e-2:
            raise SystemExit("the Hugging Face export does not reproduce the model")
    except ImportError:
        log("transformers not installed: export not cross-checked", logf)

    gguf = None
    if args.convert:
        gguf = args.out / "ref-128-f16.gguf"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(args.convert.parent / "gguf-py") + os.pathsep + env.get("PYTHONPATH", "")
        subprocess.run([sys.executable, str(args.convert), str(hf), "--outtype", "f16", "--outfile", str(gguf)],
                       check=True, env=env)
        log(f"converted: {gguf} ({gguf.stat().st_size / 1e6:.0f} MB)", logf)

    # llama.cpp must see the tokens the model was trained on: its tokenizer against SentencePiece
    # on the first 64 kB of the held-out text
    tok_agree = None
    if args.llama_tokenize and gguf:
        sample = held_text[:65536]
        (args.out / "tokenize-sample.txt").write_text(sample)
        res = subprocess.run([str(args.llama_tokenize), "-m", str(gguf), "-f", str(args.out / "tokenize-sample.txt"),
                              "--ids", "--no-bos", "--log-disable"], capture_output=True, text=True, check=True)
        got = json.loads(res.stdout.strip().splitlines()[-1])
        want = sp.encode(sample)
        same = sum(a == b for a, b in zip(got, want))
        tok_agree = same / max(len(want), 1)
        log(f"llama.cpp tokenizer vs SentencePiece on {len(sample)} bytes of held-out text: {len(got)} vs "
            f"{len(want)} tokens, {100 * tok_agree:.2f}% identical by position", logf)
        if got != want:
            raise SystemExit("llama.cpp tokenizes the text differently from the trainer: the model would be "
                             "evaluated on tokens it was not trained on")

    recipe = {
        "seed": args.seed, "args": {k: str(v) for k, v in vars(args).items()}, "config": cfg,
        "parameters": n_params, "corpus_sha256": sha, "corpus_bytes": len(text), "sources": versions,
        "train_tokens": int(len(train_ids)), "heldout_tokens": cnt, "steps": step,
        "tokens_seen": step * args.batch * args.ctx, "losses": losses, "heldout_ppl": held_ppl,
        "hf_check_max_abs_logit_diff": check, "gguf": str(gguf) if gguf else None,
        "llama_tokenizer_agreement": tok_agree,
        "torch": torch.__version__, "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
        "seconds": time.time() - start,
    }
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=2))
    log(f"done: {args.out / 'recipe.json'}", logf)


if __name__ == "__main__":
    main()
