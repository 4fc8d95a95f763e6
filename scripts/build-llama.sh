#!/usr/bin/env bash
# build-llama.sh [BUILD_DIR] [-- EXTRA_CMAKE_ARGS...]
#
# Configures and builds llama.cpp with the tbq KV-cache types through the top-level CMakeLists.txt:
# fetches + patches the pinned llama.cpp into BUILD_DIR/llama.cpp, builds libtbq.a with cargo, and
# builds the tools and tests that use the types, with ggml's RPC backend (GGML_RPC=ON: `--rpc` in every
# tool, the ggml-rpc-server worker). BUILD_DIR defaults to ./build in the repository.
#
# Extra cmake arguments after `--` (or in $TBQ_CMAKE_ARGS) pass through, e.g. for CUDA:
#   scripts/build-llama.sh build-cuda -- -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90
# Environment: TBQ_TARGETS (targets to build; default below), TBQ_JOBS (default: nproc),
#   TBQ_BUILD_TYPE (default Release), TBQ_CACHE / TBQ_LLAMA_SDIST (see fetch-llama.sh).
set -euo pipefail

die() { echo "build-llama: error: $*" >&2; exit 1; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

BUILD_DIR="$REPO/build"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    BUILD_DIR="$1"
    shift
fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then
    shift
fi
EXTRA_ARGS=("$@")
if [ -n "${TBQ_CMAKE_ARGS:-}" ]; then
    # shellcheck disable=SC2206 # word splitting of the env variable is intended
    EXTRA_ARGS+=(${TBQ_CMAKE_ARGS})
fi

command -v cmake >/dev/null 2>&1 || die "cmake is not installed: run scripts/ensure-tools.sh cmake cxx (main.sh and test.sh do), or pip install cmake"

# with ccache (ggml uses it when found): paths under the repository hash relative, so a fresh clone
# with the same layout (e.g. CI) reuses objects compiled by an earlier one
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$REPO}"

JOBS="${TBQ_JOBS:-$(nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)}"
BUILD_TYPE="${TBQ_BUILD_TYPE:-Release}"
TARGETS="${TBQ_TARGETS:-llama-server llama-cli llama-perplexity llama-bench test-backend-ops test-quantize-fns ggml-rpc-server test-rpc-multi-server}"

# ggml's AMX matrix multiply (compiled in by -march=native on CPUs that have AMX) segfaults where
# the kernel does not grant the AMX tile state to the process (seen on this project's VMs: every
# llama-perplexity run died in ggml_backend_amx_mul_mat). The AVX-512/AVX2 paths stay.
if [ "$(uname -m)" = x86_64 ]; then
    NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    EXTRA_ARGS+=("-DCMAKE_C_FLAGS=${CFLAGS:-} $NO_AMX" "-DCMAKE_CXX_FLAGS=${CXXFLAGS:-} $NO_AMX")
fi

GENERATOR=()
if command -v ninja >/dev/null 2>&1 && [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    GENERATOR=(-G Ninja)
fi

echo "build-llama: configuring $BUILD_DIR ($BUILD_TYPE${EXTRA_ARGS[*]:+, ${EXTRA_ARGS[*]}})"
cmake -S "$REPO" -B "$BUILD_DIR" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TESTS=ON \
    -DGGML_RPC=ON \
    "${EXTRA_ARGS[@]}"

echo "build-llama: building ($JOBS jobs): $TARGETS"
START=$(date +%s)
# shellcheck disable=SC2086 # TARGETS is a list
cmake --build "$BUILD_DIR" --config "$BUILD_TYPE" -j "$JOBS" --target $TARGETS
END=$(date +%s)

echo "build-llama: done in $((END - START)) s. Binaries:"
for t in $TARGETS; do
    if [ -x "$BUILD_DIR/bin/$t" ]; then
        echo "  $BUILD_DIR/bin/$t"
    else
        echo "  $BUILD_DIR/bin/$t (missing?)"
    fi
done
