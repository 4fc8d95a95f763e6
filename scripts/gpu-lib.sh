# shellcheck shell=bash
# Sourced first by the scripts that run ON the GPU machine after scripts/gpu-llama.sh built llama.cpp
# there (gpu-e2e.sh, gpu-ref-model.sh, gpu-offload.sh, gpu-rpc.sh): strict mode, the repository as the
# working directory, and where things are — REPO, OUT (default ./gpu-out, created), BIN (the CUDA
# build's binaries), LLAMA (its patched tree).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
BIN="$REPO/build/gpu-llama/bin"
LLAMA="$REPO/build/gpu-llama-src/llama.cpp"

# make_model ARCH: a random-weight model of the real shape (llama3b: Llama-3.2-3B; llama8b: Llama-3.1-8B;
# gemma3-270m), f16
# written by gpu-llama-model.py, then Q4_K_M by llama-quantize (as a user would run it); echoes the
# path. Kept in /tmp/tbq-e2e-ARCH, so a warm machine makes it once.
make_model() {
    local arch=$1 dir=/tmp/tbq-e2e-$1 name
    case $arch in llama3b) name=random-llama ;; llama8b) name=random-llama8b ;; *) name=random-gemma3 ;; esac
    if [[ ! -f $dir/$name-q4_k_m.gguf ]]; then
        mkdir -p "$dir"
        python3 "$REPO/scripts/gpu-llama-model.py" "$dir" --gguf-py "$LLAMA/gguf-py" --arch "$arch" --full >&2 || return 1
        "$BIN/llama-quantize" "$dir/$name.gguf" "$dir/$name-q4_k_m.gguf" Q4_K_M 16 >"$OUT/quantize-$arch.log" 2>&1 || return 1
        rm -f "$dir/$name.gguf"
    fi
    echo "$dir/$name-q4_k_m.gguf"
}
