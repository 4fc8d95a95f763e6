#!/usr/bin/env bash
# Reproduces transcript.md: `tbq-agent chat` with Gemma 3 270M on CPU calling the tools of two
# real MCP servers over stdio: the reference filesystem server from npm
# (@modelcontextprotocol/server-filesystem, installed into a temporary folder here) and the test
# server made with the official Python SDK (agent-bin/tests/data/mcp_server.py).
#   agent-bin/examples/mcp-session/run.sh > transcript.txt
# Needs target/release/tbq-agent, llama-server (TBQ_LLAMA_SERVER, TBQ_BUILD_DIR/bin or build/bin),
# node and npm, python3. Uses port 18091.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
AGENT=${AGENT:-$TARGET/release/tbq-agent}
MODEL=$("$REPO/scripts/fetch-model.sh" gemma3-270m)
TMP=$(mktemp -d)
WS=$TMP/workspace
PYTHON=$("$REPO/agent-bin/tests/data/mcp-python.sh" "$TARGET/mcp-venv")
npm install --silent --no-audit --no-fund --prefix "$TMP/npm" @modelcontextprotocol/server-filesystem >&2
export NO_COLOR=1 TBQ_AGENT_CONFIG=$TMP/config.toml
PORT=18091 SERVE=
trap 'kill -TERM $SERVE 2>/dev/null || true' EXIT

mkdir -p "$WS" && printf 'buy milk\ncall the plumber\n' > "$WS/todo.txt"
cat > "$TBQ_AGENT_CONFIG" <<TOML
[chat.mcp.files]
command = ["node", "$TMP/npm/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js", "$WS"]
confirm = ["write_file", "edit_file", "move_file"]

[chat.mcp.demo]
command = ["$PYTHON", "$REPO/agent-bin/tests/data/mcp_server.py", "stdio"]
TOML

"$AGENT" serve --model "$MODEL" -c 4096 --threads 1 --parallel 1 --port $PORT \
    --log "$TMP/server.log" --json > "$TMP/serve.jsonl" 2>> "$TMP/serve.err" &
SERVE=$!
until grep -q '"ready"' "$TMP/serve.jsonl" 2>/dev/null; do kill -0 $SERVE || exit 1; sleep 0.2; done

chat() { "$AGENT" chat --url http://127.0.0.1:$PORT --workspace "$WS" "$@"; }
show() { echo; echo "\$ $*"; }

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPU cores, model $(basename "$MODEL")"
show "cat \$TBQ_AGENT_CONFIG"
sed "s|$TMP|\$TMP|g; s|$REPO|\$REPO|g; s|$PYTHON|python3|g" "$TBQ_AGENT_CONFIG"
show "cat \$WS/todo.txt"
cat "$WS/todo.txt"

show "tbq-agent chat --workspace \$WS --require-tool files.list_directory 'List the files in the current folder .'"
chat --require-tool files.list_directory "List the files in the current folder ." 2>&1

show "tbq-agent chat --workspace \$WS --require-tool files.read_text_file 'Show me todo.txt'"
chat --require-tool files.read_text_file "Show me todo.txt" 2>&1

show "tbq-agent chat --workspace \$WS --require-tool files.write_file      # input typed below"
printf '%s\n' \
    "Write the word eggs into the file shopping.txt." \
    "n" \
    "Write the word eggs into the file shopping.txt." \
    "y" \
    "/quit" | chat --require-tool files.write_file 2>&1
show "ls \$WS; cat \$WS/shopping.txt"
ls "$WS"; cat "$WS/shopping.txt" 2>/dev/null && echo || true

show "tbq-agent chat --workspace \$WS --require-tool demo.add 'What is 17 plus 25?'"
chat --require-tool demo.add "What is 17 plus 25?" 2>&1
