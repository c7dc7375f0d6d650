"""What the `clambot mcp` tests share: starting the server (a real process, over stdio
or streamable HTTP) and driving it with the MCP SDK's own ClientSession.

`Client` keeps the SDK's async session on a private event loop thread, so that tests
stay plain synchronous functions and a module can share one server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_helpers import PATIENCE_S, SERVER

TOOL = "run_js_sandboxed"
#: an answer to an elicitation, given what was asked
Answer = Callable[[types.ElicitRequestParams], Awaitable[types.ElicitResult]]


def write_config(directory: Path, body: str = "", *, notes: bool = True) -> Path:
    """A sandbox.toml in `directory`: `body`, and (with `notes`) the test MCP server
    (tests/mcp_server.py) fronted as ``[mcp.notes]``."""
    text = body
    if notes:
        text += f"\n[mcp.notes]\ncommand = {sys.executable!r}\nargs = [{SERVER!r}]\n"
    path = directory / "sandbox.toml"
    path.write_text(text.replace("'", '"'))
    return path


def clambot_mcp(*args: str) -> list[str]:
    """The command line of `clambot mcp ARGS` in this interpreter."""
    return [sys.executable, "-m", "clambot_tools.cli", "mcp", *args]


def accept(allow: bool = True) -> Answer:
    """An answer that submits the form with ``allow``."""

    async def answer(params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"allow": allow})

    return answer


def refuse(action: str = "decline") -> Answer:
    """An answer that declines (or cancels) the question."""

    async def answer(params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action=action)  # type: ignore[arg-type]

    return answer


class Client:
    """One MCP session to a `clambot mcp` server, on its own event loop thread.

    Args:
        connect: opens the transport (an async context manager yielding the stream pair).
        elicits: declare the elicitation capability (then `answer` answers questions).
    """

    def __init__(self, connect: Callable[[], Any], *, elicits: bool = True) -> None:
        self.answer: Answer = refuse()
        self.asked: list[str] = []
        self._connect = connect
        self._elicits = elicits
        self._loop = asyncio.new_event_loop()
        self._closing = asyncio.Event()
        self.session: ClientSession | None = None
        self._failure: BaseException | None = None
        self._started = threading.Event()  # connected, or failed
        self._thread = threading.Thread(target=self._serve, daemon=True, name="test-mcp-client")
        self._thread.start()
        if not self._started.wait(PATIENCE_S) or self.session is None:
            self.close()
            raise RuntimeError(f"the MCP client did not connect: {self._failure!r}")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._hold())
        except BaseException as exc:  # noqa: BLE001 - reported by __init__
            self._failure = exc
        finally:
            self._started.set()
            self._loop.close()

    async def _on_elicit(
        self, context: Any, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.asked.append(params.message)
        return await self.answer(params)

    async def _hold(self) -> None:
        callback = self._on_elicit if self._elicits else None
        async with self._connect() as (read, write):
            async with ClientSession(read, write, elicitation_callback=callback) as session:
                await session.initialize()
                self.session = session
                self._started.set()
                await self._closing.wait()

    def run(self, coro: Awaitable[Any], timeout: float = PATIENCE_S) -> Any:
        """Run `coro` on the client's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(_awaiting(coro), self._loop).result(timeout)

    def call(self, code: Any, **arguments: Any) -> types.CallToolResult:
        """Call run_js_sandboxed with `code` (and any other arguments)."""
        assert self.session is not None
        result: types.CallToolResult = self.run(
            self.session.call_tool(TOOL, {"code": code, **arguments})
        )
        return result

    def tools(self) -> list[types.Tool]:
        assert self.session is not None
        listed: types.ListToolsResult = self.run(self.session.list_tools())
        return listed.tools

    def soon(self, action: Callable[[], None]) -> None:
        """Run `action` on the client's loop (to set an asyncio.Event, say)."""
        self._loop.call_soon_threadsafe(action)

    def close(self) -> None:
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._closing.set)
        self._thread.join(PATIENCE_S)


async def _awaiting(coro: Awaitable[Any]) -> Any:
    return await coro


def text(result: types.CallToolResult) -> str:
    """The text content of a tool result."""
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


# -- transports


def stdio(*args: str, cwd: Path | None = None) -> Callable[[], Any]:
    """Connect by starting `clambot mcp ARGS` as the client's child (stdio)."""
    command = clambot_mcp(*args)
    params = StdioServerParameters(
        command=command[0], args=command[1:], env=dict(os.environ), cwd=cwd
    )
    return lambda: stdio_client(params)


def http(url: str, token: str | None = None) -> Callable[[], Any]:
    """Connect over streamable HTTP (with ``Authorization: Bearer token``)."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with httpx2.AsyncClient(headers=headers, timeout=PATIENCE_S) as client:
            async with streamable_http_client(url, http_client=client) as streams:
                yield streams

    return connect


class HttpServer:
    """`clambot mcp --http ...` as a process; `url` is where it says it serves."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            clambot_mcp(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()  # printed once the socket listens
        if "serving" not in line:
            self.stop()
            raise RuntimeError(f"clambot mcp did not start: {line!r}")
        self.banner = line
        self.url = line.split(" at ", 1)[1].split()[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(PATIENCE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(PATIENCE_S)
        if self.process.stderr is not None:
            self.process.stderr.close()


@contextlib.contextmanager
def client(connect: Callable[[], Any], **kw: Any) -> Iterator[Client]:
    c = Client(connect, **kw)
    try:
        yield c
    finally:
        c.close()
