# Shared by main.sh and test.sh: where things are, and how to run llama-perplexity on them.
# shellcheck shell=bash

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR=${TBQ_BUILD_DIR:-$REPO/build}
BIN=$BUILD_DIR/bin
SHARED=${TBQ_SHARED:-$REPO/../shared}
WIKI=${TBQ_WIKITEXT:-$SHARED/data/wikitext-2-raw/wiki.test.raw}
THREADS=${TBQ_THREADS:-$(nproc)}

die() { echo "${0##*/}: error: $*" >&2; exit 1; }
say() { echo "${0##*/}: $*" >&2; }

# ensure_tools TOOL...: installs missing build tools (scripts/ensure-tools.sh) or stops with the
# command that would; pip's cmake (non-root machines) is found in the user's bin folder.
ensure_tools() {
    "$REPO/scripts/ensure-tools.sh" "$@" || exit 1
    PATH="$(python3 -m site --user-base)/bin:$PATH"
}

need_wikitext() {
    [ -f "$WIKI" ] || die "WikiText-2 test file not found at $WIKI: put the shared data beside the repo (../shared/data) or set TBQ_WIKITEXT"
}

# Bits per element of a cache type, as llama.cpp stores it.
bits_per_elem() {
    case $1 in
    f16) echo 16 ;; q8_0) echo 8.5 ;; q4_0) echo 4.5 ;; tbq4_0) echo 4.125 ;; tbq3_0) echo 3.125 ;;
    *) echo "?" ;;
    esac
}

# ppl_run LOG MODEL K V CTX CHUNKS [extra llama-perplexity args...]
# Runs llama-perplexity with flash attention and the K/V cache types; the log keeps everything.
ppl_run() {
    local log=$1 model=$2 k=$3 v=$4 ctx=$5 chunks=$6
    shift 6
    "$BIN/llama-perplexity" -m "$model" -f "$WIKI" -c "$ctx" --chunks "$chunks" -b "$ctx" \
        -fa on -ctk "$k" -ctv "$v" -t "$THREADS" --no-warmup "$@" >"$log" 2>&1
}

# ppl_value LOG: "PPL ERR" from llama-perplexity's "Final estimate: PPL = 17.7646 +/- 0.53700".
ppl_value() {
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\).*/\1 \2/p' "$1" | tail -n1
}

# Test suites (test.sh, test-validation.sh): `step NAME CMD...` runs one check and counts it in
# $passed / $failed / $failures (the caller sets them to 0 / 0 / ()); `finish` prints the
# "N passed, N failed" line and exits non-zero if anything failed.
step() {
    local name=$1
    shift
    echo
    echo "=== $name"
    local start=$(date +%s)
    if "$@"; then
        passed=$((passed + 1))
        echo "=== ok: $name ($(($(date +%s) - start)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "=== FAILED: $name ($(($(date +%s) - start)) s)"
    fi
}

finish() {
    echo
    [ ${#failures[@]} -eq 0 ] || printf 'failed: %s\n' "${failures[@]}"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}
