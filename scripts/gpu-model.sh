# shellcheck shell=bash
# Sourced by scripts/gpu-e2e.sh and gpu-rpc.sh (on the GPU machine; $BIN, $LLAMA and $OUT set).
# make_model ARCH: a random-weight model of the real shape, f16 written by gpu-llama-model.py, then
# Q4_K_M by llama-quantize (as a user would run it); echoes the path.
make_model() {
    local arch=$1 dir=/tmp/tbq-e2e-$1 name
    name=$([[ $arch == llama3b ]] && echo random-llama || echo random-gemma3)
    if [[ ! -f $dir/$name-q4_k_m.gguf ]]; then
        mkdir -p "$dir"
        python3 scripts/gpu-llama-model.py "$dir" --gguf-py "$LLAMA/gguf-py" --arch "$arch" --full >&2 || return 1
        "$BIN/llama-quantize" "$dir/$name.gguf" "$dir/$name-q4_k_m.gguf" Q4_K_M 16 >"$OUT/quantize-$arch.log" 2>&1 || return 1
        rm -f "$dir/$name.gguf"
    fi
    echo "$dir/$name-q4_k_m.gguf"
}

