#!/usr/bin/env bash
# Prints the path of a Python that has the official MCP SDK, for the MCP tests:
#   tests/data/mcp-python.sh VENV_DIR
# $TBQ_MCP_PYTHON if set; otherwise VENV_DIR/bin/python, made on first use (python3 -m venv, pip
# install 'mcp<2': the 1.x SDK, whose FastMCP the test server uses), one process at a time.
set -euo pipefail
if [ -n "${TBQ_MCP_PYTHON:-}" ]; then echo "$TBQ_MCP_PYTHON"; exit 0; fi
venv=${1:?usage: mcp-python.sh VENV_DIR}
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
py=$venv/bin/python
if ! "$py" -c 'import mcp.server.fastmcp' 2>/dev/null; then
    echo "mcp-python.sh: installing mcp<2 into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'mcp>=1.10,<2' >&2
    "$py" -c 'import mcp.server.fastmcp' >&2
fi
echo "$py"
