"""Compiled scripts kept between runs: QuickJS bytecode, by guest build and source.

A run that goes through the cache starts in two steps instead of one `cb_eval`: on a
miss the guest compiles the script and hands its bytecode out (`Guest.compile`), which
is kept here; on a hit the guest reads that bytecode back (`Guest.load`) and skips
parsing. Either way `Guest.start` then runs it exactly as `cb_eval` would have
(QuickJS's ``JS_Eval`` is itself compile + ``JS_EvalFunction``).

QuickJS's bytecode reader trusts its input: crafted bytes can corrupt the guest's heap
and take over the run, and with it the bindings the run may call. So bytecode is
executable code, and this cache trusts no bytes it did not get itself:

* it comes only from a fresh guest that has run no script yet (a Sandbox's fresh
  instance, never a session's), compiling the very source whose sha256 keys it;
* it never leaves the process: no file, no API that takes bytecode in;
* each entry carries an HMAC-SHA256, under a random key of its cache, of the guest
  build, the source's sha256 and the bytes, checked before the bytes go back into a
  guest: an entry that fails (damaged, or made by another cache) is dropped and the
  script compiled again;
* entries are keyed by the guest build, so a build never reads another's bytecode;
* the cache is bounded in entries and bytes; the least recently used go first.

Measured (bench/scripts.py): keeping compiled functions inside a guest instead (a
per-script memory image patched into each fresh instance) restores as fast as reading
bytecode (~0.11 ms for a 200-line script) but holds ~30x the memory per script.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

from . import _jsonsafe
from ._abi import State
from ._errors import ConfigError
from ._guest import Guest, GuestTrap, Outcome
from ._limits import Limits, store_limit

#: sources shorter than this are not kept by default: parsing them costs about what
#: reading their bytecode back does (measured: equal at ~100 bytes)
DEFAULT_MIN_SOURCE_CHARS = 512


@dataclass(frozen=True)
class CacheStats:
    """What a BytecodeCache has done since it was made.

    Attributes:
        hits: runs that started from kept bytecode.
        misses: runs that compiled (and kept what they could).
        refused: entries dropped because their check failed (damaged or foreign).
        evicted: entries dropped to stay within the bounds.
        entries: entries held now.
        bytes: bytes of bytecode held now.
    """

    hits: int
    misses: int
    refused: int
    evicted: int
    entries: int
    bytes: int


class BytecodeCache:
    """Compiled scripts (QuickJS bytecode) kept in this process's memory, so a script
    run again (a saved script, or any script a Sandbox runs again) is not parsed again.

    One cache is shared by every Sandbox of the process unless a Sandbox is given its
    own (``Sandbox(bytecode_cache=BytecodeCache(...))``) or none
    (``bytecode_cache=False``). The bytecode never leaves the process and nothing
    outside it can put bytecode in; see the module doc of ``clambot_tools._bytecode``.

    Args:
        max_entries: scripts kept at most (least recently used dropped first).
        max_bytes: bytes of bytecode kept at most.
        min_source_chars: plain runs of shorter sources skip the cache (parsing them
            is about as fast); saved scripts always use it.

    Raises ConfigError for a bound that is not a positive int.
    """

    def __init__(
        self,
        *,
        max_entries: int = 256,
        max_bytes: int = 32 << 20,
        min_source_chars: int = DEFAULT_MIN_SOURCE_CHARS,
    ) -> None:
        for name, value, lo in (
            ("max_entries", max_entries, 1),
            ("max_bytes", max_bytes, 1),
            ("min_source_chars", min_source_chars, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"BytecodeCache.{name} must be an int >= {lo}, got {value!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.min_source_chars = min_source_chars
        self._key = os.urandom(32)
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[bytes, bytes]] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._refused = self._evicted = 0

    def _mac(self, build: str, code_sha256: str, bytecode: bytes) -> bytes:
        mac = hmac.new(self._key, f"{build}\0{code_sha256}\0".encode(), "sha256")
        mac.update(bytecode)
        return mac.digest()

    def _get(self, build: str, code_sha256: str) -> bytes | None:
        """The bytecode kept for this source and guest build, checked; None if there
        is none or it fails its check (it is then dropped)."""
        key = (build, code_sha256)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
        bytecode, mac = entry
        if not hmac.compare_digest(mac, self._mac(build, code_sha256, bytecode)):
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
                    self._bytes -= len(bytecode)
                self._refused += 1
                self._misses += 1
            return None
        with self._lock:
            self._hits += 1
        return bytecode

    def _put(self, build: str, code_sha256: str, bytecode: bytes) -> None:
        """Keep `bytecode` (just written by a fresh guest compiling this source)."""
        if not bytecode or len(bytecode) > self.max_bytes:
            return
        entry = (bytecode, self._mac(build, code_sha256, bytecode))
        key = (build, code_sha256)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[0])
            self._entries[key] = entry
            self._bytes += len(bytecode)
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, (dropped, _) = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
                self._evicted += 1

    def stats(self) -> CacheStats:
        """Counters and sizes (see CacheStats)."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                refused=self._refused,
                evicted=self._evicted,
                entries=len(self._entries),
                bytes=self._bytes,
            )

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_shared: BytecodeCache | None = None
_shared_lock = threading.Lock()


