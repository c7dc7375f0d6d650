"""One QuickJS-NG guest instance: its host functions, its memory, its entry points.

The ABI (exports, status codes, the CbIo block) is written down in `_abi`; every raw
Wasmtime call goes through `_wasm`. A `Guest` turns them into a few typed steps
(`eval`, `resolve`, `timers`) that each return an `Outcome`, and maps every way a step
can stop abruptly to one `GuestTrap` with a kind.

Memory: the engine is configured so linear memory never moves, so its base address is
read once. Every read or write the guest asks for is bounds-checked against the current
memory size first: a guest corrupted by a hostile script must not make the host touch
memory outside its sandbox.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _abi, _wasm
from ._errors import ErrorKind
from ._image import StartImage

_tls = threading.local()

#: live guests by id; host functions find their guest through their store's data
_LIVE: dict[int, Guest] = {}
_ids = itertools.count(1)
_IO_STEP_BYTES = 4 * _abi.IO_STEP_FIELDS
_POLL_OFFSET = _abi.io_offset("poll_every")
assert _abi.io_offset("log_cap") == _POLL_OFFSET + 4  # set_run writes both at once
#: State by value (an enum call costs ~3.5 us; a step returns one)
_STATES = tuple(sorted(_abi.State, key=int))


class GuestTrap(Exception):
    """The guest stopped abruptly; `kind` says why. The instance must be discarded.

    `detail` is the engine's own text when the engine stopped it (for the logs).
    """

    def __init__(self, kind: ErrorKind, detail: str = "") -> None:
        super().__init__(detail or kind)
        self.kind: ErrorKind = kind
        self.detail = detail


@dataclass
class Outcome:
    """What one step of the guest produced."""

    state: _abi.State
    payload: bytes
    pending: int
    next_timer_ms: int
    mem_used: int


# ---------------------------------------------------------------- host functions

_VALS = "ctypes.Array[Any]"


def _host(fn: Callable[[Guest, Any], int | None]) -> Any:
    """Wrap a host function: find its guest, and never let a Python exception cross
    into C. A KeyboardInterrupt (or another BaseException a signal handler raised
    while the guest ran on the main thread) stops the run and is re-raised by the
    step that called into the guest."""

    def entry(env: Any, caller: Any, args: Any, nargs: int) -> int:
        # wasm runs on the thread that called into it, so the guest being called on
        # this thread is the caller; the store's data (its id) is the slow way to ask
        guest = getattr(_tls, "guest", None)
        if guest is None:
            guest = _LIVE.get(_wasm.caller_data(caller))
        if guest is None:
            return _wasm.new_trap(b"clambot: guest is gone")
        try:
            if fn(guest, args) is None:
                return 0
            return _wasm.new_trap(b"clambot: run stopped by the host")
        except Exception as exc:  # noqa: BLE001 - must not cross the C boundary
            guest.abort_kind = "internal"
            guest.abort_detail = f"host function failed: {type(exc).__name__}"
            return _wasm.new_trap(b"clambot: host function failed")
        except BaseException as exc:  # noqa: BLE001 - re-raised once out of the guest
            guest.raised = exc
            guest.abort_kind = "timeout"
            guest.abort_detail = "stopped by " + type(exc).__name__
            return _wasm.new_trap(b"clambot: run stopped by the host")

    return _wasm.host_callback(entry)


def _h_log(g: Guest, a: Any) -> int | None:
    level, data = a[0].i32, g.read(a[1].i32, a[2].i32)
    a[0].i32 = 0
    if g.on_log(level, data):
        return None
    g.abort_kind = "output_limit"
    return 1


def _h_call(g: Guest, a: Any) -> int | None:
    call_id, tool, data = a[0].i32, a[1].i32, g.read(a[2].i32, a[3].i32)
    a[0].i32 = g.on_call(call_id, tool, data)
    return None


def _h_abort(g: Guest, a: Any) -> int | None:
    g.abort_kind = "memory" if a[0].i32 == _abi.Abort.MEMORY else "internal"
    g.abort_detail = "guest abort"
    return 1


def _h_poll(g: Guest, a: Any) -> int | None:
    # Nothing to do: running Python code here lets the interpreter run a pending
    # signal handler (Ctrl-C) on the main thread, which raises through `_host`.
    return None


def _h_fd_write(g: Guest, a: Any) -> int | None:
    fd, iovs, count, out = a[0].i32, a[1].i32, a[2].i32, a[3].i32
    chunks = []
    total = 0
    raw = g.read(iovs, 8 * max(0, min(count, 1024)))
    for i in range(len(raw) // 8):
        ptr = int.from_bytes(raw[8 * i : 8 * i + 4], "little")
        n = int.from_bytes(raw[8 * i + 4 : 8 * i + 8], "little")
        chunks.append(g.read(ptr, n))
        total += n
    g.write(out, total.to_bytes(4, "little"))
    a[0].i32 = 0
    if fd in (1, 2) and total and not g.on_log(3 if fd == 2 else 0, b"".join(chunks)):
        g.abort_kind = "output_limit"
        return 1
    return None


def _h_clock(g: Guest, a: Any) -> int | None:
    clock_id, out = a[0].i32, a[2].i32
    if g.frozen_clock:  # while building the start image: keep it reproducible
        now = 0
    else:
        now = time.time_ns() if clock_id == 0 else time.monotonic_ns()
    g.write(out, now.to_bytes(8, "little"))
    a[0].i32 = 0
    return None


def _errno(code: int) -> Callable[[Guest, Any], int | None]:
    def stub(g: Guest, a: Any) -> int | None:
        a[0].i32 = code
        return None

    return stub


_EBADF, _ESPIPE = 8, 70
_HOST_FUNCS: dict[tuple[str, str], Any] = {
    ("clambot", "log"): _host(_h_log),
    ("clambot", "call"): _host(_h_call),
    ("clambot", "abort"): _host(_h_abort),
    ("clambot", "poll"): _host(_h_poll),
    ("wasi_snapshot_preview1", "fd_write"): _host(_h_fd_write),
    ("wasi_snapshot_preview1", "clock_time_get"): _host(_h_clock),
    ("wasi_snapshot_preview1", "fd_close"): _host(_errno(_EBADF)),
    ("wasi_snapshot_preview1", "fd_seek"): _host(_errno(_ESPIPE)),
    ("wasi_snapshot_preview1", "fd_fdstat_get"): _host(_errno(_EBADF)),
}
assert set(_HOST_FUNCS) == _abi.IMPORTS


# ---------------------------------------------------------------- the instance


class _Layout:
    """Addresses inside the guest: the same in every instance of one image."""

    def __init__(self, linked: _wasm.Linked) -> None:
        self.linked = linked
        self.io = 0
        self.interrupt = 0
        self.inline = 0
        self.inline_cap = 0


_layout_lock = threading.Lock()


def _layout(image: StartImage) -> _Layout:
    """The image's module linked to our host functions (once per image)."""
    lay = image.layout
    if lay is None:
        with _layout_lock:
            lay = image.layout
            if lay is None:
                linked = _wasm.Linked(
                    image.runtime.engine,
                    image.module,
                    image.imports,
                    _HOST_FUNCS,
                    image.export_names,
                )
                lay = image.layout = _Layout(linked)
    assert isinstance(lay, _Layout)
    return lay


