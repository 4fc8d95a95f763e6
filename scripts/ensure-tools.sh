#!/usr/bin/env bash
# ensure-tools.sh TOOL... — installs the build tools main.sh and test.sh need, when they are missing.
#
#   TOOL: cmake | cxx (a C and C++ compiler, make) | unzip | libclang (for bindgen's layout test)
#
# A fresh Debian machine has Rust and Python and nothing else the build uses. As root with apt-get,
# the missing Debian packages are installed (one `apt-get update` first). Otherwise cmake comes
# from PyPI (`pip install --user cmake`, the official wheels), and for the rest the error names the
# one command to run (pip's cmake lands in the user's bin folder: lib.sh puts that on PATH).
# Prints what it does on stderr; exits non-zero only when a tool is still missing.
set -euo pipefail

say() { echo "ensure-tools: $*" >&2; }

# bindgen needs libclang and clang's own headers (stddef.h): Debian's libclang-dev has both.
have_libclang() {
    compgen -G "/usr/lib/llvm-*/lib/libclang.so" >/dev/null && return 0
    [ -n "${LIBCLANG_PATH:-}" ] && compgen -G "$LIBCLANG_PATH/libclang*.so*" >/dev/null
}

# present TOOL: whether the tool is usable now
present() {
    case $1 in
    cmake) command -v cmake >/dev/null ;;
    cxx) command -v cc >/dev/null && command -v c++ >/dev/null && command -v make >/dev/null ;;
    unzip) command -v unzip >/dev/null ;;
    libclang) have_libclang ;;
    *) say "unknown tool '$1' (cmake, cxx, unzip, libclang)"; exit 2 ;;
    esac
}

# debian_package TOOL
debian_package() {
    case $1 in
    cmake) echo cmake ;; cxx) echo build-essential ;; unzip) echo unzip ;; libclang) echo libclang-dev ;;
    esac
}

missing=()
for tool in "$@"; do
    present "$tool" || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    pkgs=()
    for tool in "${missing[@]}"; do pkgs+=("$(debian_package "$tool")"); done
    say "installing ${pkgs[*]} (apt-get, for: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
else
    for tool in "${missing[@]}"; do
        if [ "$tool" = cmake ]; then
            say "installing cmake from PyPI (pip install --user cmake)"
            python3 -m pip install --quiet --user cmake >&2 || true
            export PATH="$(python3 -m site --user-base)/bin:$PATH"
        fi
    done
fi

still=()
for tool in "${missing[@]}"; do
    present "$tool" || still+=("$tool")
done
if [ ${#still[@]} -gt 0 ]; then
    pkgs=()
    for tool in "${still[@]}"; do pkgs+=("$(debian_package "$tool")"); done
    say "error: still missing: ${still[*]}. Install them with:"
    say "    sudo apt-get install ${pkgs[*]}"
    say "(or your system's packages for them), then run this again."
    exit 1
fi
exit 0
