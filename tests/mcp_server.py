"""A small MCP server for the tests (the SDK's FastMCP, `MCPServer` in mcp 2).

    python tests/mcp_server.py                 # stdio
    python tests/mcp_server.py --http          # streamable HTTP on 127.0.0.1, a free
                                               # port, printed as "PORT <n>" on stdout
    python tests/mcp_server.py --http --json   # ... answering in JSON, not SSE
    python tests/mcp_server.py --http --port N # on port N (to restart a server in place)

Tools: read (``lookup``, ``echo``, ``search_web``), write (``add_note`` without hints,
``delete_notes`` destructive), erroring (``fail``), slow (``slow``, which records in
``events`` whether it finished or was cancelled), structured output (``lookup``,
``notes``), and for the hostile tests ``hang``, ``flood`` and ``die``.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TypedDict

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

app = MCPServer("clambot-test", log_level="ERROR")
READ = ToolAnnotations(read_only_hint=True)
NOTES: list[str] = []
EVENTS: list[str] = []


class Weather(TypedDict):
    city: str
    temp_c: float
    tags: list[str]


@app.tool(annotations=READ)
def lookup(city: str, days: int = 1) -> Weather:
    """Current weather of a city."""
    return {"city": city, "temp_c": 21.5 + days, "tags": ["sunny"]}


@app.tool(annotations=READ, structured_output=False)
def echo(text: str) -> str:
    """Say it back."""
    return text


@app.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True))
def search_web(query: str) -> list[str]:
    """Search the web (pretend)."""
    return [f"result for {query}"]


@app.tool(structured_output=False)
def add_note(text: str) -> str:
    """Add a note (no annotations: a write)."""
    NOTES.append(text)
    return f"{len(NOTES)} notes"


@app.tool(annotations=ToolAnnotations(destructive_hint=True))
def delete_notes() -> int:
    """Delete every note."""
    n = len(NOTES)
    NOTES.clear()
    return n


@app.tool(annotations=READ)
def notes() -> list[str]:
    """The notes so far."""
    return list(NOTES)


@app.tool(annotations=READ)
def fail(message: str) -> str:
    """Always fails, with `message`."""
    raise ToolError(message)


@app.tool(annotations=READ)
async def slow(seconds: float, tag: str) -> str:
    """Sleep, recording in `events` whether it finished or was cancelled."""
    EVENTS.append(f"started {tag}")
    try:
        await anyio.sleep(seconds)
    except BaseException:
        EVENTS.append(f"cancelled {tag}")
        raise
    EVENTS.append(f"finished {tag}")
    return tag


@app.tool(annotations=READ)
def events() -> list[str]:
    """What `slow` calls did."""
    return list(EVENTS)


@app.tool(annotations=READ)
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@app.tool(annotations=READ)
async def hang() -> str:
    """Never answers."""
    await anyio.sleep_forever()
    return "never"


@app.tool(annotations=READ, structured_output=False)
def flood(mib: int) -> str:
    """Answer with `mib` MiB of text."""
    return "x" * (mib << 20)


@app.tool(annotations=READ)
def die() -> str:
    """Exit in the middle of the call."""
    os._exit(3)


@app.tool(annotations=READ, structured_output=False)
def die_once(marker: str) -> str:
    """Exit in the middle of the first call (the one that creates the file `marker`);
    answer "survived" after that."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return "survived"


@app.tool(annotations=READ, structured_output=False)
def header(name: str, ctx: Context) -> str:
    """The value of an HTTP request header this call came with ("" over stdio)."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", None)
    return headers.get(name, "") if headers is not None else ""


def _serve_http(json_response: bool, port: int) -> None:
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    starlette_app = app.streamable_http_app(json_response=json_response)
    config = uvicorn.Config(starlette_app, log_level="error", lifespan="on")
    server = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    anyio.run(lambda: server.serve(sockets=[sock]))


if __name__ == "__main__":
    if "--http" in sys.argv:
        at = sys.argv.index("--port") + 1 if "--port" in sys.argv else 0
        _serve_http(json_response="--json" in sys.argv, port=int(sys.argv[at]) if at else 0)
    else:
        app.run()
