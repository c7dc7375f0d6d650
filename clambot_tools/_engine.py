"""The shared Wasmtime engine: configuration, the compiled guest, its disk cache, the ticker.

One engine per configuration (with or without fuel) lives for the whole process. The
guest module is compiled once per process; the compiled artifact is cached on disk,
keyed by the guest's hash, the wasmtime version and the engine settings.

A compiled module is native code that Wasmtime trusts completely, and a script granted
the user's home (the files binding) could otherwise rewrite it. So the cache lives in a
directory only the current user can write; every file carries an HMAC-SHA256 of its
name and payload under a per-user secret kept in a 0600 file beside it (a checksum a
script could recompute is not enough); a file is read whole into memory and checked
before Wasmtime sees it (never mapped: a file truncated under a mapping kills the
process with SIGBUS); files are written atomically; and anything unexpected (wrong
owner, loose permissions, a bad MAC, a refusal from wasmtime) means "compile again",
never "fail".
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from ._errors import GuestUnavailableError
from ._once import Registry
from ._wasm import WASMTIME_VERSION, configure_engine, deserialize_module

#: Wasm code may use this much of the native (thread) stack. JS recursion mostly lives
#: here; QuickJS's own limit (on the C stack in linear memory) is set to trip first.
NATIVE_STACK_BYTES = 5 * 1024 * 1024
#: Wasmtime refuses a max_wasm_stack larger than its async stack size.
_ASYNC_STACK_BYTES = NATIVE_STACK_BYTES + 1024 * 1024
#: The ticker wakes at least this often while runs are active (epoch granularity).
TICK_S = 0.005


def guest_wasm_bytes() -> bytes:
    """Return the bytes of the guest module shipped in the package.

    Raises GuestUnavailableError when the package was installed without its guest.
    """
    override = os.environ.get("CLAMBOT_GUEST_WASM_RUNTIME")
    try:
        if override:
            return Path(override).read_bytes()
        return (Path(__file__).resolve().parent / "_guest.wasm").read_bytes()
    except OSError as exc:
        raise GuestUnavailableError(
            "clambot_tools/_guest.wasm is missing: install the package with pip so its "
            "build hook compiles the guest (see quickjs_wasm/BUILD.md)"
        ) from exc


#: Instances live in preallocated slots (Wasmtime's pooling allocator): no mmap/munmap
#: per run, and the pages a run dirtied are reset in place instead of faulted in again.
POOL_SLOTS = 1024
#: Pages below this offset (the C stack and the start of the heap) are reset in place
#: when a slot is freed instead of being decommitted: a fresh run then takes ~35 fewer
#: page faults (0.21 -> 0.12 ms), but each slot ever used keeps ~2 MiB resident. So
#: only the engine for short-lived runs does it; sessions live on an engine that keeps
#: nothing (a thousand closed sessions must not pin 2 GiB).
_POOL_KEEP_RESIDENT = 2 << 20
_POOL_WARM_SLOTS = 8


def _make_config(fuel: bool, pooling: bool = True, keep_resident: int = 0) -> wasmtime.Config:
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True
    cfg.consume_fuel = fuel
    cfg.cranelift_opt_level = "speed"
    # The memory never moves, so the ticker may write the interrupt flag at a fixed address.
    cfg.memory_may_move = False
    pool = None
    if pooling:
        pool = {
            "slots": POOL_SLOTS,
            "max_memory": 4 << 30,
            "table_elements": 8192,
            "instance_size": 1 << 20,
            "keep_resident": keep_resident,
            "warm_slots": _POOL_WARM_SLOTS,
        }
    configure_engine(cfg, async_stack_bytes=_ASYNC_STACK_BYTES, pool=pool)
    cfg.max_wasm_stack = NATIVE_STACK_BYTES
    return cfg


def _settings_key(fuel: bool) -> str:
    return (
        f"wasmtime={WASMTIME_VERSION};fuel={int(fuel)};stack={NATIVE_STACK_BYTES};"
        f"async={_ASYNC_STACK_BYTES};opt=speed;epoch=1;move=0"
    )


def cache_dir() -> Path | None:
    """The private directory for compiled modules, or None if no safe one exists."""
    root = os.environ.get("CLAMBOT_CACHE_DIR")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "clambot-tools"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return None
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return path


#: the per-user secret the cache's MACs (and the local snapshot key) derive from
_SECRET_FILE = "secret.key"
_SECRET_BYTES = 32
#: a cache file: this magic, the HMAC-SHA256 of its name and payload, the payload
_CACHE_MAGIC = b"CLAMBOT-CWASM-2\n"
_MAC_BYTES = 32
#: a compiled guest is 3-4 MiB; a bigger file is not one of ours (and is not read)
_MAX_CACHE_FILE = 64 << 20


def _read_private(path: Path, max_bytes: int) -> bytearray | None:
    """The bytes of `path` if it is a regular file (not a link) of this user that no
    one else may read or write and no larger than `max_bytes`, else None.

    The file is checked through the descriptor it is read from, and read whole into
    memory, so a file changed or truncated meanwhile costs a rebuild, never a crash.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (
            stat.S_ISREG(st.st_mode)
            and st.st_uid == os.getuid()
            and not st.st_mode & 0o077
            and st.st_size <= max_bytes
        ):
            return None
        buf = bytearray(st.st_size)
        view, got = memoryview(buf), 0
        while got < st.st_size:
            n = os.readv(fd, [view[got:]])
            if n == 0:  # shrank while read: not the file we checked
                return None
            got += n
        return buf
    except OSError:
        return None
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Write `data` to `path` (mode 0600) through a temporary file. With `replace`
    False an existing file wins and False is returned. Raises OSError."""
    import tempfile  # only on a cache miss: it costs ~5 ms to import

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp makes it 0600
            fh.write(data)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # atomic, and fails if another process was first
            return True
        except FileExistsError:
            return False
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def local_secret(directory: Path, purpose: bytes) -> bytes | None:
    """A key for `purpose`, derived from this user's secret in `directory` (a private
    0600 file of random bytes, made on first use: the first process to make it wins).

    A secret file that is not ours, not private or not the right size is replaced by a
    new one (whatever it protected is then rebuilt). None if no secret can be kept.
    """
    import hmac

    path = directory / _SECRET_FILE
    for _ in range(2):
        secret = _read_private(path, _SECRET_BYTES)
        if secret is not None and len(secret) == _SECRET_BYTES:
            return hmac.digest(bytes(secret), b"clambot-tools\0" + purpose, "sha256")
        try:
            exists = os.path.lexists(path)
            _write_atomic(path, os.urandom(_SECRET_BYTES), replace=exists)
        except OSError:
            return None
    return None


def _cache_mac(key: bytes, name: str, payload: bytes | bytearray | memoryview) -> bytes:
    import hmac

    mac = hmac.new(key, name.encode() + b"\0", "sha256")
    mac.update(payload)
    return mac.digest()


def _load_cached(engine: wasmtime.Engine, path: Path, key: bytes) -> wasmtime.Module | None:
    """The module at `path` if the file is ours and its MAC (over its name and its
    payload, under `key`) is right, else None.

    The file is read into memory and checked before Wasmtime sees it: the module never
    maps the file, so nothing done to the file later reaches this process.
    """
    import hmac

    data = _read_private(path, _MAX_CACHE_FILE)
    head = len(_CACHE_MAGIC) + _MAC_BYTES
    if data is None or len(data) <= head or data[: len(_CACHE_MAGIC)] != _CACHE_MAGIC:
        return None
    mac = bytes(data[len(_CACHE_MAGIC) : head])
    with memoryview(data) as view:
        expected = _cache_mac(key, path.name, view[head:])
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        return deserialize_module(engine, data, head)
    except Exception:  # noqa: BLE001 - any refusal means "compile again"
        return None


#: compiled modules kept in the cache (two per engine setting in use); older ones go
_CACHE_KEEP = 8


def _store_cached(path: Path, module: wasmtime.Module, key: bytes) -> None:
    """Write the module with its MAC in one file, atomically, then drop the least
    recently written entries beyond _CACHE_KEEP. Failures only cost the cache."""
    payload = bytes(module.serialize())
    try:
        _write_atomic(path, _CACHE_MAGIC + _cache_mac(key, path.name, payload) + payload)
        entries = sorted(path.parent.glob("guest-*.cwasm"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-_CACHE_KEEP]:
            old.unlink(missing_ok=True)
            old.with_suffix(".sha256").unlink(missing_ok=True)  # an older version's sidecar
    except OSError:
        pass


def cached_module(
    engine: wasmtime.Engine, key_material: bytes, fuel: bool, produce: Callable[[], bytes]
) -> wasmtime.Module:
    """A module from the disk cache under a key made from `key_material` and the engine
    settings; on a miss (or a file that fails its check), compile ``produce()`` and
    store it.

    Raises what compiling ``produce()`` raises (wasmtime.WasmtimeError); a cache that
    cannot be used only costs the compile.
    """
    # the magic is in the name: another version's files are left alone, not fought over
    name = hashlib.sha256(
        key_material + b"\0" + _settings_key(fuel).encode() + b"\0" + _CACHE_MAGIC
    ).hexdigest()
    directory = cache_dir()
    mac_key = local_secret(directory, b"module-cache") if directory is not None else None
    path = directory / f"guest-{name}.cwasm" if directory is not None else None
    if path is not None and mac_key is not None:
        module = _load_cached(engine, path, mac_key)
        if module is not None:
            return module
    module = wasmtime.Module(engine, produce())
    if path is not None and mac_key is not None:
        _store_cached(path, module, mac_key)
    return module


@dataclass
class _Watch:
    deadline: float
    address: int
    fired: bool = False


@dataclass
class Ticker:
    """One thread per engine: advances the epoch and raises the interrupt flag of runs
    whose deadline has passed. It sleeps while no run is active."""

    engine: wasmtime.Engine
    _watches: dict[int, _Watch] = field(default_factory=dict)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _next_id: int = 0
    _last_tick: float = 0.0
    _wakes_at: float = float("-inf")  # when the ticker's current sleep ends (inf: idle)

    def watch(self, deadline: float, address: int) -> int:
        """Register a run: at `deadline` (time.monotonic) write 1 to the int32 at `address`."""
        with self._lock:
            self._next_id += 1
            token = self._next_id
            self._watches[token] = _Watch(deadline, address)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="clambot-epoch-ticker", daemon=True
                )
                self._thread.start()
            # wake the ticker only if it would sleep past this deadline: waking it for
            # every short run would hand it the GIL in the middle of that run
            if deadline < self._wakes_at:
                self._lock.notify()
            return token

    def unwatch(self, token: int) -> None:
        """Forget a run; after this returns the ticker never touches its address again."""
        with self._lock:
            self._watches.pop(token, None)

    def _loop(self) -> None:
        with self._lock:
            while True:
                while not self._watches:
                    self._wakes_at = float("inf")
                    self._lock.wait()
                now = time.monotonic()
                soonest = now + TICK_S
                for w in self._watches.values():
                    if not w.fired:
                        if w.deadline <= now:
                            ctypes.c_int32.from_address(w.address).value = 1
                            w.fired = True
                        else:
                            soonest = min(soonest, w.deadline)
                # never faster than TICK_S, so an epoch deadline is never reached early
                if now - self._last_tick >= TICK_S:
                    self.engine.increment_epoch()
                    self._last_tick = now
                self._wakes_at = soonest
                self._lock.wait(max(0.0, soonest - time.monotonic()))


@dataclass
class Runtime:
    """An engine, the guest's bytes, the engine's ticker; the plain module on demand."""

    engine: wasmtime.Engine
    wasm: bytes
    ticker: Ticker
    fuel: bool
    _module: wasmtime.Module | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def plain_module(self) -> wasmtime.Module:
        """The guest as built (not initialised), compiled through the cache.

        Raises GuestUnavailableError if it does not compile.
        """
        with self._lock:
            if self._module is None:
                try:
                    self._module = cached_module(
                        self.engine, self.wasm, self.fuel, lambda: self.wasm
                    )
                except wasmtime.WasmtimeError as exc:
                    raise GuestUnavailableError(
                        f"the guest module does not compile: {exc}"
                    ) from exc
            return self._module


_runtimes: Registry[tuple[bool, bool], Runtime] = Registry()


def get_runtime(fuel: bool = False, long_lived: bool = False) -> Runtime:
    """The process-wide runtime for an engine with or without fuel metering, for
    short-lived runs or for long-lived sessions (see _POOL_KEEP_RESIDENT).

    Raises GuestUnavailableError if the guest module is missing.
    """

    def make() -> Runtime:
        keep = 0 if long_lived else _POOL_KEEP_RESIDENT
        try:
            engine = wasmtime.Engine(_make_config(fuel, keep_resident=keep))
        except wasmtime.WasmtimeError:  # e.g. address space too small for the pool
            engine = wasmtime.Engine(_make_config(fuel, pooling=False))
        return Runtime(engine, guest_wasm_bytes(), Ticker(engine), fuel)

    return _runtimes.get((fuel, long_lived), make)
