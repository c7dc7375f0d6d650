"""The guest's ABI, written down once for the host (quickjs_wasm/guest.c is its C side).

tests/test_abi.py parses guest.c and checks every constant, the CbIo layout and the
import/export names against this module, so the two cannot drift apart.
"""

from __future__ import annotations

import enum

#: the exports the host calls (``_initialize`` is the WASI reactor's)
EXPORTS: tuple[str, ...] = (
    "_initialize",
    "cb_init",
    "cb_alloc",
    "cb_free",
    "cb_io",
    "cb_interrupt_addr",
    "cb_eval",
    "cb_compile",
    "cb_load",
    "cb_start",
    "cb_resolve",
    "cb_timers",
)

#: every import the guest may have: our own and the WASI calls the host stubs
IMPORTS: frozenset[tuple[str, str]] = frozenset(
    {
        ("clambot", "log"),
        ("clambot", "call"),
        ("clambot", "abort"),
        ("clambot", "poll"),
        ("wasi_snapshot_preview1", "fd_write"),
        ("wasi_snapshot_preview1", "clock_time_get"),
        ("wasi_snapshot_preview1", "fd_close"),
        ("wasi_snapshot_preview1", "fd_seek"),
        ("wasi_snapshot_preview1", "fd_fdstat_get"),
    }
)


class State(enum.IntEnum):
    """What cb_eval, cb_start, cb_resolve and cb_timers return, and cb_compile and
    cb_load (READY or ERROR) (guest.c: ``ST_*``)."""

    DONE = 0  # the JSON of the value is in the output buffer
    ERROR = 1  # a JSON error record {kind, name, message, stack} is there
    WAIT = 2  # tool calls or timers are pending
    READY = 3  # compiled or loaded: cb_start runs it (cb_compile: the bytecode is the output)


class Resolve(enum.IntEnum):
    """How the host settles a tool call (guest.c: ``RESOLVE_*``)."""

    OK = 0  # the payload is the JSON result
    FAILED = 1  # an Error with the payload as message
    DENIED = 2  # an Error, kind binding_denied if uncaught
    BAD_ARGS = 3  # a TypeError
    TOO_LARGE = 4  # a RangeError, kind output_limit if uncaught


class Abort(enum.IntEnum):
    """Why the guest asked the host to end the run (guest.c: ``ABORT_*``)."""

    MEMORY = 1


#: the int32 fields of the CbIo block, in order (guest.c: ``typedef struct {...} CbIo``)
IO_FIELDS: tuple[str, ...] = (
    "out_ptr",
    "out_len",
    "pending",
    "next_timer_ms",
    "mem_used",
    "inline_ptr",
    "inline_cap",
    "poll_every",
    "log_cap",
)
#: the fields the host reads after every step (the first five)
IO_STEP_FIELDS = 5


def io_offset(field: str) -> int:
    """Byte offset of `field` in the CbIo block."""
    return 4 * IO_FIELDS.index(field)
