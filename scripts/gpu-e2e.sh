#!/usr/bin/env bash
# Run ON the GPU machine after scripts/gpu-llama.sh has built the CUDA llama.cpp (build/gpu-llama/bin):
#   1. flash-attention decode, every KV-cache type in one harness: upstream's own kernels (f16, q8_0,
#      q4_0) and tbq (tbq4_0/tbq3_0, tbq4_0/tbq4_0) through `test-backend-ops perf -o FLASH_ATTN_EXT`
#      (the perf cases patches/0005 adds: D 128/256, 8 KV heads, GQA 1/4/8, n_kv 1K..128K, one query
#      row, mask on) -> $OUT/fa-perf.log
#   2. end to end: llama-bench -o jsonl, tg128 at depth 0 / 8K / 32K and pp2048, for the K/V pairs
#      f16/f16, q8_0/q8_0, q4_0/q4_0, tbq4_0/tbq3_0, on random-weight models of real shape and size
#      (Llama-3.2-3B: head_dim 128, GQA 3; Gemma 3 270M: head_dim 256, sliding window; on request
#      Llama-3.1-8B, `--models llama8b`: GQA 4, 16 GB of f16 written and quantized first), Q4_K_M
#      -> $OUT/llama-bench.jsonl
#
#   scripts/gpu-e2e.sh [--no-perf] [--no-bench] [--models llama3b,gemma3-270m,llama8b] [--reps N]
# Env: TBQ_E2E_BUDGET_S (default 540): a model's benchmark starts only while the run is under it;
#   TBQ_E2E_PAIRS (K/V list; K/V:nocentre runs tbq keys without key centring, into
#   llama-bench-nocentre.jsonl; K/V@spec runs per-layer types, `;` for the spec's commas, e.g.
#   tbq3_0/tbq3_0@k18-27=tbq4_1;v0-3=tbq4_1, into llama-bench-layers.jsonl with a "layer_types" field), TBQ_E2E_DEPTHS (default 0,8192,32768), TBQ_E2E_PP=0 (no prefill rows),
#   TBQ_E2E_TG_TIMEOUT_S (default 200): the limit of one pair's tg runs; TBQ_E2E_PP_N (default 2048)
#   and TBQ_E2E_PP_DEPTHS (default 0): prefill of N tokens over a cache
#   already holding each depth, e.g. TBQ_E2E_PP_N=512 TBQ_E2E_PP_DEPTHS=0,32768.
source "$(dirname "${BASH_SOURCE[0]}")/gpu-lib.sh" # REPO (the working directory), OUT, BIN, LLAMA, make_model
BUDGET=${TBQ_E2E_BUDGET_S:-540}
DO_PERF=1; DO_BENCH=1; MODELS=llama3b,gemma3-270m; REPS=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-perf) DO_PERF=0 ;;
        --no-bench) DO_BENCH=0 ;;
        --models) MODELS=$2; shift ;;
        --reps) REPS=$2; shift ;;
        *) echo "gpu-e2e.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[[ -x "$BIN/test-backend-ops" && -x "$BIN/llama-bench" && -x "$BIN/llama-quantize" ]] || {
    echo "gpu-e2e.sh: no CUDA llama.cpp build in $BIN: run scripts/gpu-llama.sh first (same machine)" >&2; exit 2; }

# --- 1. FA decode side by side ---------------------------------------------------------------------------
if [[ $DO_PERF -eq 1 ]]; then
    RE=${TBQ_PERF_RE:-'nh=8,nr23=\[[148],1\],kv=[0-9]+,nb=1,mask=1,sinks=0,max_bias=0\.000000,logit_softcap=0\.000000,prec=f32,type_K=(f16|q8_0|q4_0|tbq[3-6]_[01]),type_V=(f16|q8_0|q4_0|tbq[34]_[01]),permute=\[0,1,2,3\]'}
    T0=$SECONDS
    timeout 420 "$BIN/test-backend-ops" perf -b CUDA0 -o FLASH_ATTN_EXT -p "$RE" >"$OUT/fa-perf.log" 2>&1
    echo "fa-perf: rc=$? in $((SECONDS - T0)) s, $(grep -c 'us/run' "$OUT/fa-perf.log") cases" >&2
fi

# --- 2. end to end ---------------------------------------------------------------------------------------

if [[ $DO_BENCH -eq 1 ]]; then
    JL="$OUT/llama-bench.jsonl"
    : >"$JL"
    for arch in ${MODELS//,/ }; do
        if [[ $SECONDS -ge $BUDGET ]]; then
            echo "e2e: $arch skipped: over the time budget ($SECONDS s)" >&2; continue
        fi
        T0=$SECONDS
        M=$(make_model "$arch") || { echo "e2e: could not make the $arch model (see $OUT/quantize-$arch.log)" >&2; continue; }
        echo "e2e: $arch model ready in $((SECONDS - T0)) s: $M" >&2
        for kv in ${TBQ_E2E_PAIRS:-f16/f16 q8_0/q8_0 q4_0/q4_0 tbq4_0/tbq3_0 tbq5_1/tbq3_1 tbq5_0/tbq3_0}; do
            # K/V:nocentre = tbq keys without key centring; llama-bench's rows cannot say so, so they go
            # to llama-bench-nocentre.jsonl
            jl=$JL env=() spec=""
            if [[ $kv == *@* ]]; then
                spec=${kv#*@} kv=${kv%%@*} jl=$OUT/layers.tmp env=("LLAMA_KV_LAYER_TYPES=${spec//;/,}")
                : >"$jl"
            fi
            if [[ $kv == *:nocentre ]]; then
                kv=${kv%:nocentre} jl=${JL%.jsonl}-nocentre.jsonl env=(LLAMA_TBQ_KEY_CENTRE_DISABLE=1)
            fi
            k=${kv%/*}; v=${kv#*/}
            # tg128 at depth 0 / 8K / 32K, then pp2048 at depth 0 (each a separate test in the jsonl)
            pp_n=${TBQ_E2E_PP_N:-2048}
            env "${env[@]}" timeout "${TBQ_E2E_TG_TIMEOUT_S:-200}" "$BIN/llama-bench" -m "$M" -ngl 99 -fa 1 -ctk "$k" -ctv "$v" -p 0 -n 128 \
                -d "${TBQ_E2E_DEPTHS:-0,8192,32768}" -r "$REPS" -o jsonl >>"$jl" 2>>"$OUT/llama-bench.err" ||
                echo "e2e: $arch $kv tg failed (rc $?)" >&2
            if [[ ${TBQ_E2E_PP:-1} = 1 ]]; then
                env "${env[@]}" timeout 150 "$BIN/llama-bench" -m "$M" -ngl 99 -fa 1 -ctk "$k" -ctv "$v" -p "$pp_n" -n 0 \
                    -d "${TBQ_E2E_PP_DEPTHS:-0}" -r "$REPS" -o jsonl >>"$jl" 2>>"$OUT/llama-bench.err" ||
                    echo "e2e: $arch $kv pp failed (rc $?)" >&2
            fi
            # llama-bench's rows name -ctk/-ctv only: the per-layer spec is added to each
            [[ -n $spec ]] && python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if l.strip(): d = json.loads(l); d["layer_types"] = sys.argv[2]; print(json.dumps(d))' "$jl" "${spec//;/,}" \
                >>"${JL%.jsonl}-layers.jsonl" && rm -f "$jl"
        done
        echo "e2e: $arch done in $((SECONDS - T0)) s" >&2
    done
fi

python3 scripts/gpu-report.py "$OUT"
