"""The life of one MCP client session: which event loop owns it, connecting,
reconnecting, calling, closing.

Which loop owns the session's streams? Its own. The MCP SDK keeps a session's
transport and receive loop in anyio task groups, and a task group must be entered and
exited by the same task, on the same loop. Tool calls, though, come from anywhere:
from the caller's event loop in ``Sandbox.arun``, from the package's background loop in
``Sandbox.run``, from a plain thread. So each `Link` runs a private event loop on a
daemon thread, and one long-lived *holder* task on it enters the transport and the
``Client`` and later exits them. Every call is a task on that loop, submitted with
``run_coroutine_threadsafe``; the caller awaits it with ``asyncio.wrap_future``, so
cancelling the caller (a run that timed out, an ``arun`` cancelled) cancels the call
task, and the SDK then sends the server ``notifications/cancelled``. No caller's loop
ever holds the session, so none can deadlock it by blocking (a sync ``Sandbox.run``
called from inside a running event loop, say), and a session outlives any one run.

A connection that breaks (the server exits, the HTTP endpoint goes away) fails the
calls in flight; the next call connects again, retrying with backoff (tenacity)
within that call's time.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import contextlib
import logging
import math
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import anyio

if sys.version_info < (3, 11):  # pragma: no cover - anyio brings the backport there
    from exceptiongroup import BaseExceptionGroup

logger = logging.getLogger("clambot_tools.mcp")

T = TypeVar("T")

#: how many pages of tools/list to follow (a paginator that never ends must not hang)
_MAX_PAGES = 100
#: how long close() waits for the session to wind down (the stdio transport's own
#: shutdown is bounded at about 4 s)
_CLOSE_S = 6.0


class LinkClosedError(Exception):
    """The connection was closed (by `Link.close`)."""


class ConnectionLostError(Exception):
    """The connection broke while a call was in flight."""


class ConnectFailedError(Exception):
    """Connecting (or reconnecting) failed."""


class _Generation:
    """One connected session: the holder task that owns it and how to release it."""

    def __init__(self) -> None:
        self.client: Any = None
        self.tools: list[Any] = []
        self.pid: int | None = None
        self.release = asyncio.Event()
        self.scope: anyio.CancelScope | None = None
        self.task: asyncio.Task[None] | None = None
        self.usable = False


def _transient(exc: BaseException) -> bool:
    """Worth another connection attempt: the server may come up (or back) yet."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

    if isinstance(exc, BaseExceptionGroup):
        return all(_transient(e) for e in exc.exceptions)
    if isinstance(exc, (FileNotFoundError, PermissionError, NotADirectoryError)):
        return False  # no such command: trying again will not make one
    if isinstance(exc, MCPError):
        return exc.error.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT)
    import httpx2  # the SDK's HTTP client

    if isinstance(exc, httpx2.TransportError):
        return True
    return isinstance(
        exc,
        (
            TimeoutError,
            ConnectionError,
            OSError,
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ),
    )


