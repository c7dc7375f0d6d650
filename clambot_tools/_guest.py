"""The guest's ABI: one QuickJS-NG instance in its own Wasmtime store.

Every call into the guest and every host function goes through Wasmtime's *unchecked*
C API (``wasmtime_func_call_unchecked`` / ``wasmtime_func_new_unchecked``): the
high-level wasmtime-py paths cost 5-8x more per crossing (DESIGN.md, Performance).
The types of every export and import are checked once, when the module is prepared.
All raw calls of the package live in this module.

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
from ctypes import POINTER, byref
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from ._errors import ErrorKind
from ._image import StartImage

ST_DONE, ST_ERROR, ST_WAIT = 0, 1, 2
_ABORT_KINDS: dict[int, ErrorKind] = {1: "memory"}

_VAL = ffi.wasmtime_val_raw
_CALLBACK = ffi.wasmtime_func_unchecked_callback_t
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()


class _Fast:
    """The same C functions as wasmtime's bindings, called *without* releasing the GIL.

    ctypes releases the GIL around every call into a CDLL. For calls that take a
    microsecond (bookkeeping, short exports) that release/reacquire is most of their
    cost, and with several threads it turns into GIL ping-pong. These go through a
    PyDLL handle to the same library instead; anything that may run JS still releases.
    """

    def __init__(self) -> None:
        lib = ctypes.PyDLL(ffi.dll._name)
        for name in (
            "wasmtime_store_new",
            "wasmtime_store_context",
            "wasmtime_store_limiter",
            "wasmtime_context_set_epoch_deadline",
            "wasmtime_context_set_fuel",
            "wasmtime_context_get_fuel",
            "wasmtime_context_get_data",
            "wasmtime_caller_context",
            "wasmtime_instance_export_nth",
            "wasmtime_memory_data",
            "wasmtime_memory_data_size",
            "wasmtime_func_call_unchecked",
            "wasmtime_trap_new",
            "wasmtime_trap_code",
        ):
            slow = getattr(ffi.dll, name)
            fast = getattr(lib, name)
            fast.argtypes, fast.restype = slow.argtypes, slow.restype
            setattr(self, name, fast)

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - typing aid
        raise AttributeError(name)


_fast = _Fast()

_tls = threading.local()

#: live guests by id; host functions find their guest through the id in their env pointer
_LIVE: dict[int, Guest] = {}
_ids = itertools.count(1)


class GuestTrap(Exception):
    """The guest stopped abruptly; `kind` says why. The instance must be discarded."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message


@dataclass
class Outcome:
    """What one step of the guest produced."""

    state: int
    payload: bytes
    pending: int
    next_timer_ms: int
    mem_used: int


# ---------------------------------------------------------------- host functions


def _trap_ptr(message: bytes) -> int:
    trap = _fast.wasmtime_trap_new(message, len(message))
    return ctypes.cast(trap, ctypes.c_void_p).value or 0


def _host(fn: Callable[[Guest, ctypes.Array[_VAL]], int | None]) -> Any:
    """Wrap a host function: find its guest (the store's data is the guest's id) and
    never let a Python exception cross into C."""

    def entry(env: int | None, caller: Any, args: ctypes.Array[_VAL], nargs: int) -> int:
        # wasm runs on the thread that called into it, so the guest being called on
        # this thread is the caller; the store's data (its id) is the slow way to ask
        guest = getattr(_tls, "guest", None)
        if guest is None:
            ctx = _fast.wasmtime_caller_context(caller)
            guest = _LIVE.get(_fast.wasmtime_context_get_data(ctx) or 0)
        if guest is None:
            return _trap_ptr(b"clambot: guest is gone")
        try:
            if fn(guest, args) is None:
                return 0
            return _trap_ptr(b"clambot: run stopped by the host")
        except BaseException as exc:  # noqa: BLE001 - must not cross the C boundary
            guest.abort_kind = "internal"
            guest.abort_message = f"host function failed: {type(exc).__name__}"
            return _trap_ptr(b"clambot: host function failed")

    return _CALLBACK(entry)


def _h_log(g: Guest, a: ctypes.Array[_VAL]) -> int | None:
    level, data = a[0].i32, g.read(a[1].i32, a[2].i32)
    a[0].i32 = 0
    if g.on_log(level, data):
        return None
    g.abort_kind = "output_limit"
    g.abort_message = "console output exceeded the log limit"
    return 1


