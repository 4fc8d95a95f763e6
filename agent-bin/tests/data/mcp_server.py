"""An MCP server for tbq-agent's tests, made with the official Python SDK (FastMCP).

    python mcp_server.py stdio
    python mcp_server.py http PORT [json]   # streamable HTTP at http://127.0.0.1:PORT/mcp;
                                            # json: JSON answers instead of SSE streams

Its tools do small, checkable things: arithmetic, echo, a sleep (for timeouts), a large
result (for caps), a file it creates (for confirmations), a crash.
"""

import asyncio
import os
import sys

from mcp.server.fastmcp import FastMCP

mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
json_response = len(sys.argv) > 3 and sys.argv[3] == "json"

mcp = FastMCP("tbq-test", host="127.0.0.1", port=port, json_response=json_response, log_level="WARNING")


@mcp.tool()
def add(a: int, b: int) -> str:
    """Add two integers and return the sum."""
    return str(a + b)


@mcp.tool()
def word_count(text: str) -> str:
    """Count the words in a text."""
    return f"{len(text.split())} words"


@mcp.tool()
def greet(name: str, greeting: str = "Hello") -> str:
    """Greet someone; the greeting is optional."""
    return f"{greeting}, {name}"


@mcp.tool()
async def sleep(seconds: float) -> str:
    """Wait a number of seconds, then say so."""
    # Async, so that the server goes on answering (and can cancel it) meanwhile.
    await asyncio.sleep(seconds)
    return f"slept {seconds} s"


@mcp.tool()
def big(n: int) -> str:
    """Return n bytes of text."""
    return "x" * n


@mcp.tool()
def touch(name: str) -> str:
    """Create an empty file in the server's working folder."""
    if "/" in name or name.startswith("."):
        raise ValueError("a plain file name, please")
    open(name, "w").close()
    return f"created {name}"


@mcp.tool()
def fail(why: str) -> str:
    """Fail with the given reason."""
    raise RuntimeError(why)


@mcp.tool()
def crash() -> str:
    """Exit the server process at once."""
    sys.stderr.write("crashing as asked\n")
    sys.stderr.flush()
    os._exit(3)


if __name__ == "__main__":
    mcp.run("stdio" if mode == "stdio" else "streamable-http")
