#!/usr/bin/env bash
# Reproduces transcript.md: a real tbq-agent chat session with Gemma 3 270M on CPU.
#   agent-bin/examples/chat-session/run.sh > transcript.txt
# Needs target/release/tbq-agent (cargo build --release -p tbq-agent) and llama-server
# (TBQ_LLAMA_SERVER, TBQ_BUILD_DIR/bin or build/bin). Uses ports 18090 (llama-server) and
# 18765 (the chat HTTP endpoint) and a fresh workspace in a temporary folder.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
AGENT=${AGENT:-${CARGO_TARGET_DIR:-$REPO/target}/release/tbq-agent}
MODEL=$("$REPO/scripts/fetch-model.sh" gemma3-270m)
WS=$(mktemp -d)/workspace
export TBQ_AGENT_CONFIG=$REPO/agent-bin/tests/data/empty-config.toml NO_COLOR=1
PORT=18090
SERVE= HTTP=
trap 'kill -TERM $SERVE $HTTP 2>/dev/null || true' EXIT

serve() {   # the local model, supervised as in production
    "$AGENT" serve --model "$MODEL" -c 4096 --threads 1 --parallel 1 --port $PORT \
        --log "$WS.server.log" --json > "$WS.serve.jsonl" 2>> "$WS.serve.err" &
    SERVE=$!
    until grep -q '"ready"' "$WS.serve.jsonl" 2>/dev/null; do kill -0 $SERVE || exit 1; sleep 0.2; done
}
stop() { kill -TERM $SERVE; wait $SERVE || true; }
chat() { "$AGENT" chat --url http://127.0.0.1:$PORT --workspace "$WS" "$@"; }
show() { echo; echo "\$ $*"; }

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPU cores, model $(basename "$MODEL")"
mkdir -p "$WS" && echo "notes from last year" > "$WS/old-notes.txt"
serve
show "tbq-agent chat --workspace \$WS      # session 1 (input typed below)"
printf '%s\n' \
    "Create a file named shopping.txt with eggs, milk and bread." \
    "Remember that my locker code is 4711." \
    "Run the command uptime." \
    "Run rm -rf /" \
    "Run rm old-notes.txt" \
    "n" \
    "/memory" \
    "/remind every 2h -- drink a glass of water" \
    "/reminders" \
    "/quit" | chat 2>&1
show "ls -A \$WS; cat \$WS/shopping.txt"
ls -A "$WS"; cat "$WS/shopping.txt" 2>/dev/null && echo || true
show "sqlite3 \$WS/.tbq-agent/memory.sqlite 'SELECT id, text FROM memories'"
python3 -c "import sqlite3,sys; [print(*r, sep='|') for r in sqlite3.connect(sys.argv[1]).execute('SELECT id, text FROM memories')]" "$WS/.tbq-agent/memory.sqlite"

show "# restart: llama-server (tbq-agent serve stopped and started again) and a new agent process"
stop; serve
show "tbq-agent chat --workspace \$WS      # session 2"
printf '%s\n' \
    "What is my locker code?" \
    "/memory locker code" \
    "/quit" | chat 2>&1

show "TBQ_CHAT_TOKEN=s3cret tbq-agent chat --workspace \$WS --http 127.0.0.1:18765 &"
TBQ_CHAT_TOKEN=s3cret "$AGENT" chat --url http://127.0.0.1:$PORT --workspace "$WS" \
    --http 127.0.0.1:18765 --json > "$WS.http.jsonl" 2>&1 &
HTTP=$!
until grep -q '"listening"' "$WS.http.jsonl" 2>/dev/null; do kill -0 $HTTP || exit 1; sleep 0.2; done
show "curl -s -w ' HTTP %{http_code}' http://127.0.0.1:18765/v1/chat/completions -d '{\"messages\":[...]}'   # no token"
curl -s -w ' HTTP %{http_code}\n' http://127.0.0.1:18765/v1/chat/completions \
    -d '{"messages":[{"role":"user","content":"What is my locker code?"}]}'
show "curl -s http://127.0.0.1:18765/v1/chat/completions -H 'Authorization: Bearer s3cret' -d '{\"messages\":[{\"role\":\"user\",\"content\":\"What is my locker code?\"}]}'"
curl -s http://127.0.0.1:18765/v1/chat/completions -H 'Authorization: Bearer s3cret' \
    -d '{"messages":[{"role":"user","content":"What is my locker code?"}]}' | python3 -m json.tool
kill -TERM $HTTP; wait $HTTP || true
stop