def _h_call(g: Guest, a: ctypes.Array[_VAL]) -> int | None:
    call_id, tool, data = a[0].i32, a[1].i32, g.read(a[2].i32, a[3].i32)
    a[0].i32 = g.on_call(call_id, tool, data)
    return None


def _h_abort(g: Guest, a: ctypes.Array[_VAL]) -> int | None:
    kind = _ABORT_KINDS.get(a[0].i32, "internal")
    g.abort_kind = kind
    g.abort_message = "the script exceeded the memory limit" if kind == "memory" else "guest abort"
    return 1


def _h_fd_write(g: Guest, a: ctypes.Array[_VAL]) -> int | None:
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
        g.abort_message = "console output exceeded the log limit"
        return 1
    return None


def _h_clock(g: Guest, a: ctypes.Array[_VAL]) -> int | None:
    clock_id, out = a[0].i32, a[2].i32
    if g.frozen_clock:  # while building the start image: keep it reproducible
        now = 0
    else:
        now = time.time_ns() if clock_id == 0 else time.monotonic_ns()
    g.write(out, now.to_bytes(8, "little"))
    a[0].i32 = 0
    return None


def _errno(code: int) -> Callable[[Guest, ctypes.Array[_VAL]], int | None]:
    def stub(g: Guest, a: ctypes.Array[_VAL]) -> int | None:
        a[0].i32 = code
        return None

    return stub


_EBADF, _ESPIPE = 8, 70
_HOST_FUNCS: dict[tuple[str, str], Any] = {
    ("clambot", "log"): _host(_h_log),
    ("clambot", "call"): _host(_h_call),
    ("clambot", "abort"): _host(_h_abort),
    ("wasi_snapshot_preview1", "fd_write"): _host(_h_fd_write),
    ("wasi_snapshot_preview1", "clock_time_get"): _host(_h_clock),
    ("wasi_snapshot_preview1", "fd_close"): _host(_errno(_EBADF)),
    ("wasi_snapshot_preview1", "fd_seek"): _host(_errno(_ESPIPE)),
    ("wasi_snapshot_preview1", "fd_fdstat_get"): _host(_errno(_EBADF)),
}


# ---------------------------------------------------------------- the instance


class Linked:
    """A start image, linked once: an InstancePre with our host functions, and the
    positions of the exports the host uses."""

    def __init__(self, image: StartImage) -> None:
        self.image = image
        engine = image.runtime.engine
        linker = ffi.wasmtime_linker_new(engine.ptr())
        try:
            for mod, name, ftype in image.imports:
                m, n = mod.encode(), name.encode()
                err = ffi.wasmtime_linker_define_func_unchecked(
                    linker,
                    m,
                    len(m),
                    n,
                    len(n),
                    ftype.ptr(),
                    _HOST_FUNCS[(mod, name)],
                    None,
                    _NO_FINALIZER,
                )
                if err:
                    raise wasmtime.WasmtimeError._from_ptr(err)
            self.pre = ctypes.POINTER(ffi.wasmtime_instance_pre_t)()
            err = ffi.wasmtime_linker_instantiate_pre(linker, image.module.ptr(), byref(self.pre))
            if err:
                raise wasmtime.WasmtimeError._from_ptr(err)
        finally:
            ffi.wasmtime_linker_delete(linker)
        names = [e.name for e in image.module.exports]
        self.export_index = {n: names.index(n) for n in (*image.export_names, "memory")}
        # Addresses inside the guest are the same in every instance of one image.
        self.io_addr = 0
        self.interrupt_addr = 0
        self.inline_addr = 0
        self.inline_cap = 0


_linked: dict[int, Linked] = {}
_linked_lock = threading.Lock()


def linked(image: StartImage) -> Linked:
    """The process-wide linked form of `image`."""
    lk = _linked.get(id(image))
    if lk is None:
        with _linked_lock:
            lk = _linked.get(id(image))
            if lk is None:
                lk = Linked(image)
                _linked[id(image)] = lk
    return lk


def _noop_log(level: int, data: bytes) -> bool:
    return True


def _noop_call(call_id: int, tool: int, data: bytes) -> int:
    return 0


