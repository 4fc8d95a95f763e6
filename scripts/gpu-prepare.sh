#!/usr/bin/env bash
# Builds, on this machine (no GPU needed), everything scripts/gpu.sh runs on the GPU machine:
# the GPU test binary and the benchmark, stripped, into .gpu/ (carry it with the run). Installs
# the PyPI nvcc first when no nvcc is found.
#
#   scripts/gpu-prepare.sh          # then, on the GPU machine: scripts/gpu.sh
#
# Kernels are built for sm_90 (+ compute_90 PTX) only by default: H100/H200, and all seven
# architectures would make each binary ~37 MB (over the 64 MiB a run may carry). Override with
# TBQ_CUDA_ARCHS=90,100 (comma list) for other cards.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [[ -z "${NVCC:-}" ]] && ! command -v nvcc >/dev/null 2>&1 && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
    NVCC="$(scripts/install-nvcc.sh)"
    export NVCC
fi

export TBQ_CUDA_ARCHS=${TBQ_CUDA_ARCHS:-90}
echo "gpu-prepare: kernels for sm_${TBQ_CUDA_ARCHS//,/, sm_}" >&2
# Build first (errors visible), then ask cargo for the test binary's path (JSON messages).
cargo test --release --features cuda --test gpu --no-run
TEST_EXE=$(cargo test --release --features cuda --test gpu --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])' | tail -n1)
[[ -n "$TEST_EXE" ]] || { echo "gpu-prepare: could not build the GPU tests" >&2; cargo test --release --features cuda --test gpu --no-run; exit 1; }
cargo build --release --features cuda --bin tbq-gpu-bench

rm -rf .gpu && mkdir -p .gpu
cp "$TEST_EXE" .gpu/gpu-tests
cp target/release/tbq-gpu-bench .gpu/tbq-gpu-bench
cargo build --release -p tbq-validate
cp target/release/tbq-validate .gpu/tbq-validate
cp "$REPO/../shared/data/wikitext-2-raw/wiki.test.raw" .gpu/ # the reference model's matrix (gpu-ref-model.sh)
strip .gpu/gpu-tests .gpu/tbq-gpu-bench .gpu/tbq-validate 2>/dev/null || true
OUT_DIR=$(dirname "$(ls -t target/release/build/tbq-*/out/ptxas-sm_90.txt | head -n1)")
cp "$OUT_DIR/ptxas-sm_90.txt" "$OUT_DIR/ptxas-all.txt" .gpu/
# Check here what can be checked without a GPU: the tests run and skip cleanly.
.gpu/gpu-tests --test-threads 1 --nocapture 2>&1 | grep -E "SKIP|test result" | tail -n 4
du -sh .gpu
echo "gpu-prepare: .gpu/ ready; run scripts/gpu.sh on the GPU machine (carry .gpu)" >&2
