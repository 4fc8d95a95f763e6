#!/usr/bin/env bash
# The one command for the GPU machine: builds, checks and benchmarks everything, prints a table last.
#
#   here (no GPU needed):   scripts/gpu-prepare.sh && scripts/gpu-llama-prepare.sh
#   there (carry .gpu and .gpu-llama):
#                           scripts/gpu-bench.sh [--part all|crate|llama|ref|e2e|offload|rpc]... (default: all)
#
# Parts, in order (all of them take about 15 minutes on an H100 with 16 cores):
#   crate  the crate's GPU tests against the CPU reference, its kernel benchmark (copy bandwidth,
#          set_rows, dequantize, FA decode at D 128/256, GQA 1/4/8, n_kv 1K..128K) and, where Nsight
#          Compute reads the counters, one profile of the decode kernel           (scripts/gpu.sh)
#   llama  llama.cpp with ggml-cuda wired to the crate: build, test-backend-ops -b CUDA0 for every tbq
#          case, llama-perplexity -ngl 99 with the scheduler's graph splits       (scripts/gpu-llama.sh)
#   ref    train the head_dim-128 reference model, then its WikiText-2 PPL/KLD matrix on this build
#          (tbq-validate ppl's default pairs; scripts/gpu-ref-model.sh, ~6 min)
#   e2e    FA decode of upstream's kernels and tbq's in one harness, llama-bench tg128 at depth
#          0/8K/32K + pp2048 on real-size random models                          (scripts/gpu-e2e.sh)
#   offload partial offload: perplexity at -ngl 0 / half / 99 (same KLD wherever the layers run) and
#          llama-bench tg at depth 0 and 4K at -ngl 0 / 14 / 99, 3B shape        (scripts/gpu-offload.sh)
#   rpc    decode through a CUDA ggml-rpc-server on 127.0.0.1 vs local, tg128 at depth 0/8K/32K,
#          3B shape (not in `all`: run it on its own, after llama)                (scripts/gpu-rpc.sh)
# With `--part crate --part llama` the llama.cpp build runs in the background while the crate's tests
# and benchmark run (the benchmark times GPU work; the build only loads the CPU).
# A lent machine with a 10-minute limit per command: `--part crate --part llama` in one call and
# `--part e2e` in the next on the same (warm) machine: build outputs stay between calls.
# Everything lands in $OUT (default ./gpu-out); scripts/gpu-report.py prints the tables and, here,
# draws the plot: python3 scripts/gpu-report.py gpu-out --plot bench/h100.png
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
PARTS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --part) PARTS+=("$2"); shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "gpu-bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ ${#PARTS[@]} -eq 0 || " ${PARTS[*]} " == *" all "* ]] && PARTS=(crate llama ref e2e offload)
has() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

RC=0
BUILD_PID=
if has llama && has crate; then
    # build in the background (gpu-llama.sh's build step only), the checks after the crate's part
    TBQ_GPU_BUILD_ONLY=1 scripts/gpu-llama.sh >"$OUT/gpu-llama-build.out" 2>&1 &
    BUILD_PID=$!
fi
if has crate; then
    scripts/gpu.sh >"$OUT/gpu-crate.out" 2>&1 || RC=1
    tail -n 12 "$OUT/gpu-crate.out"
fi
if has llama; then
    [[ -n "$BUILD_PID" ]] && { wait "$BUILD_PID" || RC=1; }
    scripts/gpu-llama.sh >"$OUT/gpu-llama.out" 2>&1 || RC=1
fi
if has ref; then
    scripts/gpu-ref-model.sh >"$OUT/gpu-ref-model.out" 2>&1 || RC=1
    tail -n 25 "$OUT/gpu-ref-model.out"
fi
if has e2e; then
    scripts/gpu-e2e.sh >"$OUT/gpu-e2e.out" 2>&1 || RC=1
fi
if has offload; then
    scripts/gpu-offload.sh >"$OUT/gpu-offload.out" 2>&1 || RC=1
    tail -n 14 "$OUT/gpu-offload.out"
fi
if has rpc; then
    scripts/gpu-rpc.sh >"$OUT/gpu-rpc.out" 2>&1 || RC=1
    tail -n 11 "$OUT/gpu-rpc.out"
fi

echo
echo "==== gpu-bench: parts ${PARTS[*]} ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)), ${SECONDS} s"
[[ -f "$OUT/summary.txt" ]] && has llama && cat "$OUT/summary.txt"
python3 scripts/gpu-report.py "$OUT" 2>&1 | tail -n 80
exit $RC
