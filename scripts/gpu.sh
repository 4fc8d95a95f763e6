#!/usr/bin/env bash
# The one command to run on the GPU machine (no Rust needed there): the GPU tests, then the
# benchmarks, from the binaries scripts/gpu-prepare.sh left in .gpu/. Logs and JSON go to $OUT
# (default ./gpu-out); a short table comes last.
#
#   scripts/gpu.sh [--quick]      # --quick: fewer sizes and repetitions in the benchmark
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
[[ -x .gpu/gpu-tests && -x .gpu/tbq-gpu-bench ]] || { echo "gpu.sh: .gpu/ missing: run scripts/gpu-prepare.sh first and carry .gpu" >&2; exit 2; }

{ nvidia-smi; nvidia-smi -q | grep -iE "clocks|persistence|product name|driver" ; } >"$OUT/nvidia-smi.txt" 2>&1 || true
cp .gpu/ptxas-*.txt "$OUT/" 2>/dev/null || true

echo "== GPU tests" >&2
timeout 900 .gpu/gpu-tests --test-threads 1 --nocapture >"$OUT/gpu-tests.log" 2>&1
TRC=$?
if [[ $TRC -eq 0 ]] && grep -q "SKIP: no CUDA" "$OUT/gpu-tests.log"; then
    echo "gpu.sh: the GPU tests found no device (they skipped): treating as failure" >&2
    TRC=3
fi
grep -E "^test |test result|panicked|SKIP" "$OUT/gpu-tests.log" | tail -n 30

echo "== benchmark" >&2
BRC=0
if [[ $TRC -eq 0 ]]; then
    timeout 1200 .gpu/tbq-gpu-bench "$@" --json "$OUT/bench.json" >"$OUT/bench.log" 2>&1
    BRC=$?
    # the trellis encoder and decoder (issue 12's candidate codec), beside tbq3_0/tbq3_1's set_rows
    timeout 300 .gpu/tbq-gpu-bench --trellis --json "$OUT/trellis-bench.json" >"$OUT/trellis-bench.log" 2>&1 || BRC=1
else
    echo "gpu.sh: tests failed (rc $TRC): benchmark skipped; see $OUT/gpu-tests.log" >&2
    grep -B2 -A12 "panicked" "$OUT/gpu-tests.log" | head -n 60
fi

# One profile of the decode kernel (64K tokens, D 128, GQA 4) where Nsight Compute reads the counters:
# achieved occupancy, warp stall reasons, issue efficiency -> $OUT/ncu-fattn.txt
if [[ $TRC -eq 0 && "${TBQ_NCU:-1}" == 1 ]] && command -v ncu >/dev/null 2>&1; then
    timeout 240 ncu --clock-control none --kernel-name regex:k_tbq_fattn_mma --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        --section SchedulerStats --section MemoryWorkloadAnalysis --section InstructionStats \
        .gpu/tbq-gpu-bench --quick --shape 128,4,65536 --json /dev/null >"$OUT/ncu-fattn.txt" 2>&1 ||
        echo "gpu.sh: ncu failed (rc $?): see $OUT/ncu-fattn.txt" >&2
fi

echo
echo "==== summary: tests rc=$TRC, bench rc=$BRC ($(head -n 20 "$OUT/nvidia-smi.txt" | grep -oE 'NVIDIA [A-Z0-9 ]+' | head -n1))"
grep "test result" "$OUT/gpu-tests.log" | tail -n 1
[[ -f "$OUT/trellis-bench.log" ]] && grep -A40 "^trellis codes" "$OUT/trellis-bench.log"
[[ -f "$OUT/bench.log" ]] && cat "$OUT/bench.log"
[[ $TRC -eq 0 && $BRC -eq 0 ]]
