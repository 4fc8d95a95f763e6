#!/usr/bin/env bash
# Run ON the GPU machine (CUDA toolkit, cmake, gcc, python; no Rust, no network): builds llama.cpp with
# the tbq types and ggml's CUDA backend wired to the crate (patches/0006-ggml-cuda-tbq.patch), from what
# scripts/gpu-llama-prepare.sh left in .gpu-llama/ (carry it), then checks the tbq ops on CUDA0 against
# the CPU backend with test-backend-ops and, time allowing, runs llama-perplexity / llama-bench on a
# random-weight model made here (no tbq op may run on the CPU: GGML_SCHED_DEBUG=2 shows where each runs).
# Logs go to $OUT (default ./gpu-out); a short table comes last.
#
#   scripts/gpu-llama.sh [--no-model]
# (speed: scripts/gpu-e2e.sh, on the build this leaves; through a CUDA RPC worker: scripts/gpu-rpc.sh)
# Env: TBQ_GPU_BUDGET_S (default 500): the model steps start only while the run is under it.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
BUDGET=${TBQ_GPU_BUDGET_S:-500}
DO_MODEL=1
for a in "$@"; do
    case "$a" in
        --no-model) DO_MODEL=0 ;;
        *) echo "gpu-llama.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

[[ -f .gpu-llama/llama.cpp.tar.gz && -f .gpu-llama/libtbq-cuda.a.gz ]] || {
    echo "gpu-llama.sh: .gpu-llama/ missing: run scripts/gpu-llama-prepare.sh here first and carry .gpu-llama" >&2; exit 2; }
command -v nvcc >/dev/null 2>&1 || export PATH="/usr/local/cuda/bin:$PATH"

# --- the tree and the library (kept between calls on a warm machine: only what changed rebuilds) ---
BUILD="$REPO/build/gpu-llama"
LLAMA="$REPO/build/gpu-llama-src/llama.cpp"
mkdir -p "$BUILD" "$(dirname "$LLAMA")"
WANT_STAMP=$(tar -xzOf .gpu-llama/llama.cpp.tar.gz llama.cpp/.tbq-stamp 2>/dev/null)
if [[ ! -f "$LLAMA/.tbq-stamp" || "$(cat "$LLAMA/.tbq-stamp")" != "$WANT_STAMP" ]]; then
    rm -rf "$LLAMA"
    tar -C "$(dirname "$LLAMA")" -xzf .gpu-llama/llama.cpp.tar.gz
fi
LIB="$REPO/build/gpu-llama-lib/libtbq-cuda.a"
mkdir -p "$(dirname "$LIB")"
gzip -dc .gpu-llama/libtbq-cuda.a.gz >"$LIB.new"
if cmp -s "$LIB.new" "$LIB"; then rm -f "$LIB.new"; else mv "$LIB.new" "$LIB"; fi

{ nvidia-smi; nvcc --version; cmake --version; } >"$OUT/env.txt" 2>&1

# --- build -----------------------------------------------------------------------------------------------
GEN=()
command -v ninja >/dev/null 2>&1 && [[ ! -f "$BUILD/CMakeCache.txt" ]] && GEN=(-G Ninja)
T0=$SECONDS
{
    cmake -S "$REPO" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_RPC=ON \
        -DTBQ_BUILD_CRATE=OFF -DGGML_TBQ_LIB="$LIB" -DTBQ_LLAMA_DIR="$LLAMA" \
        -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF &&
    cmake --build "$BUILD" -j 16 --target test-backend-ops llama-perplexity llama-bench llama-quantize llama-tokenize ggml-rpc-server
} >"$OUT/build.log" 2>&1
BRC=$?
say "build: rc=$BRC in $((SECONDS - T0)) s"
if [[ $BRC -ne 0 ]]; then
    grep -E "error|Error|undefined reference" "$OUT/build.log" | head -n 40
    tail -n 30 "$OUT/build.log"
    exit 1
fi
BIN="$BUILD/bin"
[[ "${TBQ_GPU_BUILD_ONLY:-0}" == 1 ]] && exit 0 # scripts/gpu-bench.sh builds while the crate's part runs

# --- test-backend-ops: the tbq cases of each op, CUDA0 against the CPU ------------------------------------
TLOG="$OUT/test-backend-ops.log"
: >"$TLOG"
declare -A TRC
for op in SET_ROWS CPY GET_ROWS FLASH_ATTN_EXT; do
    echo "===== test-backend-ops -b CUDA0 -o $op -p tbq" >>"$TLOG"
    timeout 240 "$BIN/test-backend-ops" -b CUDA0 -o "$op" -p tbq >"$OUT/tbo-$op.tmp" 2>&1
    TRC[$op]=$?
    cat "$OUT/tbo-$op.tmp" >>"$TLOG"; rm -f "$OUT/tbo-$op.tmp"
