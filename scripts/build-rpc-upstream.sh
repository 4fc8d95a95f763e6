#!/usr/bin/env bash
# build-rpc-upstream.sh [BUILD_DIR] — an upstream ggml-rpc-server: the pinned llama.cpp tree without the
# patch series (fetch-llama.sh with TBQ_UNPATCHED=1), only that target, so a worker without the tbq
# types is at hand (scripts/test-rpc.sh checks that a tbq client refuses it by name). BUILD_DIR
# defaults to build/rpc-upstream; the binary is BUILD_DIR/bin/ggml-rpc-server. Incremental, with ccache
# when ggml finds it; a few minutes on 2 cores the first time (ggml-base and ggml-cpu).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT_DIR=${1:-$BUILD_DIR/rpc-upstream}
TREE=$OUT_DIR/llama.cpp
TBQ_UNPATCHED=1 "$REPO/scripts/fetch-llama.sh" "$TREE"

FLAGS=()
# the same AMX exclusion as build-llama.sh (the kernel of this project's VMs grants no AMX tile state)
if [ "$(uname -m)" = x86_64 ]; then
    NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    FLAGS=("-DCMAKE_C_FLAGS=$NO_AMX" "-DCMAKE_CXX_FLAGS=$NO_AMX")
fi
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$REPO}"
cmake -S "$TREE" -B "$OUT_DIR" -DCMAKE_BUILD_TYPE=Release -DGGML_RPC=ON -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_NUMBER=11312 "${FLAGS[@]}" >"$OUT_DIR.configure.log" 2>&1 ||
    { tail -n 30 "$OUT_DIR.configure.log"; die "configuring the unpatched tree failed (log: $OUT_DIR.configure.log)"; }
cmake --build "$OUT_DIR" -j "${TBQ_JOBS:-$(nproc)}" --target ggml-rpc-server >"$OUT_DIR.build.log" 2>&1 ||
    { tail -n 30 "$OUT_DIR.build.log"; die "building the upstream ggml-rpc-server failed (log: $OUT_DIR.build.log)"; }
echo "$OUT_DIR/bin/ggml-rpc-server"