def _noop_log(level: int, data: bytes) -> bool:
    return True


def _noop_call(call_id: int, tool: int, data: bytes) -> int:
    return 0


class Guest:
    """One guest instance in its own store. Not thread-safe: one step at a time.

    Raises GuestTrap (kind ``internal`` when every slot of the engine's pool is in use,
    ``memory`` when the instance does not fit its memory limit) if it cannot be made.
    """

    def __init__(
        self,
        image: StartImage,
        *,
        memory_limit_bytes: int,
        fuel: int | None = None,
    ) -> None:
        lay = _layout(image)
        self.runtime = image.runtime
        self.id = next(_ids)
        self.abort_kind: ErrorKind | None = None
        self.abort_detail = ""
        #: a BaseException (KeyboardInterrupt) raised while the guest ran
        self.raised: BaseException | None = None
        self.frozen_clock = image.needs_init
        self.on_log: Callable[[int, bytes], bool] = _noop_log
        #: called for each tool call; returns 0 (answer later with `resolve`) or what
        #: `answer_now` returned
        self.on_call: Callable[[int, int, bytes], int] = _noop_call
        self.closed = False
        #: no script has run here and the memory is the start image's: only such an
        #: instance's compiled bytecode may be kept (`_bytecode`)
        self.pristine = True
        self.fuel = fuel
        self._run_settings = (0, 0)
        self._known_size = 0
        self._store = _wasm.Store(image.runtime.engine, self.id, memory_limit_bytes)
        try:
            if image.runtime.fuel:  # an engine that meters fuel traps at once without any
                self._store.set_fuel(1 << 62)
            _LIVE[self.id] = self
            try:
                self._inst = _wasm.Instance(lay.linked, self._store)
            except _wasm.InstantiationError as exc:
                if exc.pool_full:
                    raise GuestTrap(
                        "internal", f"too many sandboxes are alive at once: {exc}"
                    ) from None
                raise GuestTrap("memory", str(exc)) from None
            self.base = self._inst.base
            if image.needs_init:
                self.call("_initialize")
                if self.call("cb_init", image.stack_bytes) != 0:
                    raise GuestTrap("internal", "guest initialisation failed")
                self.frozen_clock = False
            if not lay.io:
                lay.io = self.call("cb_io", quick=True)
                lay.interrupt = self.call("cb_interrupt_addr", quick=True)
                raw = self.read(lay.io + _abi.io_offset("inline_ptr"), 8)
                lay.inline = int.from_bytes(raw[:4], "little")
                lay.inline_cap = int.from_bytes(raw[4:], "little")
        except BaseException:
            self.close()
            raise
        self._io = lay.io
        self._inline_addr, self._inline_cap = lay.inline, lay.inline_cap
        self.interrupt_address = self.base + lay.interrupt
        if fuel is not None:  # the budget starts now, identical for every run
            self._store.set_fuel(fuel)

    # -- memory

    def size(self) -> int:
        """Bytes of linear memory now."""
        return self._inst.memory_size()

    def _check(self, ptr: int, length: int) -> None:
        # memory only grows, so a size seen once stays valid; ask again only past it
        if length < 0 or ptr + length > self._known_size:
            self._known_size = self.size()
            if length < 0 or ptr + length > self._known_size:
                raise GuestTrap("internal", "the guest asked for memory out of bounds")

    def read(self, ptr: int, length: int) -> bytes:
        """Bytes [ptr, ptr+length) of linear memory; refuses anything out of bounds."""
        ptr &= 0xFFFFFFFF
        self._check(ptr, length)
        return ctypes.string_at(self.base + ptr, length)

    def write(self, ptr: int, data: bytes) -> None:
        """Write `data` at `ptr` in linear memory; refuses anything out of bounds."""
        ptr &= 0xFFFFFFFF
        self._check(ptr, len(data))
        # a c_char array's .raw copies in C without releasing the GIL (ctypes.memmove
        # releases it: with other threads about, that hand-off cost ~8 us per write)
        (ctypes.c_char * len(data)).from_address(self.base + ptr).raw = data

    def memory_image(self, skip: int) -> tuple[int, bytes]:
        """The memory's size and its bytes from `skip` on (the C stack below is dead
        between calls), for a checkpoint or a snapshot."""
        size = self.size()
        return size, ctypes.string_at(self.base + skip, size - skip)

    def memory_view(self, skip: int) -> memoryview:
        """A view (no copy) of memory from `skip` to its current end. Valid only while
        nothing runs in this guest: the caller must hold the guest for its use."""
        size = self.size()
        return memoryview((ctypes.c_char * (size - skip)).from_address(self.base + skip)).cast("B")

    def load_memory_image(self, size: int, skip: int, data: bytes) -> None:
        """Grow memory to `size` and put `data` at `skip`: the inverse of memory_image.

        Raises GuestTrap (kind memory) if the store's limit does not allow the size.
        """
        self.pristine = False
        current = self.size()
        if size > current and not self._inst.grow_memory((size - current + 65535) // 65536):
            raise GuestTrap("memory", "the saved state does not fit the memory limit")
        if skip + len(data) > self.size():
            raise GuestTrap("internal", "the saved state is larger than its memory")
        self.write(skip, data)

    def set_fuel(self, fuel: int) -> None:
        """Give the store exactly `fuel` units from now on."""
        self.fuel = fuel
        self._store.set_fuel(fuel)

    def interrupt(self) -> None:
        """Ask QuickJS to stop at its next interrupt check (safe from any thread)."""
        if not self.closed:
            ctypes.c_int32.from_address(self.interrupt_address).value = 1

    def set_run(self, *, poll_every: int, log_cap: int) -> None:
        """Settings of the next run: call back into the host every `poll_every`
        interrupt checks (0: never), so a Ctrl-C on the main thread is seen during
        long JavaScript; cut a console string longer than `log_cap` bytes before
        copying it (the host ends the run past the cap anyway)."""
        if (poll_every, log_cap) != self._run_settings:
            self._run_settings = (poll_every, log_cap)
            data = poll_every.to_bytes(4, "little", signed=True) + min(
                log_cap, 0x7FFFFFFF
            ).to_bytes(4, "little", signed=True)
            self.write(self._io + _POLL_OFFSET, data)

    # -- calls

    def call(self, name: str, *args: int, quick: bool = False) -> int:
        """Call an export with integer arguments; returns its i32 result (or 0).
        `quick` keeps the GIL: only for exports that run no JavaScript.

        Raises GuestTrap when the guest traps, whatever the reason.
        """
        vals = self._inst.vals
        for i, v in enumerate(args):
            vals[i].i64 = v
        outer = getattr(_tls, "guest", None)
        _tls.guest = self
        try:
            return self._inst.call(name, len(args), release_gil=not quick)
        except _wasm.CallFailed as exc:
            raise self._trap(exc) from None
        finally:
            _tls.guest = outer

    def _trap(self, exc: _wasm.CallFailed) -> GuestTrap:
        if self.abort_kind is not None:  # a host function stopped the run
            return GuestTrap(self.abort_kind, self.abort_detail)
        if exc.code == "INTERRUPT":
            return GuestTrap("timeout", "epoch deadline")
        if exc.code == "OUT_OF_FUEL":
            return GuestTrap("timeout", "out of fuel")
        if exc.code == "STACK_OVERFLOW":
            return GuestTrap("stack", "native stack exhausted")
        return GuestTrap("internal", f"the engine stopped the script: {exc.message}")

    def outcome(self, state: int) -> Outcome:
        """Read the CbIo block after a state change."""
        raw = self.read(self._io, _IO_STEP_BYTES)
        out_ptr, out_len, pending, next_ms, mem = (
            int.from_bytes(raw[i : i + 4], "little", signed=True)
            for i in range(0, _IO_STEP_BYTES, 4)
        )
        return Outcome(_STATES[state], self.read(out_ptr, out_len), pending, next_ms, mem)

    def eval(
        self, names: bytes, code: bytes, mem_limit: int, result_cap: int, stack: int, seed: int
    ) -> Outcome:
        """Start a script. `names` is the NUL-separated list of tool names."""
        self.pristine = False
        buf = self.call("cb_alloc", len(names) + len(code) + 1, quick=True)
        if not buf:
            raise GuestTrap("memory", "no room for the script in guest memory")
        self.write(buf, names + code + b"\0")
        state = self.call("cb_eval", buf, len(names), len(code), mem_limit, result_cap, stack, seed)
        out = self.outcome(state)
        self.call("cb_free", buf, quick=True)  # compiled: a session must not keep every source
        return out

    def compile(
        self,
        names: bytes,
        code: bytes,
        mem_limit: int,
        result_cap: int,
        stack: int,
        seed: int,
        *,
        keep: bool = True,
    ) -> Outcome:
        """The first half of `eval`: prepare the run and compile `code`. READY with the
        script's bytecode as the payload when `keep` (empty if the guest could not write
        it), or ERROR (a syntax error, say). `start` runs it."""
        return self._prepare(
            "cb_compile", names, code, mem_limit, result_cap, stack, seed, int(keep)
        )

    def load(
        self, names: bytes, bytecode: bytes, mem_limit: int, result_cap: int, stack: int, seed: int
    ) -> Outcome:
        """`compile`, from bytecode that `compile` of this guest build gave in this
        process (QuickJS trusts it: never pass bytes from anywhere else). READY or ERROR."""
        return self._prepare("cb_load", names, bytecode, mem_limit, result_cap, stack, seed)

    def _prepare(
        self,
        export: str,
        names: bytes,
        data: bytes,
        mem_limit: int,
        result_cap: int,
        stack: int,
        seed: int,
        *more: int,
    ) -> Outcome:
        buf = self.call("cb_alloc", len(names) + len(data) + 1, quick=True)
        if not buf:
            raise GuestTrap("memory", "no room for the script in guest memory")
        self.write(buf, names + data + b"\0")
        state = self.call(
            export, buf, len(names), len(data), mem_limit, result_cap, stack, seed, *more
        )
        self.call("cb_free", buf, quick=True)
        return self.outcome(state)

    def start(self, args_json: bytes | None = None) -> Outcome:
        """The second half of `eval`: run the script `compile` or `load` prepared, with
        `args_json` (JSON) as the global ``args`` when given."""
        self.pristine = False
        if args_json is None:
            return self.outcome(self.call("cb_start", 0, -1))
        buf = self.call("cb_alloc", len(args_json) + 1, quick=True)
        if not buf:
            raise GuestTrap("memory", "no room for the arguments in guest memory")
        self.write(buf, args_json + b"\0")
        state = self.call("cb_start", buf, len(args_json))
        self.call("cb_free", buf, quick=True)
        return self.outcome(state)

    def answer_now(self, status: int, payload: bytes) -> int:
        """From inside `on_call`: answer the call at once. Returns the value `on_call`
        must return, or 0 if the payload does not fit (then use `resolve` later)."""
        if len(payload) + 2 > self._inline_cap:
            return 0
        self.write(self._inline_addr, bytes((status,)) + payload + b"\0")
        return len(payload) + 1

    def resolve(self, call_id: int, status: int, payload: bytes) -> Outcome:
        """Settle a pending tool call (see `_abi.Resolve`)."""
        buf = self.call("cb_alloc", len(payload) + 1, quick=True)
        if not buf:
            raise GuestTrap("memory", "no room for a tool result in guest memory")
        self.write(buf, payload + b"\0")
        state = self.call("cb_resolve", call_id, status, buf, len(payload))
        self.call("cb_free", buf, quick=True)
        return self.outcome(state)

    def timers(self) -> Outcome:
        """Fire the timers that are due."""
        return self.outcome(self.call("cb_timers"))

    def fuel_used(self) -> int | None:
        """Fuel spent since the budget was set (None without fuel)."""
        if self.fuel is None or self.closed:
            return None
        return self.fuel - self._store.fuel_left()

    def set_epoch_deadline(self, ticks: int) -> None:
        """Trap once the engine's epoch has advanced `ticks` times from now."""
        self._store.set_epoch_deadline(ticks)

    def close(self) -> None:
        """Release the store (its slot goes back to the engine's pool). Safe to call twice."""
        if not self.closed:
            self.closed = True
            _LIVE.pop(self.id, None)
            self._store.close()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
