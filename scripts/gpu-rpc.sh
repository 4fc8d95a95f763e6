#!/usr/bin/env bash
# Run ON the GPU machine after scripts/gpu-llama.sh has built the CUDA llama.cpp (build/gpu-llama/bin,
# with ggml-rpc-server): decode through ggml's RPC backend vs local. A CUDA ggml-rpc-server worker
# on 127.0.0.1 (the same GPU), the random-weight Llama-3.2-3B-shape model (Q4_K_M, scripts/gpu-lib.sh),
# llama-bench tg128 at depth 0, 8K and 32K with every layer on CUDA0 (local) or on the worker
# (-dev RPC0, --rpc), for f16/f16, q4_0/q4_0 and tbq4_0/tbq3_0. Through loopback the difference is
# the protocol's cost per token (a graph sent or replayed per step, logits back), not the network's.
# -> $OUT/rpc-bench.jsonl (llama-bench's rows plus "via": "local" | "rpc"), $OUT/rpc-worker.log,
#    a table last. Under 8 minutes (a run starts only while under TBQ_RPC_BUDGET_S, default 420).
#
#   scripts/gpu-rpc.sh [--reps N]          (default 2)
# Env: TBQ_RPC_PAIRS (default "f16/f16 q4_0/q4_0 tbq4_0/tbq3_0"), TBQ_RPC_DEPTHS (default 0,8192,32768).
source "$(dirname "${BASH_SOURCE[0]}")/gpu-lib.sh" # REPO (the working directory), OUT, BIN, LLAMA, make_model
BUDGET=${TBQ_RPC_BUDGET_S:-420}
REPS=2
while [[ $# -gt 0 ]]; do
    case "$1" in
        --reps) REPS=$2; shift ;;
        *) echo "gpu-rpc.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[[ -x "$BIN/llama-bench" && -x "$BIN/ggml-rpc-server" && -x "$BIN/llama-quantize" ]] || {
    echo "gpu-rpc.sh: no CUDA llama.cpp build with ggml-rpc-server in $BIN: run scripts/gpu-llama.sh first (same machine)" >&2; exit 2; }

M=$(make_model llama3b) || { echo "gpu-rpc.sh: could not make the model (see $OUT/quantize-llama3b.log)" >&2; exit 1; }
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
EP=127.0.0.1:$PORT
"$BIN/ggml-rpc-server" --device CUDA0 --host 127.0.0.1 --port "$PORT" >"$OUT/rpc-worker.log" 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
kill -0 $WORKER 2>/dev/null || { echo "gpu-rpc.sh: the worker did not start:" >&2; cat "$OUT/rpc-worker.log" >&2; exit 1; }
echo "gpu-rpc.sh: CUDA worker on $EP, model $M" >&2

JL="$OUT/rpc-bench.jsonl"
: >"$JL"
for kv in ${TBQ_RPC_PAIRS:-f16/f16 q4_0/q4_0 tbq4_0/tbq3_0}; do
    k=${kv%/*} v=${kv#*/}
    for via in local rpc; do
        if [[ $SECONDS -ge $BUDGET ]]; then echo "gpu-rpc.sh: $kv $via skipped: over the time budget ($SECONDS s)" >&2; continue; fi
        dev=(-dev CUDA0)
        [[ $via == rpc ]] && dev=(--rpc "$EP" -dev RPC0)
        T0=$SECONDS
        timeout 150 "$BIN/llama-bench" -m "$M" -ngl 99 -fa 1 -ctk "$k" -ctv "$v" -p 0 -n 128 \
            -d "${TBQ_RPC_DEPTHS:-0,8192,32768}" -r "$REPS" "${dev[@]}" -o jsonl 2>>"$OUT/rpc-bench.err" |
            python3 -c 'import json, sys
for l in sys.stdin:
    if l.strip(): d = json.loads(l); d["via"] = sys.argv[1]; print(json.dumps(d))' "$via" >>"$JL"
        echo "gpu-rpc.sh: $kv $via: rc ${PIPESTATUS[0]} in $((SECONDS - T0)) s" >&2
    done
done

python3 - "$JL" <<'PY'
import json, sys
rows = {}
for l in open(sys.argv[1]):
    d = json.loads(l)
    rows[(f'{d["type_k"]}/{d["type_v"]}', d["n_depth"], d["via"])] = d["avg_ts"]
pairs = sorted({p for p, _, _ in rows}, key=lambda p: ["f16/f16", "q4_0/q4_0", "tbq4_0/tbq3_0"].index(p) if p in ["f16/f16", "q4_0/q4_0", "tbq4_0/tbq3_0"] else 9)
print(f'{"K/V":<16} {"depth":>6} {"local tok/s":>12} {"rpc tok/s":>10} {"rpc/local":>10}')
for p in pairs:
    for depth in sorted({d for q, d, _ in rows if q == p}):
        a, b = rows.get((p, depth, "local")), rows.get((p, depth, "rpc"))
        f = lambda x: f"{x:.1f}" if x else "—"
        print(f'{p:<16} {depth:>6} {f(a):>12} {f(b):>10} {(f"{b / a:.3f}" if a and b else "—"):>10}')
PY
