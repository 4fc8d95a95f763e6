#!/usr/bin/env bash
# tbq caches through ggml's RPC backend, on this machine: ggml-rpc-server workers on 127.0.0.1 (free
# ports, started here, killed at exit), Gemma 3 270M, WikiText-2.
#
#   scripts/test-rpc.sh        (after scripts/build-llama.sh; ~3 min on 2 cores once built, plus a
#                               few minutes the first time to build an upstream worker)
#
# 1. llama-perplexity --rpc (every layer on a worker) gives the local PPL, bit for bit, for
#    tbq4_0/tbq3_0, tbq5_1/tbq3_1 and tbq4_1/tbq4_0. The worker runs the same CPU code as the local
#    run; its buffers are plain CPU buffers, so the local reference runs without weight repacking
#    (--no-repack: repacked Q4_K weights are multiplied in another order, which moves the PPL in the
#    3rd digit). Tolerance: none (the printed PPL and every chunk's value are equal).
# 2. Layers split between the local CPU and two workers (-ngl, -ts, --rpc A,B): the same PPL; each
#    of the three holds KV cache.
# 3. upstream's test-rpc-multi-server.
# 4. A worker killed mid-run: the client stops with an error naming that worker, within 60 s.
# 5. A worker built without the patch series (scripts/build-rpc-upstream.sh): a tbq cache is
#    refused by name before anything runs; f16 still works with it.
# 6. Malformed messages (scripts/rpc-malformed.py): refused, the worker answers afterwards.
# Ends with a "N passed, N failed" line; exits non-zero if anything failed.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

passed=0 failed=0 failures=()
RPC_SERVER=$BIN/ggml-rpc-server
[ -x "$RPC_SERVER" ] || die "ggml-rpc-server not found in $BIN: run scripts/build-llama.sh first (it builds it with GGML_RPC=ON)"
need_wikitext
gemma=$("$REPO/scripts/fetch-model.sh" gemma3-270m) || exit 1
LOGS=$BUILD_DIR/rpc-test
rm -rf "$LOGS"
mkdir -p "$LOGS"
CHUNKS=${TBQ_RPC_CHUNKS:-3}