done

# --- perplexity + bench on a random model ----------------------------------------------------------------
PRC=-; GS=-; CPU_TBQ=-; SPLITS=-
if [[ $DO_MODEL -eq 1 && $SECONDS -lt $BUDGET ]]; then
    MD=/tmp/tbq-model
    if [[ ! -f $MD/random-llama.gguf ]]; then
        python3 scripts/gpu-llama-model.py $MD --gguf-py "$LLAMA/gguf-py" --layers 4 >"$OUT/perplexity.log" 2>&1 || say "model: failed (see perplexity.log)"
    fi
    if [[ -f $MD/random-llama.gguf ]]; then
        # -v prints the scheduler's assignment of every node (GGML_SCHED_DEBUG=2) at debug level; a first
        # ubatch of a quarter of the context sets the key offset over the rest of it (patch 0014, opt-in: RoPE's
        # backward op on the GPU, llama3 rope factors)
        LLAMA_TBQ_KEY_CENTRE_SPAN=1 GGML_SCHED_DEBUG=2 timeout 150 "$BIN/llama-perplexity" -m $MD/random-llama.gguf -f $MD/text.txt -c 1024 -b 1024 -ub 256 --chunks 2 \
            -ngl 99 -fa on -ctk tbq4_0 -ctv tbq3_0 -v >>"$OUT/perplexity.log" 2>&1
        PRC=$?
        GS=$(grep -oE "(graph splits = [0-9]+|graph: nodes = [0-9]+, splits = [0-9]+)" "$OUT/perplexity.log" | tail -n1)
        # nodes of the ops the tbq cache reaches, by backend (the field after the node's name: [CUDA0 ...] or [CPU ...])
        # (debug lines carry a time prefix: "0.00.316.735 D node #  0 (  GET_ROWS): embd ... [  CPU ...")
        grep -E "node # *[0-9]+ \(" "$OUT/perplexity.log" | grep -E "SET_ROWS|FLASH_ATTN|GET_ROWS|CPY|CONT|DUP|ROPE_BACK" \
            | sed -E 's/^.*node # *[0-9]+ \( *([A-Z_]+)\): *([^ ]+)[^[]*\[ *([A-Za-z0-9]+).*/\1 \3 \2/; s/[0-9]+/#/g' \
            | sort | uniq -c >"$OUT/tbq-node-backends.txt"
        # (the token-embedding GET_ROWS of the input layer runs where the embeddings live: not a tbq op)
        CPU_TBQ=$(grep -E " CPU " "$OUT/tbq-node-backends.txt" | grep -vcE " (embd|inp_embd|token_embd)$" || true)
        SPLITS=$(grep -oE "## SPLIT #[0-9]+: [A-Za-z0-9]+" "$OUT/perplexity.log" | sort | uniq -c | tr -s ' ' | paste -sd';')
        grep -E "Final estimate|graph splits|tbq|error|failed" "$OUT/perplexity.log" | grep -v "^node" | tail -n 12 >"$OUT/perplexity.tail"
    fi
fi

# --- table -------------------------------------------------------------------------------------------------
say ""
say "==== tbq on CUDA0 ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)), run ${SECONDS} s"
for op in SET_ROWS CPY GET_ROWS FLASH_ATTN_EXT; do
    sect=$(awk -v h="===== test-backend-ops -b CUDA0 -o $op -p tbq" '$0==h{f=1;next} /^===== /{f=0} f' "$TLOG")
    passed=$(grep -oE "[0-9]+/[0-9]+ tests passed" <<<"$sect" | tail -n1)
    nsup=$(grep -c "not supported" <<<"$sect")
    fails=$(grep -cE "FAIL" <<<"$sect")
    say "$(printf '%-15s rc=%-3s %-22s not-supported=%-3s FAIL-lines=%s' "$op" "${TRC[$op]}" "${passed:-?}" "$nsup" "$fails")"
done
say "perplexity rc=$PRC  ${GS}  tbq-op nodes on CPU: $CPU_TBQ  (scheduler splits seen: $SPLITS)"
[[ -f "$OUT/tbq-node-backends.txt" ]] && cat "$OUT/tbq-node-backends.txt" | tee -a "$SUMMARY"
[[ -f "$OUT/perplexity.tail" ]] && grep -E "Final estimate|graph splits" "$OUT/perplexity.tail" | tail -n 3 | tee -a "$SUMMARY"
exit 0
