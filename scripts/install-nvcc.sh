#!/usr/bin/env bash
# Installs the CUDA 13.0 compiler (nvcc, ptxas, nvvm, crt headers, cudart, cccl) from PyPI into DIR,
# so the crate's `cuda` feature can compile kernels/ on a machine without a GPU or a CUDA toolkit.
#
#   scripts/install-nvcc.sh [DIR]      # default: ${TBQ_CACHE:-$HOME/.cache/tbq}/cuda-13.0
#
# Afterwards DIR/nvidia/cu13/bin/nvcc exists; build.rs finds it there on its own (or set
# NVCC=DIR/nvidia/cu13/bin/nvcc). Idempotent: does nothing when nvcc is already installed.
set -euo pipefail

DIR=${1:-${TBQ_CACHE:-$HOME/.cache/tbq}/cuda-13.0}
NVCC="$DIR/nvidia/cu13/bin/nvcc"

if [[ -x "$NVCC" ]] && "$NVCC" --version >/dev/null 2>&1; then
    echo "install-nvcc: $NVCC already installed" >&2
    echo "$NVCC"
    exit 0
fi

mkdir -p "$DIR"
# nvvm is pinned too: a newer cicc than the driver-side ptxas/crt would reject its own output.
python3 -m pip install --disable-pip-version-check --no-deps --upgrade --target "$DIR" \
    nvidia-cuda-nvcc==13.0.88 \
    nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-cccl==13.0.85 \
    nvidia-nvvm==13.0.88 >&2

CU="$DIR/nvidia/cu13"
# nvcc links against $CUDA/lib64; the wheels ship lib/.
[[ -e "$CU/lib64" ]] || ln -s lib "$CU/lib64"
# The wheels put nvvm beside bin/ under nvidia/cu13/nvvm (cicc is found relative to nvcc).
chmod +x "$CU"/bin/* "$CU"/nvvm/bin/* 2>/dev/null || true

"$NVCC" --version >&2
echo "$NVCC"
