"""Driving one run of a guest: start the script, answer its calls, fire its timers,
until it ends, its deadline passes or it is cancelled. The result is an `Ending`: what
happened, not yet worded (`_outcome` does that).
"""

from __future__ import annotations

import codecs
import concurrent.futures as cf
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ._abi import State
from ._calls import Dispatcher
from ._engine import TICK_S
from ._errors import ErrorKind
from ._guest import Guest, GuestTrap, Outcome
from ._limits import Limits
from ._result import LOG_LEVELS, LogEntry

if TYPE_CHECKING:
    from ._bytecode import ScriptStart

#: after the soft deadline (QuickJS's interrupt), Wasmtime's epoch trap stops a script
#: that swallows the interrupt (e.g. `finally { continue }`) this much later
HARD_GRACE_S = 0.1
#: on the main thread, the guest calls back every this many interrupt checks (each
#: ~10,000 JS operations) so a Ctrl-C is seen within milliseconds
POLL_EVERY = 4
#: on the main thread, waits for calls or timers are cut in slices this long, so a
#: Ctrl-C (whose handler may take no lock) is seen between them
_MAIN_WAIT_SLICE_S = 0.05

EndKind = Literal["done", "error", "trap", "timeout", "cancelled"]


@dataclass
class Ending:
    """How a run ended.

    Attributes:
        kind: ``done`` (a value) or ``error`` (a JS error record) from the guest, or
            ``trap`` (the guest stopped abruptly), ``timeout`` (the driver saw the
            deadline pass) or ``cancelled``.
        outcome: the guest's last output, for ``done`` and ``error``.
        trap: the kind of a ``trap``; `detail` is the engine's words for it.
        raised: a KeyboardInterrupt (or similar) to re-raise once the run is tidied up.
        signal: a signal's handler to call once the run is tidied up (a Ctrl-C).
    """

    kind: EndKind
    outcome: Outcome | None = None
    trap: ErrorKind | None = None
    detail: str = ""
    raised: BaseException | None = None
    signal: Callable[[], None] | None = None


def _decode(data: bytes, *, final: bool = True) -> str:
    """A console call's text: UTF-8 in which a lone surrogate of a JS string is encoded as
    itself, so it is kept as the value keeps it (``surrogatepass``). With `final` false,
    an incomplete sequence at the end (text cut at the log limit) is dropped."""
    try:
        if final:
            return data.decode("utf-8", "surrogatepass")
        return codecs.getincrementaldecoder("utf-8")("surrogatepass").decode(data, False)
    except UnicodeDecodeError:  # not the guest's own encoding: keep what is readable
        return data.decode("utf-8", "replace" if final else "ignore")


#: the least a console call counts against the log cap, in bytes
_ENTRY_BYTES = 16


class Logs:
    """Console output of a run, capped at `Limits.max_log_bytes`."""

    def __init__(self, limit: int) -> None:
        self.entries: list[LogEntry] = []
        self.limit = limit
        self.size = 0

    def add(self, level: int, data: bytes) -> bool:
        """Keep one console call's text; False once the cap is passed (the run ends)."""
        lvl = LOG_LEVELS[level] if 0 <= level < len(LOG_LEVELS) else "log"
        room = self.limit - self.size
        # an entry costs at least _ENTRY_BYTES: a million empty console.log() calls must
        # not keep a million entries on the host under a 1 MiB cap
        if max(len(data), _ENTRY_BYTES) > room:
            if room > 0:
                cut = _decode(data[:room], final=False)
                self.entries.append(LogEntry(level=lvl, message=cut + " [... cut: log limit]"))
            self.size = self.limit
            return False
        self.size += max(len(data), _ENTRY_BYTES)
        text = _decode(data)
        self.entries.append(LogEntry.model_construct(level=lvl, message=text))
        return True