def shared_cache() -> BytecodeCache:
    """The cache every Sandbox uses unless given its own."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = BytecodeCache()
        return _shared


def code_digest(code: str) -> str:
    """sha256 of a script's source (UTF-8, lone surrogates kept)."""
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


class ScriptStart:
    """How a run's script starts when it does not simply `eval`: through a bytecode
    cache (`cache`, for a fresh guest's run of the source with sha256 `code_sha256`),
    and/or with `args_json` as the global ``args`` (a saved script)."""

    __slots__ = ("args_json", "build", "cache", "code_sha256")

    def __init__(
        self,
        *,
        cache: BytecodeCache | None,
        build: str,
        code_sha256: str,
        args_json: bytes | None = None,
    ) -> None:
        self.cache = cache
        self.build = build
        self.code_sha256 = code_sha256
        self.args_json = args_json

    def first_step(
        self,
        guest: Guest,
        names: bytes,
        code: bytes,
        mem_limit: int,
        result_cap: int,
        stack: int,
        seed: int,
    ) -> Outcome:
        """What `Guest.eval` returns for this run: its first state (DONE, ERROR or
        WAIT). Raises GuestTrap as `eval` does."""
        limits = (mem_limit, result_cap, stack, seed)
        cache = self.cache
        kept = cache._get(self.build, self.code_sha256) if cache is not None else None
        if kept is not None:
            out = guest.load(names, kept, *limits)
        else:
            # bytecode of an instance that ran scripts is not kept
            keep = cache is not None and guest.pristine
            out = guest.compile(names, code, *limits, keep=keep)
            if out.state == State.READY and keep and cache is not None:
                cache._put(self.build, self.code_sha256, out.payload)
        if out.state != State.READY:
            return out
        return guest.start(self.args_json)


def bytecode_cache_of(given: BytecodeCache | bool, limits: Limits) -> BytecodeCache | None:
    """The cache a Sandbox uses for ``bytecode_cache=given`` (None: none).

    Raises ConfigError for anything but a bool or a BytecodeCache."""
    if given is True:
        cache: BytecodeCache | None = shared_cache()
    elif given is False:
        cache = None
    elif isinstance(given, BytecodeCache):
        cache = given
    else:
        raise ConfigError("bytecode_cache must be True, False or a clambot_tools.BytecodeCache")
    # with fuel, a run's budget must not depend on whether its script was parsed
    return cache if limits.fuel is None else None


def plain_start(cache: BytecodeCache | None, build: str, code: str) -> ScriptStart | None:
    """How a Sandbox's plain run of `code` starts: through `cache` when the source is
    long enough to be worth it, else (None) by a plain eval."""
    if cache is None or not isinstance(code, str) or len(code) < cache.min_source_chars:
        return None
    return ScriptStart(cache=cache, build=build, code_sha256=code_digest(code))


def syntax_error(source: str) -> str | None:
    """Why `source` does not parse (with its line and column), or None if it does.
    Compiled in a fresh sandbox; nothing runs."""
    from ._outcome import char_column
    from ._result import RunError
    from ._startup import start_image

    limits = Limits()
    try:
        with Guest(start_image(), memory_limit_bytes=store_limit(limits)) as guest:
            out = guest.compile(
                b"",
                source.encode("utf-8", "surrogatepass"),
                limits.memory_mb << 20,
                limits.max_result_bytes,
                limits.stack_kb * 1024,
                1,
                keep=False,
            )
    except GuestTrap as exc:
        return f"it could not be compiled ({exc.kind})"
    if out.state == State.READY:
        return None
    try:
        rec = _jsonsafe.loads(out.payload.decode("utf-8", "surrogatepass"))
        err = RunError.from_js("syntax", str(rec["name"]), str(rec["message"]), rec.get("stack"))
    except (ValueError, KeyError, TypeError):
        return "it could not be compiled"
    if err.line is None or err.column is None:
        return f"{err.name}: {err.message}"
    column = char_column(source, err.line, err.column)
    return f"{err.name}: {err.message} (line {err.line}, column {column})"
