#!/usr/bin/env bash
# cpu-bench.sh BEFORE_BIN AFTER_BIN OUT_DIR — llama-bench on the CPU (-ngl 0), Gemma 3 270M, for the
# cache pairs of issue 14 part 3, each pair run with BEFORE's binaries and then AFTER's back to back
# (interleaved, so both see the same machine state). Writes OUT_DIR/before.jsonl and after.jsonl.
# Environment: TBQ_THREADS (2), TBQ_PAIRS (the K/V pairs, space-separated), TBQ_REPS (-r, 2),
# TBQ_MODEL (a name scripts/fetch-model.sh knows: gemma3-270m, or smollm2-135m for 64-wide heads).
set -euo pipefail
BEFORE="$1"; AFTER="$2"; OUT="$3"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="$("$REPO/scripts/fetch-model.sh" "${TBQ_MODEL:-gemma3-270m}")"
THREADS="${TBQ_THREADS:-2}"
mkdir -p "$OUT"
: > "$OUT/before.jsonl"; : > "$OUT/after.jsonl"
PAIRS="${TBQ_PAIRS:-q4_0/q4_0 f16/f16 tbq4_0/tbq3_0 tbq4_1/tbq4_0 tbq5_1/tbq3_1}"
REPS="${TBQ_REPS:-2}"
for pair in $PAIRS; do
    k="${pair%/*}"; v="${pair#*/}"
    for side in before after; do
        bin="$BEFORE"; [ "$side" = after ] && bin="$AFTER"
        echo "cpu-bench: $side $k/$v" >&2
        "$bin/llama-bench" -m "$MODEL" -ngl 0 -t "$THREADS" -fa 1 -ctk "$k" -ctv "$v" \
            -p 512 -n 32 -d 0,2048 -r "$REPS" -o jsonl >> "$OUT/$side.jsonl"
    done
done
