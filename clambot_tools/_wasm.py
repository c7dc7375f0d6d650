"""Every raw call into Wasmtime's C API, behind a few small typed, owned objects.

wasmtime-py's high-level calls cost ~27 us a crossing; the unchecked C calls used here
cost ~3 us (DESIGN.md, Performance). They live in wasmtime's private ``_ffi`` and
``_bindings`` modules, which is why wasmtime is pinned exactly and why no other module
of the package touches them: the rest of the package sees `Engine` configuration
helpers, `Linked` (a module linked once to its host functions), `Store` and `Instance`.

Handles are owned: `Store.close()` frees the store (and with it the instance's slot in
the engine's pool); it is idempotent, used by context managers, and run by a finaliser
if an owner forgets, so a failed initialisation cannot leak a pool slot.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Callable, Iterable
from ctypes import POINTER, byref
from typing import Any

import wasmtime
from wasmtime import _bindings
from wasmtime import _ffi as ffi

#: pinned: the unchecked C API below must match this version exactly
WASMTIME_VERSION = "50.0.1"

VAL = ffi.wasmtime_val_raw
_CALLBACK = ffi.wasmtime_func_unchecked_callback_t
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()

#: a host function: (env, caller, args, nargs) -> trap pointer or 0
RawHostFn = Callable[[Any, Any, "ctypes.Array[Any]", int], int]


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


def installed_version() -> str:
    """The version of the wasmtime package actually imported."""
    from importlib.metadata import version

    return version("wasmtime")


# ---------------------------------------------------------------- engine configuration


def configure_engine(
    cfg: wasmtime.Config, *, async_stack_bytes: int, pool: dict[str, int] | None
) -> None:
    """Settings wasmtime-py has no high-level setter for: the async stack size, and the
    pooling allocator (`pool` holds its limits; None keeps on-demand allocation)."""
    _bindings.wasmtime_config_async_stack_size_set(cfg.ptr(), async_stack_bytes)
    if pool is None:
        return
    p = _bindings.wasmtime_pooling_allocation_config_new()
    try:
        _bindings.wasmtime_pooling_allocation_config_total_memories_set(p, pool["slots"])
        _bindings.wasmtime_pooling_allocation_config_total_tables_set(p, pool["slots"])
        _bindings.wasmtime_pooling_allocation_config_total_core_instances_set(p, pool["slots"])
        _bindings.wasmtime_pooling_allocation_config_max_memory_size_set(p, pool["max_memory"])
        _bindings.wasmtime_pooling_allocation_config_table_elements_set(p, pool["table_elements"])
        _bindings.wasmtime_pooling_allocation_config_max_core_instance_size_set(
            p, pool["instance_size"]
        )
        _bindings.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(
            p, pool["keep_resident"]
        )
        _bindings.wasmtime_pooling_allocation_config_max_unused_warm_slots_set(
            p, pool["warm_slots"]
        )
        _bindings.wasmtime_pooling_allocation_strategy_set(cfg.ptr(), p)
    finally:
        _bindings.wasmtime_pooling_allocation_config_delete(p)


def deserialize_module(engine: wasmtime.Engine, data: bytearray, offset: int) -> wasmtime.Module:
    """`Module.deserialize` of data[offset:] without the two copies wasmtime-py's makes
    (a slice, then a ctypes array): Wasmtime copies the code into its own executable
    mapping anyway, and a fresh 3 MiB copy costs ~1 ms of page faults.

    Raises wasmtime.WasmtimeError if Wasmtime refuses the bytes.
    """
    n = len(data) - offset
    out = POINTER(_bindings.wasmtime_module_t)()
    view = (ctypes.c_uint8 * n).from_buffer(data, offset)
    err = _bindings.wasmtime_module_deserialize(engine.ptr(), view, n, byref(out))
    del view  # releases the buffer export of `data`
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)
    return wasmtime.Module._from_ptr(out)


# ---------------------------------------------------------------- host functions and traps


def new_trap(message: bytes) -> int:
    """A trap with `message`, as the address a host function returns to trap."""
    trap = _fast.wasmtime_trap_new(message, len(message))
    return ctypes.cast(trap, ctypes.c_void_p).value or 0


def host_callback(entry: RawHostFn) -> Any:
    """`entry` as an unchecked host function (keep the result alive while linked)."""
    return _CALLBACK(entry)


def caller_data(caller: Any) -> int:
    """The data word of the store a host function was called from (its owner's id)."""
    ctx = _fast.wasmtime_caller_context(caller)
    return int(_fast.wasmtime_context_get_data(ctx) or 0)


# ---------------------------------------------------------------- linking


class Linked:
    """A compiled module linked once to its host functions (an InstancePre), and the
    positions of its exports. One per module per process; never freed."""

    def __init__(
        self,
        engine: wasmtime.Engine,
        module: wasmtime.Module,
        imports: Iterable[tuple[str, str, wasmtime.FuncType]],
        host_functions: dict[tuple[str, str], Any],
        export_names: Iterable[str],
    ) -> None:
        self.module = module
        linker = ffi.wasmtime_linker_new(engine.ptr())
        try:
            for mod, name, ftype in imports:
                m, n = mod.encode(), name.encode()
                err = ffi.wasmtime_linker_define_func_unchecked(
                    linker,
                    m,
                    len(m),
                    n,
                    len(n),
                    ftype.ptr(),
                    host_functions[(mod, name)],
                    None,
                    _NO_FINALIZER,
                )
                if err:
                    raise wasmtime.WasmtimeError._from_ptr(err)
            self._pre = ctypes.POINTER(ffi.wasmtime_instance_pre_t)()
            err = ffi.wasmtime_linker_instantiate_pre(linker, module.ptr(), byref(self._pre))
            if err:
                raise wasmtime.WasmtimeError._from_ptr(err)
        finally:
            ffi.wasmtime_linker_delete(linker)
        names = [e.name for e in module.exports]
        self.export_index = {n: names.index(n) for n in (*export_names, "memory")}


# ---------------------------------------------------------------- stores and instances


class InstantiationError(Exception):
    """An instance could not be made; `pool_full` when every slot of the pool is taken."""

    def __init__(self, message: str, *, pool_full: bool) -> None:
        super().__init__(message)
        self.pool_full = pool_full


class CallFailed(Exception):
    """A call into the guest trapped or failed. `code` is the trap code's name
    (``INTERRUPT``, ``OUT_OF_FUEL``, ``STACK_OVERFLOW``...) or None; `message` is
    Wasmtime's own text."""

    def __init__(self, code: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _free_store(ptr: Any) -> None:
    ffi.wasmtime_store_delete(ptr)


class Store:
    """A Wasmtime store (one instance lives in it). Owned: `close()` frees it."""

    def __init__(self, engine: wasmtime.Engine, data: int, memory_limit_bytes: int) -> None:
        self._ptr = _fast.wasmtime_store_new(engine.ptr(), ctypes.c_void_p(data), _NO_FINALIZER)
        self._lock = threading.Lock()
        self.ctx = _fast.wasmtime_store_context(self._ptr)
        _fast.wasmtime_store_limiter(self._ptr, memory_limit_bytes, -1, -1, -1, -1)
        _fast.wasmtime_context_set_epoch_deadline(self.ctx, 1 << 62)
        self._finalizer = weakref.finalize(self, _free_store, self._ptr)
        self.closed = False

    def set_epoch_deadline(self, ticks: int) -> None:
        """Trap once the engine's epoch has advanced `ticks` times from now."""
        _fast.wasmtime_context_set_epoch_deadline(self.ctx, ticks)

    def set_fuel(self, fuel: int) -> None:
        """Give the store exactly `fuel` units from now on."""
        _fast.wasmtime_context_set_fuel(self.ctx, fuel)

    def fuel_left(self) -> int:
        """Fuel units left in the store."""
        left = ctypes.c_uint64()
        _fast.wasmtime_context_get_fuel(self.ctx, byref(left))
        return int(left.value)

    def close(self) -> None:
        """Free the store (its pool slot goes back to the engine). Safe to call twice."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._finalizer()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Instance:
    """An instance of a `Linked` module in a `Store`: its exported functions and its
    linear memory (which never moves: the engine is configured so)."""

    def __init__(self, linked: Linked, store: Store) -> None:
        instance = ffi.wasmtime_instance_t()
        trap = POINTER(ffi.wasm_trap_t)()
        err = ffi.wasmtime_instance_pre_instantiate(
            linked._pre, store.ctx, byref(instance), byref(trap)
        )
        if err or trap:
            if err:
                why = str(wasmtime.WasmtimeError._from_ptr(err))
            else:
                why = str(wasmtime.Trap._from_ptr(trap))
            raise InstantiationError(why, pool_full="concurrent" in why)
        self._store = store
        self._funcs: dict[str, Any] = {}
        self._mem = ffi.wasmtime_memory_t()
        item = ffi.wasmtime_extern_t()
        name_ptr = ctypes.POINTER(ctypes.c_char)()
        name_len = ctypes.c_size_t()
        for name, idx in linked.export_index.items():
            _fast.wasmtime_instance_export_nth(
                store.ctx, byref(instance), idx, byref(name_ptr), byref(name_len), byref(item)
            )
            if name == "memory":
                ctypes.pointer(self._mem)[0] = item.of.memory
            else:
                f = ffi.wasmtime_func_t()
                ctypes.pointer(f)[0] = item.of.func
                self._funcs[name] = f
        self.vals = (VAL * 8)()
        self.base = (
            ctypes.cast(
                _fast.wasmtime_memory_data(store.ctx, byref(self._mem)), ctypes.c_void_p
            ).value
            or 0
        )

    def memory_size(self) -> int:
        """Bytes of linear memory now."""
        return int(_fast.wasmtime_memory_data_size(self._store.ctx, byref(self._mem)))

    def grow_memory(self, pages: int) -> bool:
        """Grow memory by `pages` 64 KiB pages; False if the store's limit refuses."""
        prev = ctypes.c_uint64()
        err = ffi.wasmtime_memory_grow(self._store.ctx, byref(self._mem), pages, byref(prev))
        if err:
            wasmtime.WasmtimeError._from_ptr(err)  # takes ownership, frees it
            return False
        return True

    def call(self, name: str, nargs_written: int, *, release_gil: bool) -> int:
        """Call export `name` with the arguments already in `vals`; its i32 result.

        `release_gil=False` keeps the GIL: only for exports that run no JavaScript.

        Raises CallFailed when the call traps or fails.
        """
        trap = POINTER(ffi.wasm_trap_t)()
        call = (
            ffi.wasmtime_func_call_unchecked if release_gil else _fast.wasmtime_func_call_unchecked
        )
        err = call(self._store.ctx, byref(self._funcs[name]), self.vals, 8, byref(trap))
        if err:
            werr = wasmtime.WasmtimeError._from_ptr(err)  # takes ownership
            raise CallFailed(None, str(werr).splitlines()[0] if str(werr) else "error")
        if trap:
            code = ffi.wasmtime_trap_code_t()
            has_code = _fast.wasmtime_trap_code(trap, byref(code))
            t = wasmtime.Trap._from_ptr(trap)  # takes ownership; frees the trap
            name_of = wasmtime.TrapCode(code.value).name if has_code else None
            raise CallFailed(name_of, t.message)
        return int(self.vals[0].i32)
