#!/usr/bin/env bash
# fetch-llama.sh DEST — place the pinned llama.cpp tree, patched for tbq, at DEST.
#
# Source: the llama.cpp tree vendored in the llama-cpp-python 0.3.36 source distribution (PyPI),
# llama.cpp build 11312 / ggml 0.25.3, checked against its sha256. The sdist is cached in
# ${TBQ_CACHE:-$HOME/.cache/tbq}; TBQ_LLAMA_SDIST=/path/to/llama_cpp_python-0.3.36.tar.gz uses a local
# copy instead of downloading (it is checked all the same).
#
# Then patches/*.patch are applied in the order of patches/series. Idempotent: DEST/.tbq-stamp holds a
# hash of the sdist, the series and every patch; when it matches, nothing is done. When the patches
# change, DEST is extracted afresh (files the patches do not touch keep the archive's timestamps, so
# an existing build only recompiles what the patches change).
#
# TBQ_UNPATCHED=1 places the pristine tree, no patch applied: a build without the tbq types, for the
# tests that need one (scripts/test-rpc.sh: an upstream ggml-rpc-server).
set -euo pipefail

LLAMA_PY_VERSION="0.3.36"
SDIST_NAME="llama_cpp_python-${LLAMA_PY_VERSION}.tar.gz"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST_SUBDIR="llama_cpp_python-${LLAMA_PY_VERSION}/vendor/llama.cpp"

die()  { echo "fetch-llama: error: $*" >&2; exit 1; }
info() { echo "fetch-llama: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 DEST   (DEST: directory to hold the patched llama.cpp tree)"
DEST="$1"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PATCHES="$REPO/patches"
SERIES="$PATCHES/series"
[ -f "$SERIES" ] || die "missing $SERIES (the ordered list of patches)"

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        die "neither sha256sum nor shasum is installed"
    fi
}

sha256_of_stdin() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum | cut -d' ' -f1
    else
        shasum -a 256 | cut -d' ' -f1
    fi
}

# --- the patch list ---------------------------------------------------------------------------------
PATCH_FILES=()
[ "${TBQ_UNPATCHED:-0}" = 1 ] && SERIES=/dev/null
while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    line="$(echo "$line" | tr -d '[:space:]')"
    [ -n "$line" ] || continue
    [ -f "$PATCHES/$line" ] || die "patches/series names $line, but $PATCHES/$line does not exist"
    PATCH_FILES+=("$PATCHES/$line")
done < "$SERIES"

STAMP_WANT="$({
    echo "sdist $SDIST_SHA256"
    echo "script 2"
    [ "${TBQ_UNPATCHED:-0}" = 1 ] && echo "unpatched"
    for p in "${PATCH_FILES[@]}"; do
        echo "patch $(basename "$p") $(sha256_of "$p")"
    done
} | sha256_of_stdin)"

STAMP_FILE="$DEST/.tbq-stamp"
if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP_WANT" ] && [ -f "$DEST/CMakeLists.txt" ]; then
    info "$DEST is up to date (llama.cpp from llama-cpp-python $LLAMA_PY_VERSION, ${#PATCH_FILES[@]} patches)"
    exit 0
fi

command -v patch >/dev/null 2>&1 || die "patch(1) is not installed (apt-get install patch)"

# --- the source distribution -------------------------------------------------------------------------
CACHE="${TBQ_CACHE:-$HOME/.cache/tbq}"
mkdir -p "$CACHE"
SDIST="$CACHE/$SDIST_NAME"

if [ -n "${TBQ_LLAMA_SDIST:-}" ]; then
    [ -f "$TBQ_LLAMA_SDIST" ] || die "TBQ_LLAMA_SDIST=$TBQ_LLAMA_SDIST does not exist"
    SDIST="$TBQ_LLAMA_SDIST"
elif [ ! -f "$SDIST" ]; then
    PY="$(command -v python3 || command -v python || true)"
    [ -n "$PY" ] || die "python3 is needed to download $SDIST_NAME (pip download); or set TBQ_LLAMA_SDIST to a local copy"
    info "downloading $SDIST_NAME from PyPI into $CACHE"
    TMPDL="$(mktemp -d "$CACHE/dl.XXXXXX")"
    if ! "$PY" -m pip download "llama-cpp-python==$LLAMA_PY_VERSION" --no-deps --no-binary llama-cpp-python \
            -d "$TMPDL" >&2; then
        rm -rf "$TMPDL"
        die "pip download llama-cpp-python==$LLAMA_PY_VERSION failed (network? pip?); or set TBQ_LLAMA_SDIST"
    fi
    [ -f "$TMPDL/$SDIST_NAME" ] || { rm -rf "$TMPDL"; die "pip download did not produce $SDIST_NAME"; }
    mv "$TMPDL/$SDIST_NAME" "$SDIST"
    rm -rf "$TMPDL"
fi

GOT="$(sha256_of "$SDIST")"
if [ "$GOT" != "$SDIST_SHA256" ]; then
    die "checksum mismatch for $SDIST
  expected sha256 $SDIST_SHA256
  found    sha256 $GOT
  The file is corrupt or not the pinned release: delete it and run again."
fi
info "sdist ok: $SDIST (sha256 $GOT)"

# --- extract + patch into a fresh directory, then swap it in -----------------------------------------
DEST_PARENT="$(dirname "$DEST")"
mkdir -p "$DEST_PARENT"
WORK="$(mktemp -d "$DEST_PARENT/.llama-fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

info "extracting $SDIST_SUBDIR"
tar -xzf "$SDIST" -C "$WORK" "$SDIST_SUBDIR" || die "extracting $SDIST_SUBDIR from $SDIST failed"
TREE="$WORK/$SDIST_SUBDIR"
[ -f "$TREE/CMakeLists.txt" ] || die "$SDIST has no $SDIST_SUBDIR/CMakeLists.txt"
# the vendored tree carries a git submodule pointer (.git file) to a repository that is not there
rm -f "$TREE/.git"

for p in "${PATCH_FILES[@]}"; do
    info "applying $(basename "$p")"
    # patch(1), not git apply: git apply silently skips files when DEST lies inside another git checkout
    if ! patch -d "$TREE" -p1 --forward --batch --fuzz=0 --no-backup-if-mismatch -s < "$p" >&2; then
        die "$(basename "$p") does not apply to llama.cpp from llama-cpp-python $LLAMA_PY_VERSION (see the output above)"
    fi
done
if find "$TREE" -name '*.rej' -o -name '*.orig' | grep -q .; then
    die "patching left .rej/.orig files in $TREE"
fi

echo "$STAMP_WANT" > "$TREE/.tbq-stamp"

if [ -e "$DEST" ]; then
    # only ever replace a tree this script made (never an arbitrary directory given by mistake)
    [ -f "$DEST/.tbq-stamp" ] || die "$DEST exists but was not made by fetch-llama.sh (no .tbq-stamp): remove it or pick another DEST"
    # a patched file whose content did not change keeps its old timestamp: a build dir recompiles only
    # what the new patches really change (untouched files carry the archive's timestamps anyway)
    for p in "${PATCH_FILES[@]}"; do
        sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$p"
    done | sort -u | while IFS= read -r f; do
        if [ -f "$DEST/$f" ] && [ -f "$TREE/$f" ] && cmp -s "$DEST/$f" "$TREE/$f"; then
            touch -r "$DEST/$f" "$TREE/$f"
        fi
    done
    rm -rf "$DEST"
fi
mv "$TREE" "$DEST"
info "llama.cpp ready at $DEST (${#PATCH_FILES[@]} patches)"
