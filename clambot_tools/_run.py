"""One execution of one script: a guest to run it in, its calls, its driver, its
result and its audit record. `Sandbox` and `Session` are thin facades over this.

Where a run is driven:

* ``run``: on the caller's thread, unless the Sandbox grants sync bindings. Those may
  run inline on the driving thread, and Python cannot stop a function that blocks;
  so then the run is driven on a package thread and the caller waits at most the
  deadline (plus a grace): a binding that blocks past it cannot hold the caller.
* ``arun``: on a package thread (never asyncio's default executor, which user code
  and frameworks need), the caller's event loop awaiting it without holding a thread.

Cancellation (an ``arun`` task cancelled, Ctrl-C in ``run``): no call of the run may
start, be approved or retry from then on, the script is interrupted, async calls are
cancelled, and the caller gets its CancelledError/KeyboardInterrupt once the run has
stopped (or after a short bound if a sync binding is stuck in its function).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol

from . import _outcome, _telemetry
from ._audit import AuditLog, digest
from ._calls import CallSetup, Dispatcher
from ._driver import HARD_GRACE_S, Driver, Ending, Logs
from ._errors import ConfigError, ErrorKind
from ._guest import Guest, GuestTrap
from ._image import StartImage
from ._pools import run_pool
from ._result import RunResult

if TYPE_CHECKING:
    import asyncio

    from ._bytecode import ScriptStart

logger = logging.getLogger("clambot_tools")

#: how long the caller waits past the deadline for a run whose driver is stuck (in a
#: sync binding that ignores cancellation) before it returns a timeout on its own
_CALLER_SLACK_S = 0.5
#: how long a cancelled caller waits for its run to stop before it lets go
_CANCEL_WAIT_S = 1.0


class GuestHost(Protocol):
    """Where a run gets its guest, and what happens to it afterwards."""

    def acquire(self) -> Guest:
        """The guest to run in. Raises GuestTrap if there is none."""

    def release(self, kind: ErrorKind | Literal["ok"]) -> bool:
        """The run is over; `kind` is how it ended (``ok`` or the error's kind).
        Return True if the guest's state was rolled back to before the run."""


class FreshGuest:
    """A new instance of `image` for every run, closed afterwards."""

    def __init__(self, image: StartImage, memory_limit_bytes: int, fuel: int | None) -> None:
        self._image = image
        self._memory_limit = memory_limit_bytes
        self._fuel = fuel
        self._guest: Guest | None = None

    def acquire(self) -> Guest:
        self._guest = Guest(self._image, memory_limit_bytes=self._memory_limit, fuel=self._fuel)
        return self._guest

    def release(self, kind: ErrorKind | Literal["ok"]) -> bool:
        if self._guest is not None:
            self._guest.close()
        return False


@contextlib.contextmanager
def _ctrl_c_stops(driver: Driver) -> Iterator[list[Callable[[], None]]]:
    """On the main thread, while `driver` runs: a SIGINT stops the run (the guest polls
    the host so the handler runs within milliseconds); once the run is tidied up, the
    handler that was installed before is given the signal (Python's default raises
    KeyboardInterrupt). The list it yields gets that deferred call."""
    deferred: list[Callable[[], None]] = []
    if threading.current_thread() is not threading.main_thread():
        yield deferred
        return
    # the C module: `signal`'s wrappers convert to enums and back, 10x the cost
    _signal = _c_signal()
    sigint = _signal.SIGINT
    previous = _signal.getsignal(sigint)
    if previous is None or previous == _signal.SIG_IGN:
        yield deferred
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if not deferred:
            deferred.append(lambda: _deliver(previous, signum, frame))
        driver.interrupt_from_signal()

    try:
        _signal.signal(sigint, on_sigint)
    except ValueError:  # not the main interpreter
        yield deferred
        return
    try:
        yield deferred
    finally:
        _signal.signal(sigint, previous)


def _c_signal() -> Any:
    import importlib

    return importlib.import_module("_signal")


def _deliver(handler: Any, signum: int, frame: Any) -> None:
    """Give a signal to the handler that was installed before ours."""
    _signal = _c_signal()
    if callable(handler):
        handler(signum, frame)
    elif handler == _signal.SIG_DFL:
        _signal.signal(signum, _signal.SIG_DFL)
        os.kill(os.getpid(), signum)


class Job:
    """One run of `code`; `execute` drives it on the current thread, `in_thread` and
    `run_async` on a package thread. `start` says how the script starts when not by a
    plain eval (`_bytecode`); `tags` go into the run's audit record."""

    def __init__(
        self,
        setup: CallSetup,
        names: bytes,
        code: str,
        host: GuestHost,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        start: ScriptStart | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(code, str):
            raise ConfigError(f"code must be a str, got {type(code).__name__}")
        self.setup = setup
        self.names = names
        self.code = code
        self.host = host
        self.loop = loop
        self.start = start
        self.tags = tags
        self.run_id = os.urandom(8).hex()
        #: the caller's context variables: the run and its tool calls run in copies of
        #: it (as asyncio tasks do), so its current span, request-scoped variables and
        #: a framework's run state reach the bindings
        self.context = contextvars.copy_context()
        self.trace = _telemetry.start_run(self.run_id)  # the caller's span is the parent
        self._lock = threading.Lock()
        self._driver: Driver | None = None
        self._cancelled = False
        self._claimed = False  # the result was given out (by the driver or the caller)
        self._report: _outcome.Report | None = None
        self._calls: Dispatcher | None = None

    # -- control from other threads

    def cancel(self) -> None:
        """Stop the run as soon as possible (from any thread)."""
        with self._lock:
            self._cancelled = True
            driver = self._driver
        if driver is not None:
            driver.cancel()

    def _claim(self) -> bool:
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    # -- the run

    def execute(self) -> RunResult:
        """Drive the run here; its RunResult (audited). Never raises for anything the
        script does; re-raises a KeyboardInterrupt received while it ran."""
        limits = self.setup.limits
        report = _outcome.Report(self.code, limits, time.perf_counter(), self.setup.callable_names)
        self._report = report
        try:
            guest = self.host.acquire()  # a session's lock is taken here: the clock starts after
        except GuestTrap as exc:
            return self._finish(Ending("trap", trap=exc.kind, detail=exc.detail), report)
        except BaseException as exc:  # a closed session: the caller gets the error
            if self.trace is not None:
                self.trace.refused(str(exc))
            raise
        deadline = time.monotonic() + limits.timeout_s
        calls = Dispatcher(
            self.setup, code=self.code, run_id=self.run_id, deadline=deadline, loop=self.loop
        )
        calls.trace = self.trace
        self._calls = calls
        ending: Ending | None = None
        try:
            logs = Logs(limits.max_log_bytes)
            report.logs = logs.entries
            driver = Driver(guest, calls, limits, deadline, logs, start=self.start)
            with self._lock:
                self._driver = driver
                if self._cancelled:
                    driver.cancelled = True
            try:
                with _ctrl_c_stops(driver) as deferred:
                    ending = driver.drive(self.names, self.code.encode("utf-8", "surrogatepass"))
                if deferred:
                    ending.signal = deferred[0]
            except Exception as exc:  # a fault of ours: an internal error
                logger.exception("clambot_tools: the run failed")
                ending = Ending("trap", trap="internal", detail=f"{type(exc).__name__}: {exc}")
            report.fuel_used = guest.fuel_used()
        finally:
            calls.close(
                "cancelled" if ending is None or ending.kind == "cancelled" else "abandoned"
            )
            report.binding_calls = calls.calls_made
            restored = self.host.release(_outcome.kind_of(ending))
        assert ending is not None
        return self._finish(ending, report, restored=restored)

    def _finish(
        self, ending: Ending, report: _outcome.Report, *, restored: bool = False
    ) -> RunResult:
        result = _outcome.build(ending, report, session_restored=restored)
        if self._claim():
            cancelled = ending.kind == "cancelled"
            self._audit_run(result, "cancelled" if cancelled else None)
        if ending.raised is not None:
            raise ending.raised
        if ending.signal is not None:  # a Ctrl-C stopped the run: now let it act
            ending.signal()
        return result

    def _audit_run(self, result: RunResult, outcome: str | None = None) -> None:
        outcome = outcome or ("ok" if result.error is None else result.error.kind)
        audit: AuditLog | None = self.setup.audit
        if audit is None and self.trace is None:
            return
        calls = self._calls
        code_sha256 = calls.code_sha256 if calls is not None else digest(self.code)
        if self.trace is not None:
            setup = self.setup
            self.trace.end(
                result,
                outcome,
                code_sha256=code_sha256,
                sandbox_id=setup.sandbox_id,
                session_id=setup.session_id,
            )
        if audit is None:
            return
        audit.emit(
            {
                "event": "run",
                "run_id": self.run_id,
                "code_sha256": code_sha256,
                "outcome": outcome,
                "duration_ms": round(result.stats.duration_ms, 3),
                "binding_calls": result.stats.binding_calls,
                "memory_bytes": result.stats.memory_bytes,
                **(self.tags or {}),
            }
        )

    def _give_up(self) -> RunResult:
        """The caller stops waiting for a driver stuck past the deadline (in a binding
        that blocks): a timeout result now; the driver tidies up when it can."""
        self.cancel()
        report = self._report or _outcome.Report(self.code, self.setup.limits, time.perf_counter())
        if self._calls is not None:
            report.binding_calls = self._calls.calls_made
        result = _outcome.build(Ending("timeout"), report)
        if self._claim():
            self._audit_run(result)
        return result

    def _wait_budget(self) -> float:
        return self.setup.limits.timeout_s + HARD_GRACE_S + _CALLER_SLACK_S

    def in_thread(self) -> RunResult:
        """`execute` on a package thread, the caller waiting at most the deadline plus
        a grace. A KeyboardInterrupt here cancels the run, then propagates."""
        fut = run_pool().submit(self.context.run, self.execute)
        try:
            return fut.result(timeout=self._wait_budget())
        except cf.TimeoutError:
            return self._give_up()
        except BaseException:
            self.cancel()
            try:
                fut.result(timeout=_CANCEL_WAIT_S)
            except BaseException:  # noqa: BLE001 - the interrupt is what propagates
                pass
            raise

    async def run_async(self) -> RunResult:
        """`execute` on a package thread, awaited. Cancelling the awaiting task cancels
        the run (see the module doc) and re-raises CancelledError."""
        import asyncio

        fut = asyncio.wrap_future(run_pool().submit(self.context.run, self.execute))
        try:
            done, _ = await asyncio.wait({fut}, timeout=self._wait_budget())
        except asyncio.CancelledError:
            self.cancel()
            try:
                await asyncio.wait({fut}, timeout=_CANCEL_WAIT_S)
                for _ in range(2):  # let the cancelled calls' tasks take their cancellation
                    await asyncio.sleep(0)
            except BaseException:  # noqa: BLE001 - cancelled again: still cancelled
                pass
            raise
        if not done:
            return self._give_up()
        return fut.result()
