"""Transports to MCP servers that bound what a server can make the host hold.

Both yield the ``(read_stream, write_stream)`` pair the MCP SDK's ``Client`` drives.

* `StdioTransport` runs the server as a child process (in its own process group) and
  frames newline-delimited JSON-RPC itself, because the SDK's stdio reader keeps a
  whole line in memory (and re-joins it for every 64 KiB chunk: a 100 MB line costs
  minutes of copying). Here a line longer than ``max_message_bytes`` is never held:
  its first bytes name the request it answers, that request fails at once with an
  error saying so, and the rest of the line is read and dropped as it comes. A line
  that is not valid JSON-RPC but names one of our pending requests fails that request
  at once too (instead of leaving it to time out).
* `http_transport` is the SDK's streamable HTTP client on an HTTP client whose JSON
  bodies are refused past ``max_message_bytes`` while they stream in (the SDK already
  bounds each SSE event).

Closing a stdio transport closes the server's stdin, waits a little for it to exit,
then terminates and finally kills its process group; the wait is bounded and shielded
from cancellation, so no server process outlives its connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from mcp.shared.message import SessionMessage
from mcp_types import (
    INTERNAL_ERROR,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    jsonrpc_message_adapter,
)

if TYPE_CHECKING:
    import httpx2
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

logger = logging.getLogger("clambot_tools.mcp")

TransportStreams = tuple[
    "MemoryObjectReceiveStream[SessionMessage | Exception]",
    "MemoryObjectSendStream[SessionMessage]",
]

_CHUNK = 1 << 16
#: bytes kept from the head of an oversized line, to find which request it answers
_HEAD = 4096
#: a top-level "id" member; only trusted before any "result"/"error"/"method" member
_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')
_BODY = re.compile(rb'"(?:result|error|method)"\s*:')
#: how long a server gets to exit after its stdin closes, then after SIGTERM
_EXIT_GRACE_S = 2.0
_TERM_GRACE_S = 1.0


def _key(request_id: object) -> str:
    return str(request_id)


def _answered_id(head: bytes) -> RequestId | None:
    """The id of the response whose first bytes are `head`, when it can be told."""
    found = _ID.search(head)
    if found is None:
        return None
    body = _BODY.search(head)
    if body is not None and body.start() < found.start():
        return None
    if b'"method"' in head:  # a request or notification from the server, not an answer
        return None
    value = json.loads(found.group(1))
    return value if isinstance(value, (int, str)) else None


def _error(request_id: RequestId, code: int, message: str) -> SessionMessage:
    return SessionMessage(
        JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message))
    )


class StdioTransport:
    """The MCP server as a child process speaking JSON-RPC lines on stdin/stdout.

    Attributes:
        pid: the server process's id once entered (None before).
    """

    def __init__(
        self,
        command: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        max_message_bytes: int,
        label: str,
    ) -> None:
        self._argv = [command, *args]
        self._env = dict(env)
        self._cwd = cwd
        self._cap = max_message_bytes
        self._label = label
        self._pending: set[str] = set()
        self._cm: contextlib.AbstractAsyncContextManager[TransportStreams] | None = None
        self.pid: int | None = None

    async def __aenter__(self) -> TransportStreams:
        self._cm = cm = self._connected()
        return await cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._cm is not None
        await self._cm.__aexit__(exc_type, exc, tb)

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[TransportStreams]:
        process = await anyio.open_process(
            self._argv, env=self._env, cwd=self._cwd, stderr=None, start_new_session=True
        )
        self.pid = process.pid
        read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read, process, read_send)
            tg.start_soon(self._write, process, write_recv, read_send)
            try:
                yield read_recv, write_send
            finally:
                # bounded, and shielded: a cancelled caller must not leave the server
                # running; the reader keeps draining stdout meanwhile, so a server
                # blocked on a full pipe can still see its stdin close and exit
                with anyio.CancelScope(shield=True):
                    write_send.close()
                    read_recv.close()
                    await _stop(process)
                tg.cancel_scope.cancel()

    # -- the two pipe tasks

    async def _read(
        self,
        process: anyio.abc.Process,
        out: MemoryObjectSendStream[SessionMessage | Exception],
    ) -> None:
        """Frame stdout into messages for the session. Once the session stops
        listening, keep reading (and dropping) until the server exits, so it never
        blocks on a full pipe."""
        assert process.stdout is not None
        line = bytearray()
        dropping = False  # inside a line over the cap: read it, keep none of it
        async with out:
            while True:
                try:
                    chunk = await process.stdout.receive(_CHUNK)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return
                start = 0
                while True:
                    nl = chunk.find(b"\n", start)
                    end = len(chunk) if nl < 0 else nl
                    if not dropping:
                        if len(line) + end - start > self._cap:
                            head = (bytes(line[:_HEAD]) + chunk[start : start + _HEAD])[:_HEAD]
                            line.clear()
                            dropping = True
                            request_id = self._oversized(head)
                            if request_id is not None:
                                await _deliver(out, self._too_large(request_id))
                        else:
                            line += chunk[start:end]
                    if nl < 0:
                        break
                    if dropping:
                        dropping = False
                    elif line.strip():
                        message = self._parse(bytes(line))
                        line.clear()
                        await _deliver(out, message)
                    else:
                        line.clear()
                    start = nl + 1

    def _parse(self, data: bytes) -> SessionMessage | Exception:
        """One line from the server as a message; a bad line that names one of our
        pending requests becomes an error answer to it (so the call fails now)."""
        try:
            message = jsonrpc_message_adapter.validate_json(data, by_name=False)
        except ValueError as exc:
            request_id = self._bad_line_id(data)
            if request_id is None:
                logger.warning("MCP server %s sent a line that is not JSON-RPC", self._label)
                return exc
            self._pending.discard(_key(request_id))
            return _error(
                request_id,
                PARSE_ERROR,
                f"the MCP server {self._label} sent a malformed answer (not valid JSON-RPC)",
            )
        if isinstance(message, (JSONRPCResponse, JSONRPCError)):
            self._pending.discard(_key(message.id))
        return SessionMessage(message)

    def _bad_line_id(self, data: bytes) -> RequestId | None:
        try:
            value = json.loads(data)
        except ValueError:
            found = _answered_id(data[:_HEAD])
        else:
            found = value.get("id") if isinstance(value, dict) and "method" not in value else None
        if isinstance(found, (int, str)) and _key(found) in self._pending:
            return found
        return None

    def _oversized(self, head: bytes) -> RequestId | None:
        """The pending request an oversized message answers (None: it answers none of
        ours, and is dropped with a warning)."""
        request_id = _answered_id(head)
        if request_id is None or _key(request_id) not in self._pending:
            logger.warning(
                "MCP server %s sent a message over %d bytes that answers no pending request; "
                "dropped",
                self._label,
                self._cap,
            )
            return None
        self._pending.discard(_key(request_id))
        return request_id

    def _too_large(self, request_id: RequestId) -> SessionMessage:
        return _error(
            request_id,
            INTERNAL_ERROR,
            f"the MCP server {self._label} answered with more than {self._cap} bytes "
            "(the limit for one message); the answer was dropped unread",
        )

    async def _write(
        self,
        process: anyio.abc.Process,
        inbox: MemoryObjectReceiveStream[SessionMessage],
        replies: MemoryObjectSendStream[SessionMessage | Exception],
    ) -> None:
        assert process.stdin is not None
        try:
            async with inbox:
                async for item in inbox:
                    message = item.message
                    if isinstance(message, JSONRPCRequest):
                        self._pending.add(_key(message.id))
                    elif isinstance(message, JSONRPCNotification) and (
                        message.method == "notifications/cancelled"
                    ):
                        self._pending.discard(_key((message.params or {}).get("requestId")))
                    data = message.model_dump_json(by_alias=True, exclude_unset=True)
                    await process.stdin.send(data.encode("utf-8") + b"\n")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            # the server stopped reading: end the session's view of the connection
            await replies.aclose()


async def _deliver(
    out: MemoryObjectSendStream[SessionMessage | Exception], item: SessionMessage | Exception
) -> None:
    """Hand `item` to the session; once it stopped listening, drop it."""
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await out.send(item)


async def _stop(process: anyio.abc.Process) -> None:
    """Close the server's stdin, give it a moment to exit, then TERM and KILL its
    process group (it runs in its own session, so its children go too)."""
    assert process.stdin is not None
    with contextlib.suppress(Exception):
        await process.stdin.aclose()
    if not await _exited(process, _EXIT_GRACE_S):
        _signal_group(process, "SIGTERM")
        if not await _exited(process, _TERM_GRACE_S):
            _signal_group(process, "SIGKILL")
            await _exited(process, _TERM_GRACE_S)
    if process.stdout is not None:
        with contextlib.suppress(Exception):
            await process.stdout.aclose()
    # the subprocess transport stays open (and warns) while a grandchild holds a pipe
    transport = getattr(getattr(process, "_process", None), "_transport", None)
    close = getattr(transport, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


async def _exited(process: anyio.abc.Process, timeout: float) -> bool:
    """Whether `process` exits within `timeout` (polled: `wait()` would also wait for
    pipes a grandchild may hold open)."""
    with anyio.move_on_after(timeout):
        while process.returncode is None:
            await anyio.sleep(0.01)
    return process.returncode is not None


def _signal_group(process: anyio.abc.Process, name: str) -> None:
    """Send SIGTERM or SIGKILL to the server's process group (POSIX), or end the
    process itself (Windows has no process groups: terminate() is a hard kill there)."""
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        if hasattr(os, "killpg"):
            os.killpg(process.pid, getattr(signal, name))
        elif name == "SIGKILL":
            process.kill()
        else:
            process.terminate()


# -- streamable HTTP


def _capped_client(headers: Mapping[str, str], cap: int) -> httpx2.AsyncClient:
    """An HTTP client for the SDK's streamable HTTP transport whose JSON bodies are
    refused past `cap` bytes while they stream in (the SDK reads them whole)."""
    import httpx2
    from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT

    class CappedBody(httpx2.AsyncByteStream):
        def __init__(self, inner: httpx2.AsyncByteStream, label: str) -> None:
            self._inner = inner
            self._label = label

        async def __aiter__(self) -> AsyncIterator[bytes]:
            seen = 0
            async for chunk in self._inner:
                seen += len(chunk)
                if seen > cap:
                    # a StreamError: the SDK answers the request with it, and goes on
                    raise httpx2.StreamError(
                        f"the MCP server {self._label} answered with more than {cap} bytes "
                        "(the limit for one message); the answer was dropped unread"
                    )
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    class CappedTransport(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            response = await super().handle_async_request(request)
            kind = response.headers.get("content-type", "").lower()
            if kind.startswith("application/json"):
                stream = response.stream
                assert isinstance(stream, httpx2.AsyncByteStream)
                response.stream = CappedBody(stream, request.url.host)
            return response

    timeout = httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT)
    return httpx2.AsyncClient(headers=dict(headers), timeout=timeout, transport=CappedTransport())


@contextlib.asynccontextmanager
async def http_transport(
    url: str, headers: Mapping[str, str], *, max_message_bytes: int
) -> AsyncIterator[Any]:
    """The SDK's streamable HTTP transport to `url` with `headers` on every request,
    one message (a JSON body or an SSE event) capped at `max_message_bytes`."""
    from mcp.client.streamable_http import streamable_http_client

    async with (
        _capped_client(headers, max_message_bytes) as client,
        streamable_http_client(
            url, http_client=client, max_sse_event_size=max_message_bytes
        ) as streams,
    ):
        yield streams
