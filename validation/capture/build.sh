#!/usr/bin/env bash
# build.sh [BUILD_DIR [OUT]] — compiles capture-kv.cpp against the static libraries of a patched
# llama.cpp build (scripts/build-llama.sh; default build/ of the repository, or $TBQ_BUILD_DIR)
# into OUT (default: build/validation/capture-kv of this repository). One C++ file: seconds, not
# a second llama.cpp build; the build folder itself is only read.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD=${1:-${TBQ_BUILD_DIR:-$REPO/build}}
LB=$BUILD/llama.cpp-build
SRC=$BUILD/llama.cpp
[ -f "$LB/src/libllama.a" ] || { echo "build.sh: no $LB/src/libllama.a: run scripts/build-llama.sh first" >&2; exit 1; }
# the same libtbq.a the build linked (its path is in the link line of llama-perplexity)
TBQ_A=$(grep -o '[^ ]*libtbq\.a' "$LB/tools/perplexity/CMakeFiles/llama-perplexity.dir/link.txt" | head -n1)
[ -f "$TBQ_A" ] || TBQ_A=$REPO/target/release/libtbq.a
# ggml's RPC backend (GGML_RPC=ON, scripts/build-llama.sh) is registered by libggml: link it when built
RPC_A=()
[ -f "$LB/ggml/src/ggml-rpc/libggml-rpc.a" ] && RPC_A=("$LB/ggml/src/ggml-rpc/libggml-rpc.a")
OUT=${2:-$REPO/build/validation/capture-kv}
mkdir -p "$(dirname "$OUT")"
${CXX:-c++} -O2 -std=c++17 -I"$SRC/include" -I"$SRC/ggml/include" \
    "$REPO/validation/capture/capture-kv.cpp" -o "$OUT" \
    "$LB/src/libllama.a" "$LB/ggml/src/libggml.a" "$LB/ggml/src/libggml-cpu.a" ${RPC_A[@]+"${RPC_A[@]}"} "$LB/ggml/src/libggml-base.a" \
    "$TBQ_A" -ldl -lm -fopenmp -lpthread
echo "$OUT"
