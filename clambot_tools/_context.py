"""What a binding may know about the call it is serving: its deadline and cancellation.

A binding runs on a pool thread, on an event loop or inline on the run's own thread;
wherever it runs, ``current_call()`` returns the `CallContext` of the call it serves
(None outside a call). Long-running bindings use it to stop when the run that asked
for them is over: a SQL query interrupts itself at the deadline, an HTTP request
shortens its timeout to what is left, a loop checks ``cancelled``.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable


class CallContext:
    """One tool call's view of its run.

    Attributes:
        binding: the name of the binding being called.
        deadline: the run's deadline, in ``time.monotonic()`` seconds.
    """

    __slots__ = ("_callbacks", "_cancelled", "_lock", "binding", "deadline")

    def __init__(self, binding: str, deadline: float) -> None:
        self.binding = binding
        self.deadline = deadline
        self._cancelled = False
        self._callbacks: list[Callable[[], object]] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        """Seconds left before the run's deadline (0 once it has passed or the call
        was cancelled)."""
        if self._cancelled:
            return 0.0
        return max(0.0, self.deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        """True once the run is over (it returned, timed out or was cancelled): the
        binding's result will be discarded, so it should stop."""
        return self._cancelled or time.monotonic() >= self.deadline

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call `callback` (from another thread) when the run ends before this call
        does, e.g. ``sqlite3.Connection.interrupt``. Returns a function that
        unregisters it. If the call is already cancelled, `callback` runs at once.
        Exceptions from the callback are swallowed."""
        with self._lock:
            run_now = self._cancelled
            if not run_now:
                self._callbacks.append(callback)
        if run_now:
            _quietly(callback)

        def unregister() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unregister

    def cancel(self) -> None:
        """Mark the call cancelled and run its callbacks (the run driver does this)."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            _quietly(cb)


def _quietly(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:  # noqa: BLE001 - a failing cancel hook must not break the run's end
        pass


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "clambot_call", default=None
)


def current_call() -> CallContext | None:
    """The `CallContext` of the tool call the calling code serves, or None when it
    does not run inside a binding called by a script."""
    return _current.get()


def enter_call(ctx: CallContext | None) -> contextvars.Token[CallContext | None]:
    """Make `ctx` the current call (the run driver uses this around a binding)."""
    return _current.set(ctx)


def leave_call(token: contextvars.Token[CallContext | None]) -> None:
    """Undo `enter_call`."""
    _current.reset(token)