# --- workers ---------------------------------------------------------------------------------------
WORKER_PIDS=()
cleanup() {
    local p
    for p in "${WORKER_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${WORKER_PIDS[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_worker NAME [BINARY]: starts a worker on a free port; sets $port and $pid, its log is
# $LOGS/NAME.log.
start_worker() {
    local name=$1 bin=${2:-$RPC_SERVER} i
    port=$(free_port)
    "$bin" --host 127.0.0.1 --port "$port" -t "$THREADS" >"$LOGS/$name.log" 2>&1 &
    pid=$!
    WORKER_PIDS+=("$pid")
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "worker $name did not start listening on 127.0.0.1:$port:"; cat "$LOGS/$name.log"
    return 1
}

start_worker a || exit 1
A=127.0.0.1:$port A_PID=$pid
start_worker b || exit 1
B=127.0.0.1:$port

# ppl LOG K V [args...]: llama-perplexity on Gemma, CHUNKS chunks of 512.
ppl() {
    local log=$1 k=$2 v=$3
    shift 3
    timeout 300 "$BIN/llama-perplexity" -m "$gemma" -f "$WIKI" -c 512 -b 512 --chunks "$CHUNKS" -fa on \
        -ctk "$k" -ctv "$v" -t "$THREADS" --no-warmup -lv 4 "$@" >"$log" 2>&1
}
# chunks LOG: the per-chunk PPL line ("[1]15.1,[2]16.3,...") and the final estimate.
chunks() { grep -oE '\[[0-9]+\][0-9.]+' "$1" | tr '\n' ' '; ppl_value "$1"; }

same_ppl() {
    local ref=$1 got=$2
    if [ -z "$(ppl_value "$ref")" ] || [ "$(chunks "$ref")" != "$(chunks "$got")" ]; then
        echo "local: $(chunks "$ref")"; echo "rpc:   $(chunks "$got")"
        tail -n 5 "$got"
        return 1
    fi
    echo "PPL $(ppl_value "$got") = local, chunk for chunk: $(chunks "$got")"
}

# --- 1. every layer on a worker ----------------------------------------------------------------------
rpc_equals_local() {
    local k=$1 v=$2 name=$1-$2
    ppl "$LOGS/local-$name.log" "$k" "$v" --no-repack || { tail "$LOGS/local-$name.log"; return 1; }
    ppl "$LOGS/rpc-$name.log" "$k" "$v" --rpc "$A" -ngl 99 || { tail "$LOGS/rpc-$name.log"; return 1; }
    # the cache is on the worker, not here
    grep -q "RPC0\[$A\] KV buffer size" "$LOGS/rpc-$name.log" || { echo "no KV buffer on $A in the log"; return 1; }
    same_ppl "$LOGS/local-$name.log" "$LOGS/rpc-$name.log"
}
for pair in tbq4_0/tbq3_0 tbq5_1/tbq3_1 tbq4_1/tbq4_0; do
    step "llama-perplexity --rpc, every layer on a worker, $pair: the local PPL" rpc_equals_local "${pair%/*}" "${pair#*/}"
done

# --- 2. local CPU + two workers --------------------------------------------------------------------
# Gemma 3 270M: 18 layers + the output layer. -ngl 12: layers 0-6 stay here, -ts 5,7: layers 7-11
# on A, 12-17 and the output on B. --no-repack: the layers kept here in plain CPU buffers, as in the
# local reference.
split_equals_local() {
    local log=$LOGS/split-tbq4_0-tbq3_0.log
    ppl "$log" tbq4_0 tbq3_0 --rpc "$A,$B" -ngl 12 -ts 5,7 --no-repack || { tail "$log"; return 1; }
    grep -E "KV buffer size" "$log"
    grep -qE "^.*\bCPU KV buffer size" "$log" && grep -q "RPC0\[$A\] KV buffer size" "$log" &&
        grep -q "RPC0\[$B\] KV buffer size" "$log" || { echo "the KV cache is not on all three"; return 1; }
    same_ppl "$LOGS/local-tbq4_0-tbq3_0.log" "$log"
}
step "layers split between the local CPU and two workers (-ngl 12 -ts 5,7), tbq4_0/tbq3_0: the local PPL" split_equals_local

# --- 3. upstream's test --------------------------------------------------------------------------------
multi_server() {
    [ -x "$BIN/test-rpc-multi-server" ] || { echo "test-rpc-multi-server not built (scripts/build-llama.sh builds it)"; return 1; }
    timeout 120 bash "$BUILD_DIR/llama.cpp/tests/test-rpc-multi-server.sh" "$RPC_SERVER" "$BIN/test-rpc-multi-server"
}
step "upstream test-rpc-multi-server" multi_server

# --- 4. a worker killed mid-run --------------------------------------------------------------------------
killed_worker() {
    local port pid log=$LOGS/killed.log client rc
    start_worker doomed || return 1
    local c=127.0.0.1:$port
    timeout 120 "$BIN/llama-perplexity" -m "$gemma" -f "$WIKI" -c 512 -b 512 --chunks 40 -fa on \
        -ctk tbq4_0 -ctv tbq3_0 -t "$THREADS" --no-warmup --rpc "$c" -ngl 99 >"$log" 2>&1 &
    client=$!
    # kill it once the first chunk is scored (the client is mid-run, weights and cache on the worker)
    for _ in $(seq 600); do grep -qE '\[1\][0-9]' "$log" && break; kill -0 $client 2>/dev/null || break; sleep 0.1; done
    grep -qE '\[1\][0-9]' "$log" || { echo "the client never scored a chunk:"; tail "$log"; kill $client; return 1; }
    kill -9 "$pid"
    local t0=$SECONDS
    wait $client
    rc=$?
    echo "client exited with $rc, $((SECONDS - t0)) s after the worker was killed"
    grep -m1 "RPC worker" "$log"
    # 124: the timeout fired (a hang); 0: it claimed success
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $((SECONDS - t0)) -le 60 ] && grep -q "RPC worker $c: the connection broke" "$log"
}
step "a worker killed mid-run: an error naming it, not a hang" killed_worker

# --- 5. a worker without the tbq types -------------------------------------------------------------------
upstream_worker() {
    local up port pid log
    up=$("$REPO/scripts/build-rpc-upstream.sh" | tail -n 1) || return 1
    start_worker upstream "$up" || return 1
    local u=127.0.0.1:$port
    log=$LOGS/upstream-tbq.log
    if ppl "$log" tbq4_0 tbq3_0 --rpc "$u" -ngl 99; then
        echo "a tbq cache on an upstream worker was accepted:"; tail "$log"; return 1
    fi
    grep -m1 "RPC worker" "$log"
    grep -q "RPC worker $u cannot hold tbq" "$log" && grep -q "Build ggml-rpc-server on that machine" "$log" ||
        { tail "$log"; return 1; }
    ! grep -qE '\[1\][0-9]' "$log" || { echo "it scored chunks before refusing"; return 1; }
    # the same worker serves a cache type it has
    log=$LOGS/upstream-f16.log
    ppl "$log" f16 f16 --rpc "$u" -ngl 99 || { tail "$log"; return 1; }
    echo "f16/f16 on the upstream worker: PPL $(ppl_value "$log")"
    # and what it does with the malformed messages (informative: upstream asserts on some)
    python3 "$REPO/scripts/rpc-malformed.py" "$u" --pid "$pid" --report-only >"$LOGS/upstream-malformed.txt" 2>&1
    echo "the upstream worker and the malformed messages ($LOGS/upstream-malformed.txt):"
    grep -E '^(FAIL|worker is gone|[0-9]+ of)' "$LOGS/upstream-malformed.txt" | sed 's/^/  /'
    return 0
}
step "a worker without tbq types: the tbq cache refused by name, f16 served" upstream_worker

# --- 6. malformed messages --------------------------------------------------------------------------------
step "malformed messages: refused by the worker, which answers afterwards" \
    python3 "$REPO/scripts/rpc-malformed.py" "$A" --pid "$A_PID" --log "$LOGS/a.log"

finish