class Guest:
    """One guest instance in its own store. Not thread-safe: one run at a time."""

    def __init__(
        self,
        image: StartImage,
        *,
        memory_limit_bytes: int,
        fuel: int | None = None,
    ) -> None:
        lk = linked(image)
        self.runtime = image.runtime
        self.id = next(_ids)
        self.abort_kind: ErrorKind | None = None
        self.abort_message = ""
        self.frozen_clock = image.needs_init
        self.on_log: Callable[[int, bytes], bool] = _noop_log
        #: called for each tool call; returns 0 (answer later with `resolve`) or what
        #: `answer_now` returned
        self.on_call: Callable[[int, int, bytes], int] = _noop_call
        self.closed = False
        self._store = _fast.wasmtime_store_new(
            image.runtime.engine.ptr(), ctypes.c_void_p(self.id), _NO_FINALIZER
        )
        self._ctx = _fast.wasmtime_store_context(self._store)
        _fast.wasmtime_store_limiter(self._store, memory_limit_bytes, -1, -1, -1, -1)
        _fast.wasmtime_context_set_epoch_deadline(self._ctx, 1 << 62)
        self.fuel = fuel
        if image.runtime.fuel:  # an engine that meters fuel traps at once without any
            _fast.wasmtime_context_set_fuel(self._ctx, 1 << 62)
        _LIVE[self.id] = self
        instance = ffi.wasmtime_instance_t()
        trap = POINTER(ffi.wasm_trap_t)()
        err = ffi.wasmtime_instance_pre_instantiate(lk.pre, self._ctx, byref(instance), byref(trap))
        if err or trap:
            if err:
                why = str(wasmtime.WasmtimeError._from_ptr(err))
            else:
                why = str(wasmtime.Trap._from_ptr(trap))
            self.close()
            if "concurrent" in why:  # every slot of the engine's pool is in use
                raise GuestTrap("internal", f"too many sandboxes are alive at once: {why}")
            raise GuestTrap("memory", "the sandbox could not be created within its memory limit")
        self._funcs = {}
        item = ffi.wasmtime_extern_t()
        name_ptr = ctypes.POINTER(ctypes.c_char)()
        name_len = ctypes.c_size_t()
        for name, idx in lk.export_index.items():
            _fast.wasmtime_instance_export_nth(
                self._ctx, byref(instance), idx, byref(name_ptr), byref(name_len), byref(item)
            )
            if name == "memory":
                self._mem = ffi.wasmtime_memory_t()
                ctypes.pointer(self._mem)[0] = item.of.memory
            else:
                f = ffi.wasmtime_func_t()
                ctypes.pointer(f)[0] = item.of.func
                self._funcs[name] = f
        self._vals = (_VAL * 8)()
        self._known_size = 0
        self.base = (
            ctypes.cast(
                _fast.wasmtime_memory_data(self._ctx, byref(self._mem)), ctypes.c_void_p
            ).value
            or 0
        )
        if image.needs_init:
            self.call("_initialize")
            if self.call("cb_init", image.stack_bytes) != 0:
                raise GuestTrap("internal", "guest initialisation failed")
            self.frozen_clock = False
        if not lk.io_addr:
            lk.io_addr = self.call("cb_io", quick=True)
            lk.interrupt_addr = self.call("cb_interrupt_addr", quick=True)
            raw = self.read(lk.io_addr + 20, 8)
            lk.inline_addr = int.from_bytes(raw[:4], "little")
            lk.inline_cap = int.from_bytes(raw[4:], "little")
        self._io = lk.io_addr
        self._inline_addr, self._inline_cap = lk.inline_addr, lk.inline_cap
        self.interrupt_address = self.base + lk.interrupt_addr
        if fuel is not None:  # the budget starts now, identical for every run
            _fast.wasmtime_context_set_fuel(self._ctx, fuel)

    # -- memory

    def size(self) -> int:
        return int(_fast.wasmtime_memory_data_size(self._ctx, byref(self._mem)))

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
        current = self.size()
        if size > current:
            prev = ctypes.c_uint64()
            err = ffi.wasmtime_memory_grow(
                self._ctx, byref(self._mem), (size - current + 65535) // 65536, byref(prev)
            )
            if err:
                wasmtime.WasmtimeError._from_ptr(err)
                raise GuestTrap("memory", "the saved state does not fit the memory limit")
        if skip + len(data) > self.size():
            raise GuestTrap("internal", "the saved state is larger than its memory")
        self.write(skip, data)

    def set_fuel(self, fuel: int) -> None:
        """Give the store exactly `fuel` units from now on."""
        self.fuel = fuel
        _fast.wasmtime_context_set_fuel(self._ctx, fuel)

    def interrupt(self) -> None:
        """Ask QuickJS to stop at its next interrupt check (safe from any thread)."""
        ctypes.c_int32.from_address(self.interrupt_address).value = 1

    # -- calls

    def call(self, name: str, *args: int, quick: bool = False) -> int:
        """Call an export with integer arguments; returns its i32 result (or 0).
        `quick` keeps the GIL: only for exports that run no JavaScript.

        Raises GuestTrap when the guest traps, whatever the reason.
        """
        vals = self._vals
        for i, v in enumerate(args):
            vals[i].i64 = v
        trap = POINTER(ffi.wasm_trap_t)()
        call = _fast.wasmtime_func_call_unchecked if quick else ffi.wasmtime_func_call_unchecked
        outer = getattr(_tls, "guest", None)
        _tls.guest = self
        try:
            err = call(self._ctx, byref(self._funcs[name]), vals, 8, byref(trap))
        finally:
            _tls.guest = outer
        if err:
            werr = wasmtime.WasmtimeError._from_ptr(err)  # takes ownership
            if self.abort_kind is not None:  # a host function stopped the run
                raise GuestTrap(self.abort_kind, self.abort_message)
            raise GuestTrap("internal", f"wasmtime error: {str(werr).splitlines()[0]}")
        if trap:
            raise self._trap_error(trap)
        return int(vals[0].i32)

    def _trap_error(self, trap: Any) -> GuestTrap:
        code = ffi.wasmtime_trap_code_t()
        has_code = _fast.wasmtime_trap_code(trap, byref(code))
        t = wasmtime.Trap._from_ptr(trap)  # takes ownership; frees the trap
        if self.abort_kind is not None:
            return GuestTrap(self.abort_kind, self.abort_message)
        if has_code:
            c = code.value
            if c == wasmtime.TrapCode.INTERRUPT.value:
                return GuestTrap("timeout", "the script ran past its time limit")
            if c == wasmtime.TrapCode.OUT_OF_FUEL.value:
                return GuestTrap("timeout", "the script used up its fuel budget")
            if c == wasmtime.TrapCode.STACK_OVERFLOW.value:
                return GuestTrap("stack", "call stack exhausted (recursion too deep)")
        return GuestTrap("internal", f"the engine stopped the script: {t.message}")

    def outcome(self, state: int) -> Outcome:
        """Read the CbIo block after a state change."""
        raw = self.read(self._io, 20)
        out_ptr, out_len, pending, next_ms, mem = (
            int.from_bytes(raw[i : i + 4], "little", signed=True) for i in range(0, 20, 4)
        )
        return Outcome(state, self.read(out_ptr, out_len), pending, next_ms, mem)

    def eval(
        self, names: bytes, code: bytes, mem_limit: int, result_cap: int, stack: int, seed: int
    ) -> Outcome:
        """Start a script. `names` is the NUL-separated list of tool names."""
        buf = self.call("cb_alloc", len(names) + len(code) + 1, quick=True)
        if not buf:
            raise GuestTrap("memory", "no room for the script in guest memory")
        self.write(buf, names + code + b"\0")
        return self.outcome(
            self.call("cb_eval", buf, len(names), len(code), mem_limit, result_cap, stack, seed)
        )

    def answer_now(self, status: int, payload: bytes) -> int:
        """From inside `on_call`: answer the call at once. Returns the value `on_call`
        must return, or 0 if the payload does not fit (then use `resolve` later)."""
        if len(payload) + 2 > self._inline_cap:
            return 0
        self.write(self._inline_addr, bytes((status,)) + payload + b"\0")
        return len(payload) + 1

    def resolve(self, call_id: int, status: int, payload: bytes) -> Outcome:
        """Settle a pending tool call: status 0 ok (payload is JSON), else an error message."""
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
        if self.fuel is None:
            return None
        left = ctypes.c_uint64()
        _fast.wasmtime_context_get_fuel(self._ctx, byref(left))
        return self.fuel - int(left.value)

    def set_epoch_deadline(self, ticks: int) -> None:
        """Trap once the engine's epoch has advanced `ticks` times from now."""
        _fast.wasmtime_context_set_epoch_deadline(self._ctx, ticks)

    def close(self) -> None:
        """Release the store (its slot goes back to the engine's pool). Safe to call twice."""
        if not self.closed:
            self.closed = True
            _LIVE.pop(self.id, None)
            ffi.wasmtime_store_delete(self._store)