def _reason(exc: BaseException) -> str:
    """A short account of why connecting failed (the innermost useful message)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "it did not complete the MCP handshake in time"
    if isinstance(exc, FileNotFoundError):
        return f"no such command: {exc.filename or exc}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Link:
    """A client session to one MCP server, owned by a private event loop (see the
    module doc). Safe to use from any thread and any event loop.

    Args:
        label: names the server in messages and the thread's name.
        open_transport: makes a fresh transport (an async context manager yielding the
            SDK's stream pair); called for every (re)connection, on the link's loop.
        connect_timeout_s: most time for one connection attempt (spawn + handshake +
            tools/list).
        connect_attempts: attempts per (re)connection, with exponential backoff.
    """

    def __init__(
        self,
        label: str,
        open_transport: Callable[[], Any],
        *,
        connect_timeout_s: float,
        connect_attempts: int,
    ) -> None:
        self.label = label
        self._open = open_transport
        self._connect_timeout_s = connect_timeout_s
        self._attempts = connect_attempts
        self._gen: _Generation | None = None
        self._lock: asyncio.Lock | None = None
        self._calls: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._closing: cf.Future[None] | None = None
        self._loop = asyncio.new_event_loop()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name=f"clambot-mcp:{label}", daemon=True
        )
        self._thread.start()
        _live.add(self)

    # -- the loop's thread

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in tasks:
                    t.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.wait(tasks, timeout=_CLOSE_S))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._stopped.set()

    def submit(self, coro: Coroutine[Any, Any, T]) -> cf.Future[T]:
        """Run `coro` on the link's loop; its future, cancellable from any thread.

        Raises LinkClosedError once the link is closed."""
        if self._closed:
            coro.close()
            raise LinkClosedError(f"the connection to the MCP server {self.label} is closed")
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop stopped between the check and the call
            coro.close()
            raise LinkClosedError(
                f"the connection to the MCP server {self.label} is closed"
            ) from None

    def wait(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run `coro` on the link's loop and block until it is done (or `timeout`,
        then it is cancelled and TimeoutError raised). Not from the link's own thread."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking MCP call from the connection's own event loop")
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except cf.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"the MCP server {self.label} did not answer in time") from None
        except BaseException:
            fut.cancel()
            raise

    # -- state, readable from any thread

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        """Tool calls started and not finished (cancelled ones leave once the server
        has been told)."""
        return len(self._calls)

    @property
    def pid(self) -> int | None:
        gen = self._gen
        return gen.pid if gen is not None and gen.usable else None

    @property
    def tools(self) -> list[Any]:
        gen = self._gen
        return list(gen.tools) if gen is not None else []

    # -- on the link's loop

    async def connected(self, deadline: float) -> _Generation:
        """The live session, connecting (with retries, until `deadline` on the loop's
        clock) when there is none. Raises ConnectFailedError."""
        gen = self._gen
        if gen is not None and gen.usable:
            return gen
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            gen = self._gen
            if gen is not None and gen.usable:
                return gen
            if self._closed:
                raise LinkClosedError(f"the connection to the MCP server {self.label} is closed")
            gen = await self._connect(deadline)
            self._gen = gen
            return gen

    async def _connect(self, deadline: float) -> _Generation:
        import tenacity

        loop = asyncio.get_running_loop()
        attempts = 0
        try:
            async for attempt in tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(self._attempts)
                | tenacity.stop_after_delay(max(0.0, deadline - loop.time())),
                wait=tenacity.wait_exponential(multiplier=0.2, max=2.0),
                retry=tenacity.retry_if_exception(_transient),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    left = deadline - loop.time()
                    if left <= 0:
                        raise TimeoutError
                    return await self._open_generation(min(self._connect_timeout_s, left))
        except (Exception, BaseExceptionGroup) as exc:
            tries = f" ({attempts} attempts)" if attempts > 1 else ""
            raise ConnectFailedError(
                f"cannot connect to the MCP server {self.label}{tries}: {_reason(exc)}"
            ) from exc
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _open_generation(self, timeout: float) -> _Generation:
        gen = _Generation()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gen.task = asyncio.create_task(self._hold(gen, ready, timeout))
        try:
            await asyncio.shield(ready)
        except asyncio.CancelledError:
            self._retire(gen, force=True)
            raise
        return gen

    async def _hold(self, gen: _Generation, ready: asyncio.Future[None], timeout: float) -> None:
        """Own one session from connect to close: enter the transport and the Client,
        list the tools, wait to be released, exit them (all in this one task)."""
        from mcp import Client
        from mcp_types import Implementation

        failure: BaseException | None = None
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                gen.scope = scope
                async with contextlib.AsyncExitStack() as stack:
                    transport = self._open()
                    client = Client(
                        transport,
                        cache=None,
                        client_info=Implementation(name="clambot-tools", version=_version()),
                    )
                    await stack.enter_async_context(client)
                    gen.pid = getattr(transport, "pid", None)
                    gen.tools = await _list_tools(client)
                    gen.client = client
                    scope.deadline = math.inf  # connected: no time limit from here on
                    gen.usable = True
                    ready.set_result(None)
                    await gen.release.wait()
            if scope.cancelled_caught and not ready.done():
                failure = TimeoutError()
        except BaseException as exc:
            failure = exc
            if not isinstance(exc, Exception | BaseExceptionGroup):
                raise
        finally:
            gen.usable = False
            if not ready.done():
                ready.set_exception(failure if failure is not None else TimeoutError())
            elif failure is not None:
                logger.info("MCP server %s: the session ended: %s", self.label, _reason(failure))

    def _retire(self, gen: _Generation, *, force: bool = False) -> None:
        """Stop using `gen` and let its holder close it (at once, with `force`)."""
        gen.usable = False
        gen.release.set()
        if force and gen.scope is not None:
            gen.scope.cancel()
        elif force and gen.task is not None:
            gen.task.cancel()

    async def call(self, run: Callable[[Any], Awaitable[T]], deadline: float) -> T:
        """`run(client)` on the live session (connecting first if needed).

        Raises ConnectFailedError, ConnectionLostError (the connection broke during
        the call; the next call reconnects), or what `run` raises.
        """
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            gen = await self.connected(deadline)
            try:
                return await run(gen.client)
            except MCPError as exc:
                # the dispatcher's own word for a transport that ended
                if exc.error.code == CONNECTION_CLOSED and exc.error.message == "Connection closed":
                    self._retire(gen)
                    raise ConnectionLostError(
                        f"the connection to the MCP server {self.label} broke during the call "
                        "(did the server exit?)"
                    ) from None
                raise
            finally:
                if gen.task is not None and gen.task.done():
                    self._retire(gen)
        finally:
            self._calls.discard(task)

    # -- closing

    async def _shutdown(self) -> None:
        for task in list(self._calls):
            task.cancel()
        gen, self._gen = self._gen, None
        if gen is None or gen.task is None:
            return
        self._retire(gen)
        done, _ = await asyncio.wait({gen.task}, timeout=_CLOSE_S / 2)
        if not done:  # the orderly close hangs (a DELETE that never returns): cut it
            self._retire(gen, force=True)
            await asyncio.wait({gen.task}, timeout=_CLOSE_S / 2)

    def begin_close(self) -> cf.Future[None]:
        """Start closing the session (and stopping a stdio server) and the loop; the
        future is done when the session is closed. Safe to call twice, from any thread."""
        if self._closing is not None:
            return self._closing
        self._closed = True
        _live.discard(self)
        closing: cf.Future[None] = cf.Future()
        self._closing = closing
        loop = self._loop

        async def shutdown_then_stop() -> None:
            try:
                await self._shutdown()
            finally:
                closing.set_result(None)
                loop.stop()

        try:
            asyncio.run_coroutine_threadsafe(shutdown_then_stop(), loop)
        except RuntimeError:  # the loop is already gone
            closing.set_result(None)
        return closing

    def close(self, *, wait: bool = True) -> None:
        """`begin_close`; with `wait`, block until the session is closed and the loop's
        thread has ended (bounded)."""
        self.begin_close()
        if wait and threading.current_thread() is not self._thread:
            self._stopped.wait(_CLOSE_S * 2)


async def _list_tools(client: Any) -> list[Any]:
    tools: list[Any] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clambot-tools")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


#: links not closed yet: closed (and their servers stopped) when the interpreter exits
_live: weakref.WeakSet[Link] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for link in list(_live):
        link.close(wait=True)


atexit.register(_close_all_at_exit)
