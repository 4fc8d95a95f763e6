#!/usr/bin/env bash
# Partial offload (issue 14): `-ngl N` below the layer count puts the first layers, and their KV
# caches, on the CPU and the rest on the GPU. Run ON the GPU machine after scripts/gpu-llama.sh
# built the CUDA llama.cpp there (build/gpu-llama/bin); about 6 minutes.
#   1. the same model gives the same perplexity wherever its layers run: llama-perplexity at
#      -ngl 0, half and 99 for each pair, each scored against the f16 -ngl 99 run
#      (--kl-divergence), so a CPU and a GPU path that disagree show as a KLD that depends on -ngl;
#   2. speed: llama-bench tg at depth 0 and 4K for each pair at -ngl 0, half and 99.
# Model: the reference model if scripts/gpu-ref-model.sh left it on this machine (trained weights,
# head_dim 128, 8 layers), else the random-weight Llama-3.2-3B shape (scripts/gpu-lib.sh) for the
# perplexity check; llama-bench always uses the 3B shape (28 layers: -ngl 14 is the issue's case).
#
#   scripts/gpu-offload.sh      Env: TBQ_OFFLOAD_PAIRS (default f16/f16 q4_0/q4_0 tbq4_0/tbq3_0
#                               tbq4_1/tbq4_0), TBQ_OFFLOAD_DEPTHS (default 0,4096), TBQ_OFFLOAD_NGL
#                               (llama-bench's, default 0,14,99), TBQ_OFFLOAD_PPL=0 (no perplexity
#                               part), TBQ_THREADS (16)
# Everything lands in $OUT/offload/ (perplexity logs, llama-bench.jsonl); the table comes last.
source "$(dirname "${BASH_SOURCE[0]}")/gpu-lib.sh" # REPO (the working directory), OUT, BIN, LLAMA, make_model
O="$OUT/offload"
mkdir -p "$O"
[[ -x "$BIN/llama-perplexity" && -x "$BIN/llama-bench" ]] || {
    echo "gpu-offload.sh: no CUDA llama.cpp build in $BIN: run scripts/gpu-llama.sh first (same machine)" >&2; exit 2; }
PAIRS=${TBQ_OFFLOAD_PAIRS:-f16/f16 q4_0/q4_0 tbq4_0/tbq3_0 tbq4_1/tbq4_0}
T=${TBQ_THREADS:-16}
M3=$(make_model llama3b) || { echo "gpu-offload.sh: could not make the 3B-shape model" >&2; exit 1; }

# --- 1. perplexity at -ngl 0 / half / 99 -------------------------------------------------------------
REF=/tmp/tbq-ref-model
if [[ -f $REF/ref-128-f16.gguf && -f $REF/corpus-heldout.txt ]]; then
    PM=$REF/ref-128-f16.gguf TEXT=$REF/corpus-heldout.txt
else
    PM=$M3 TEXT=$(dirname "$M3")/text.txt
fi
LAYERS=$(python3 - "$PM" "$LLAMA/gguf-py" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
import gguf
r = gguf.GGUFReader(sys.argv[1])
arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
print(int(r.fields[f"{arch}.block_count"].parts[-1][0]))
PY
)
HALF=$((LAYERS / 2))
ppl() { # NAME K V NGL [extra args]: one llama-perplexity run, log in $O/ppl-NAME.log
    local name=$1 k=$2 v=$3 ngl=$4
    shift 4
    timeout 200 "$BIN/llama-perplexity" -m "$PM" -f "$TEXT" -c 512 -b 512 --chunks 4 -t "$T" -fa on \
        -ctk "$k" -ctv "$v" -ngl "$ngl" "$@" >"$O/ppl-$name.log" 2>&1 || echo "ppl $name: rc $?" >&2
}
if [[ ${TBQ_OFFLOAD_PPL:-1} != 0 ]]; then
    ppl base f16 f16 99 --kl-divergence-base "$O/base.logits"
    for kv in $PAIRS; do
        for ngl in 0 $HALF 99; do
            ppl "${kv/\//-}-ngl$ngl" "${kv%/*}" "${kv#*/}" "$ngl" --kl-divergence --kl-divergence-base "$O/base.logits"
        done
    done
    rm -f "$O/base.logits"
fi

# --- 2. llama-bench at -ngl 0 / 14 / 99 on the 3B shape ------------------------------------------------
JL="$O/llama-bench.jsonl"
: >"$JL"
for kv in $PAIRS; do
    timeout 300 "$BIN/llama-bench" -m "$M3" -t "$T" -fa 1 -ctk "${kv%/*}" -ctv "${kv#*/}" -ngl "${TBQ_OFFLOAD_NGL:-0,14,99}" -p 0 -n 64 \
        -d "${TBQ_OFFLOAD_DEPTHS:-0,4096}" -r 2 -o jsonl >>"$JL" 2>>"$O/llama-bench.err" || echo "bench $kv: rc $?" >&2
done

# --- table ---------------------------------------------------------------------------------------------------
python3 - "$O" "$PM" "$LAYERS" "$PAIRS" <<'PY'
import json, os, re, sys
o, model, layers, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
half = layers // 2
def grab(name):
    try:
        t = open(os.path.join(o, f"ppl-{name}.log"), errors="replace").read()
    except OSError:
        return None, None
    p = re.search(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", t)
    k = re.search(r"Mean\s+KLD:\s+([-0-9.e]+)", t)
    return (p and float(p.group(1)), k and float(k.group(1)))
if not os.path.exists(os.path.join(o, "ppl-base.log")):
    print("\nperplexity: not run (TBQ_OFFLOAD_PPL=0)")
    pairs_ppl = []
else:
    pairs_ppl = pairs
    print(f"\nperplexity / mean KLD against f16 at -ngl 99, {os.path.basename(model)} ({layers} layers), 4 x 512")
    print(f"{'K/V':16}" + "".join(f"{'-ngl ' + str(n):>24}" for n in (0, half, 99)))
for kv in pairs_ppl:
    cells = []
    for n in (0, half, 99):
        p, k = grab(f"{kv.replace('/', '-')}-ngl{n}")
        cells.append("failed" if p is None else f"{p:.4g} / {k if k is not None else float('nan'):.5f}")
    print(f"{kv:16}" + "".join(f"{c:>24}" for c in cells))
rows = [json.loads(l) for l in open(os.path.join(o, "llama-bench.jsonl")) if l.strip()]
print("\nllama-bench tg64 (tok/s), random-weight Llama-3.2-3B shape (28 layers), Q4_K_M")
keys = sorted({(r["n_gpu_layers"], r["n_depth"]) for r in rows})
print(f"{'K/V':16}" + "".join(f"{f'ngl {g} d{d}':>14}" for g, d in keys))
q4 = {(r["n_gpu_layers"], r["n_depth"]): r["avg_ts"] for r in rows if r["type_k"] == "q4_0" and r["type_v"] == "q4_0"}
for kv in pairs:
    k, v = kv.split("/")
    got = {(r["n_gpu_layers"], r["n_depth"]): r["avg_ts"] for r in rows if r["type_k"] == k and r["type_v"] == v}
    cells = []
    for key in keys:
        t = got.get(key)
        cells.append("—" if t is None else f"{t:.1f}" + (f" ({t / q4[key]:.2f})" if key in q4 and kv != "q4_0/q4_0" else ""))
    print(f"{kv:16}" + "".join(f"{c:>14}" for c in cells))
PY
