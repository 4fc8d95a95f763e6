#!/usr/bin/env bash
# Run ON the GPU machine after scripts/gpu-llama.sh has built llama.cpp there (same warm machine):
# trains the head_dim-128 reference model (validation/train-ref-model.py), converts it with the
# patched tree's convert_hf_to_gguf.py, and runs the WikiText-2 perplexity + KL-divergence matrix on
# it with tbq-validate (carried in .gpu/ with the WikiText-2 test file by scripts/gpu-prepare.sh).
# Before the matrices, `tbq-validate calibrate` measures per-layer sensitivity on the second half of
# the held-out text and picks per-layer cache types for 3.5 and 4.25 bits; the matrices run them too.
# Everything lands in $OUT/ref-model/ (recipe, training log, matrix JSON/markdown/plots; no weights).
#
#   scripts/gpu-ref-model.sh      Env: TBQ_REF_MINUTES (training budget, default 2.5),
#                                 TBQ_REF_CHUNKS (512-token chunks, default 40), TBQ_REF_CHUNKS_2048
#                                 (2048-token chunks, default 10), TBQ_REF_PAIRS (default: tbq-validate's),
#                                 TBQ_REF_REUSE=1 (a warm machine: keep the model trained and calibrated
#                                 by the previous call), TBQ_REF_MATRICES (default "ppl ppl-heldout
#                                 ppl-c2048"; "" = train and calibrate only: two calls fit 10 minutes each)
source "$(dirname "${BASH_SOURCE[0]}")/gpu-lib.sh" # REPO (the working directory), OUT, BIN, LLAMA, make_model
[[ -x "$BIN/llama-perplexity" ]] || { echo "gpu-ref-model.sh: no $BIN/llama-perplexity: run scripts/gpu-llama.sh first" >&2; exit 2; }
[[ -x .gpu/tbq-validate && -f .gpu/wiki.test.raw ]] || { echo "gpu-ref-model.sh: .gpu/ lacks tbq-validate or wiki.test.raw: run scripts/gpu-prepare.sh" >&2; exit 2; }
WORK=/tmp/tbq-ref-model
R="$OUT/ref-model"
mkdir -p "$WORK" "$R"
RC=0
# $OUT is a fresh folder on each device call: the model and its calibration stay in $WORK for a reuse
if [[ "${TBQ_REF_REUSE:-0}" == 1 && -f "$WORK/ref-128-f16.gguf" && -f "$WORK/calibrate/calibration.json" ]]; then
    echo "== reusing $WORK/ref-128-f16.gguf and its calibration (TBQ_REF_REUSE=1)"
else
    python3 validation/train-ref-model.py --out "$WORK" --convert "$LLAMA/convert_hf_to_gguf.py" \
        --llama-tokenize "$BIN/llama-tokenize" \
        --minutes "${TBQ_REF_MINUTES:-2.5}" >"$R/train.out" 2>&1 || { tail -n 30 "$R/train.out"; exit 1; }
    # per-layer types from the held-out text's second half (the matrices read its first half)
    rm -rf "$WORK/calibrate"
    .gpu/tbq-validate calibrate --model "$WORK/ref-128-f16.gguf" --bin-dir "$BIN" --wikitext "$WORK/corpus-heldout.txt" \
        --budgets "${TBQ_REF_BUDGETS:-3.5,4.25}" --out "$WORK/calibrate" >"$R/calibrate.out" 2>&1 || RC=1
    rm -f "$WORK/calibrate"/*.logits "$WORK/calibrate/calibration-text.txt"
fi
cp "$WORK/recipe.json" "$WORK/train.log" "$R/" 2>/dev/null
cp -r "$WORK/calibrate" "$R/" 2>/dev/null
echo "== calibrate (per-layer types on the held-out text's second half)"
tail -n 12 "$R/calibrate/calibration.md" 2>/dev/null || tail -n 20 "$R/calibrate.out"
# three matrices: WikiText-2 (foreign to the model: its PPL is in the hundreds), held-out text of its
# own training corpus (the last 1%, never trained on), and WikiText-2 at -c 2048 where a cache's
# errors have four times as many keys to accumulate over
# the matrices: tbq-validate's pairs (or TBQ_REF_PAIRS) and the calibrated allocations
ALLOC=$(python3 -c 'import json,sys; print(",".join(a["config"] for a in json.load(open(sys.argv[1]))["allocations"]))' \
    "$R/calibrate/calibration.json" 2>/dev/null)
matrix() { # NAME TEXT CTX CHUNKS
    .gpu/tbq-validate ppl --model "$WORK/ref-128-f16.gguf" --bin-dir "$BIN" --wikitext "$2" \
        --ctx "$3" --chunks "$4" ${TBQ_REF_PAIRS:+--pairs "$TBQ_REF_PAIRS"} ${ALLOC:+--also "$ALLOC"} \
        --out "$R/$1" >"$R/$1.out" 2>&1 || RC=1
    rm -f "$R/$1"/*.logits
    echo "== $1: $2, -c $3, $4 chunks"
    tail -n 30 "$R/$1/results.md" 2>/dev/null || tail -n 30 "$R/$1.out"
}
for M in ${TBQ_REF_MATRICES-ppl ppl-heldout ppl-c2048}; do
    case $M in
        ppl) matrix ppl .gpu/wiki.test.raw 512 "${TBQ_REF_CHUNKS:-40}" ;;
        ppl-heldout) matrix ppl-heldout "$WORK/corpus-heldout.txt" 512 "${TBQ_REF_CHUNKS:-40}" ;;
        ppl-c2048) matrix ppl-c2048 .gpu/wiki.test.raw 2048 "${TBQ_REF_CHUNKS_2048:-10}" ;;
        *) echo "gpu-ref-model.sh: unknown matrix $M (ppl, ppl-heldout, ppl-c2048)" >&2; RC=1 ;;
    esac
done
exit $RC
