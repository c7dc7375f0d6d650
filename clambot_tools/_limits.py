"""Limits of a run: every one is on by default and enforced by the host."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._errors import ConfigError

#: Size of the C stack linked into the guest (quickjs_wasm/build.py, -z stack-size).
GUEST_C_STACK_KB = 1024


def _check(name: str, value: object, lo: float, hi: float, *, integer: bool) -> None:
    kind = "an int" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"Limits.{name} must be {kind}, got {value!r}")
    assert isinstance(value, (int, float))
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ConfigError(f"Limits.{name} must be between {lo:g} and {hi:g}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one run may use. Hitting any limit ends the run with a RunError of that kind.

    Attributes:
        timeout_s: wall-clock time for the whole run, tool calls included (default 5).
        memory_mb: live memory the JavaScript heap may hold (default 64).
        stack_kb: QuickJS's stack budget, 64 to 960 (default 512, about 1,600 frames).
            Recursion past it is a catchable ``RangeError``; left uncaught it ends
            the run with kind ``stack``.
        max_log_bytes: bytes of console output kept; more ends the run with kind
            ``output_limit`` (default 1 MiB).
        max_result_bytes: bytes of the JSON result, and of the JSON arguments of one
            tool call; more ends the run with kind ``output_limit`` (default 1 MiB).
        fuel: an optional deterministic budget of Wasm instructions (roughly); when it
            runs out the run ends with kind ``timeout``. Costs about 10-20% speed.
        max_concurrent_calls: most tool calls of one run running at once (default
            16); more wait their turn (``Promise.all`` over 100 calls runs 16 at a
            time), so one run cannot take every thread of the process.

    Raises ConfigError (a ValueError) for a value out of range.
    """

    timeout_s: float = 5.0
    memory_mb: int = 64
    stack_kb: int = 512
    max_log_bytes: int = 1 << 20
    max_result_bytes: int = 1 << 20
    fuel: int | None = None
    max_concurrent_calls: int = 16

    def __post_init__(self) -> None:
        _check("timeout_s", self.timeout_s, 1e-3, 24 * 3600, integer=False)
        _check("memory_mb", self.memory_mb, 4, 3072, integer=True)
        _check("stack_kb", self.stack_kb, 64, GUEST_C_STACK_KB - 64, integer=True)
        _check("max_log_bytes", self.max_log_bytes, 0, 1 << 30, integer=True)
        _check("max_result_bytes", self.max_result_bytes, 16, 256 << 20, integer=True)
        _check("max_concurrent_calls", self.max_concurrent_calls, 1, 256, integer=True)
        if self.fuel is not None:
            _check("fuel", self.fuel, 1, 1 << 62, integer=True)


_MIB = 1 << 20


def store_limit(limits: Limits) -> int:
    """The cap on a guest's linear memory (the second wall behind the JS heap's cap): the
    heap cap, the C stack, room for two result buffers, and 32 MiB for static data and
    the allocator's pre-GC reserve."""
    return (
        limits.memory_mb * _MIB + 2 * limits.max_result_bytes + GUEST_C_STACK_KB * 1024 + 32 * _MIB
    )