@dataclass
class Driver:
    """Drives `guest` through one script. `drive` runs on one thread; `cancel` may be
    called from any other."""

    guest: Guest
    calls: Dispatcher
    limits: Limits
    deadline: float
    logs: Logs
    #: how the script starts, when not by a plain eval (the bytecode cache, `args`)
    start: ScriptStart | None = None
    cancelled: bool = False
    _wake: cf.Future[None] | None = None  # made when first needed (a Future costs ~1.5 us)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _finished: bool = False

    def _wake_future(self) -> cf.Future[None]:
        with self._lock:
            if self._wake is None:
                self._wake = cf.Future()
            return self._wake

    def cancel(self) -> None:
        """Stop the run as soon as possible: no call may start any more, the script is
        interrupted, a wait for calls or timers is cut short."""
        with self._lock:
            self.cancelled = True
            self.calls.halt()
            if not self._finished:
                self.guest.interrupt()
        wake = self._wake_future()
        if not wake.done():
            wake.set_result(None)

    def interrupt_from_signal(self) -> None:
        """`cancel` for a signal handler on the driving thread: takes no lock (the
        thread may hold one); the loop sees the flag at its next step or slice."""
        self.cancelled = True
        if not self._finished:
            self.guest.interrupt()

    def drive(self, names: bytes, code: bytes) -> Ending:
        """Run `code` (the tool names in `names`) to its end. Never raises for anything
        the script does; a KeyboardInterrupt during the run comes back in `raised`."""
        guest, calls, lim = self.guest, self.calls, self.limits
        guest.on_log = self.logs.add
        guest.on_call = calls.on_call
        calls.answer_now = guest.answer_now
        guest.set_epoch_deadline(math.ceil((lim.timeout_s + HARD_GRACE_S) / TICK_S) + 1)
        ticker = guest.runtime.ticker  # the guest's own engine: its epoch must advance
        token = ticker.watch(self.deadline, guest.interrupt_address)
        try:
            if self.cancelled:
                return Ending("cancelled")
            on_main = threading.current_thread() is threading.main_thread()
            guest.set_run(poll_every=POLL_EVERY if on_main else 0, log_cap=lim.max_log_bytes)
            slice_s = _MAIN_WAIT_SLICE_S if on_main else float("inf")
            seed = int.from_bytes(os.urandom(8), "little") >> 1
            caps = (lim.memory_mb << 20, lim.max_result_bytes, lim.stack_kb * 1024, seed)
            if self.start is None:
                out = guest.eval(names, code, *caps)
            else:
                out = self.start.first_step(guest, names, code, *caps)
            due = _timer_due(out)
            while out.state == State.WAIT:
                if self.cancelled:
                    return Ending("cancelled")
                now = time.monotonic()
                if now >= self.deadline:  # before any queued call may start
                    return Ending("timeout")
                calls.start_queued()
                if not calls.ready:
                    calls.collect_done()  # answers first: a 0 ms timer loop must not starve them
                if calls.ready:
                    call_id, status, payload = calls.ready.popleft()
                    out = guest.resolve(call_id, status, payload)
                    due = _timer_due(out)
                    continue
                if due is not None and now >= due:
                    out = guest.timers()
                    due = _timer_due(out)
                    continue
                wait_s = min(self.deadline, due if due is not None else self.deadline) - now
                wait_s = max(0.0, min(wait_s, slice_s))
                if calls.busy:
                    calls.wait(wait_s, wake=self._wake_future())
                else:
                    cf.wait([self._wake_future()], timeout=wait_s)
            return Ending("done" if out.state == State.DONE else "error", outcome=out)
        except GuestTrap as exc:
            if guest.raised is not None:
                return Ending("cancelled", raised=guest.raised)
            if exc.kind == "timeout" and self.cancelled:
                return Ending("cancelled")
            return Ending("trap", trap=exc.kind, detail=exc.detail)
        except BaseException as exc:
            if isinstance(exc, Exception):
                raise
            return Ending("cancelled", raised=exc)
        finally:
            with self._lock:
                self._finished = True
            ticker.unwatch(token)


def _timer_due(out: Outcome) -> float | None:
    """When the guest's next timer is due (time.monotonic), or None without timers."""
    return time.monotonic() + out.next_timer_ms / 1000 if out.next_timer_ms >= 0 else None
