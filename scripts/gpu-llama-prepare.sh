#!/usr/bin/env bash
# Prepares, on this machine (no GPU, no CUDA toolkit needed), what scripts/gpu-llama.sh builds and runs
# on the GPU machine, which has CUDA but no Rust and no network:
#   .gpu-llama/libtbq-cuda.a.gz   the crate built with `--features cuda` (kernels for sm_90 by default;
#                                 debug info stripped), linked into ggml-cuda as GGML_TBQ_LIB
#   .gpu-llama/llama.cpp.tar.gz   the pinned llama.cpp tree with patches/series applied (fetch-llama.sh,
#                                 here into .llama/llama.cpp; its .tbq-stamp lets the top-level
#                                 CMakeLists use it as it is, offline), trimmed of what the build does not
#                                 need (models, docs, examples, web UI, other backends, media)
# Only .gpu-llama travels (a few MiB); .llama and .gpu-llama are git-ignored (.git/info/exclude):
#   scripts/gpu-llama-prepare.sh     # then run there: scripts/gpu-llama.sh   (carry .gpu-llama)
# Env: TBQ_CUDA_ARCHS (default 90), NVCC (default: scripts/install-nvcc.sh's PyPI nvcc),
#   TBQ_REUSE_CUDA_LIB=1 (keep .gpu-llama/libtbq-cuda.a.gz as it is and refresh only the tree: for a
#   change to patches/ alone, when the crate build, 10-20 min on 2 cores, would give the same kernels).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [[ -z "${NVCC:-}" ]] && ! command -v nvcc >/dev/null 2>&1 && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
    NVCC="$(scripts/install-nvcc.sh)"
    export NVCC
fi
export TBQ_CUDA_ARCHS=${TBQ_CUDA_ARCHS:-90}

for d in .gpu-llama .llama; do
    grep -qxF "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done

# 1. the CUDA-enabled crate (own target dir: the CPU build's target/release/libtbq.a stays as it is)
if [[ "${TBQ_REUSE_CUDA_LIB:-0}" = 1 && -f .gpu-llama/libtbq-cuda.a.gz ]]; then
    echo "gpu-llama-prepare: TBQ_REUSE_CUDA_LIB=1: keeping .gpu-llama/libtbq-cuda.a.gz ($(date -r .gpu-llama/libtbq-cuda.a.gz '+%F %T'))" >&2
    LIB=/tmp/libtbq-cuda.a.$$
    gunzip -c .gpu-llama/libtbq-cuda.a.gz > "$LIB"
else
    echo "gpu-llama-prepare: cargo build --release --features cuda --lib (sm_${TBQ_CUDA_ARCHS//,/, sm_})" >&2
    CARGO_TARGET_DIR="$REPO/target/cuda" cargo build --release --features cuda --lib
    LIB=target/cuda/release/libtbq.a
fi
rm -rf .gpu-llama && mkdir -p .gpu-llama
cp "$LIB" .gpu-llama/libtbq-cuda.a
rm -f /tmp/libtbq-cuda.a.$$ # the unpacked copy TBQ_REUSE_CUDA_LIB made, if any
strip --strip-debug .gpu-llama/libtbq-cuda.a 2>/dev/null || true
SYMS="$(nm .gpu-llama/libtbq-cuda.a 2>/dev/null || true)"
grep -q " T tbq_cuda_flash_attn_ext" <<<"$SYMS" || { echo "gpu-llama-prepare: libtbq-cuda.a lacks tbq_cuda_flash_attn_ext" >&2; exit 1; }

# 2. the patched llama.cpp tree, trimmed
mkdir -p .llama
scripts/fetch-llama.sh "$REPO/.llama/llama.cpp"
( cd .llama/llama.cpp && rm -rf models docs examples media app tools/ui ggml/src/ggml-vulkan ggml/src/ggml-sycl ggml/src/ggml-cann \
      ggml/src/ggml-opencl ggml/src/ggml-musa ggml/src/ggml-webgpu ggml/src/ggml-zdnn ggml/src/ggml-hexagon \
      ggml/src/ggml-metal ggml/src/ggml-openvino ggml/src/ggml-et ggml/src/ggml-virtgpu ggml/src/ggml-zendnn \
      ggml/src/ggml-hip benches pocs .devops .github ci 2>/dev/null || true )
# (tools/ui and tools/server are only configured with LLAMA_BUILD_SERVER=ON: gpu-llama.sh turns it off)
# the top-level llama.cpp CMakeLists only adds examples/ when LLAMA_BUILD_EXAMPLES is on (it is off);
# keep an empty examples/ all the same for scripts that glob it
mkdir -p .llama/llama.cpp/examples

find .llama/llama.cpp -type f \( -name '*.mp4' -o -name '*.mp3' -o -name '*.wav' -o -name '*.jpg' -o -name '*.png' \) -delete

gzip -9 -f .gpu-llama/libtbq-cuda.a
tar -C .llama -czf .gpu-llama/llama.cpp.tar.gz llama.cpp
du -sh .gpu-llama/*
TOTAL=$(du -sck .gpu-llama | tail -n1 | cut -f1)
echo "gpu-llama-prepare: .gpu-llama = $((TOTAL / 1024)) MiB (a run carries at most 64 MiB with the tree)" >&2
[[ $TOTAL -lt $((50 * 1024)) ]] || { echo "gpu-llama-prepare: too large to carry" >&2; exit 1; }
echo "gpu-llama-prepare: ready; on the GPU machine run scripts/gpu-llama.sh (carry .gpu-llama)" >&2
