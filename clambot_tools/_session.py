"""Sessions: runs that share one JavaScript global state, and their snapshots."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol

from . import _snapshot
from ._bindings import Binding
from ._calls import ApprovalMemory, CallSetup
from ._errors import ErrorKind, SessionClosedError, SnapshotError
from ._guest import Guest, GuestTrap
from ._image import StartImage
from ._limits import GUEST_C_STACK_KB, Limits, store_limit
from ._result import RunResult
from ._run import Job
from ._startup import start_image


class Owner(Protocol):
    """What a session needs of its Sandbox."""

    limits: Limits
    _setup: CallSetup
    _names_block: bytes
    _drive_in_thread: bool
    _image: StartImage
    _snapshot_key: bytes | None

    @property
    def bindings(self) -> Sequence[Binding]: ...

    def _base_memory(self) -> bytes: ...


STACK_BYTES = GUEST_C_STACK_KB * 1024
#: a run that ends with one of these is rolled back
_RESTORE_KINDS = frozenset({"timeout", "memory", "stack", "output_limit", "internal"})

#: a snapshot's memory: its size, and the regions (offset above the C stack, bytes)
#: that differ from a fresh instance
Memory = tuple[int, list[tuple[int, memoryview]]]


def _new_guest(limits: Limits) -> Guest:
    image = start_image(fuel=limits.fuel is not None, long_lived=True)
    return Guest(image, memory_limit_bytes=store_limit(limits), fuel=limits.fuel)


class Session:
    """A sequence of runs that share one JavaScript global state (the REPL style:
    ``let x = 1`` then ``x + 1``). Made by ``Sandbox.session()``; use it as a context
    manager or call ``close()``.

    Runs in a session are serialised (one at a time, from any thread). A run that hits
    a limit (timeout, memory, stack, output) is rolled back: the session is restored to
    its state before that run, and the error message says so. A run that merely throws
    keeps what it did before the throw, as a REPL would. Timers left by a run are
    dropped when the next run starts. An ``Approval.ALLOW_SESSION`` answer holds for
    this session only.
    """

    def __init__(self, sb: Owner, memory: Memory | None = None) -> None:
        self._sb = sb
        self._lock = threading.Lock()
        self._closed = False
        self._setup: CallSetup = replace(
            sb._setup, approvals=ApprovalMemory(), session_id=os.urandom(8).hex()
        )
        self._guest = _new_guest(sb.limits)
        self._checkpoint: tuple[int, bytes] | None = None
        if memory is not None:  # a fresh instance holds the start image: patch it
            size, regions = memory
            try:
                self._guest.load_memory_image(size, STACK_BYTES, b"")  # grow once
                for offset, chunk in regions:
                    self._guest.write(STACK_BYTES + offset, bytes(chunk))
            except GuestTrap as exc:
                self._guest.close()
                raise SnapshotError(f"the snapshot cannot be loaded: {exc.detail}") from None

    # -- GuestHost: the session's guest for one run, rolled back after a limit

    def acquire(self) -> Guest:
        """Take the session for one run (held until `release`).

        Raises SessionClosedError if the session is closed."""
        self._lock.acquire()
        if self._closed:
            self._lock.release()
            raise SessionClosedError("this session is closed")
        self._checkpoint = self._guest.memory_image(STACK_BYTES)
        if self._sb.limits.fuel is not None:
            self._guest.set_fuel(self._sb.limits.fuel)
        return self._guest

    def release(self, kind: ErrorKind | Literal["ok"]) -> bool:
        """End a run: roll the session back if a limit stopped it; let the next run in."""
        try:
            if kind not in _RESTORE_KINDS:
                return False
            # a limit stopped the script somewhere in the middle: put the session back
            # as it was before this run, in a clean instance
            assert self._checkpoint is not None
            size, data = self._checkpoint
            old, self._guest = self._guest, _new_guest(self._sb.limits)
            old.close()
            self._guest.load_memory_image(size, STACK_BYTES, data)
            return True
        finally:
            self._checkpoint = None
            self._lock.release()

    # -- the public side

    def _job(self, code: str, loop: Any = None) -> Job:
        return Job(self._setup, self._sb._names_block, code, self, loop=loop)

    def run(self, code: str) -> RunResult:
        """Run `code` in this session's global state; see `Sandbox.run`.

        Raises ConfigError if `code` is not a str, SessionClosedError if the session
        is closed.
        """
        job = self._job(code)
        return job.in_thread() if self._sb._drive_in_thread else job.execute()

    async def arun(self, code: str) -> RunResult:
        """The asyncio twin of `run` (async bindings run on the caller's loop).

        Raises ConfigError if `code` is not a str, SessionClosedError if the session
        is closed.
        """
        import asyncio

        return await self._job(code, asyncio.get_running_loop()).run_async()

    def snapshot(self) -> bytes:
        """The whole JavaScript state of this session as bytes: versioned (the guest's
        hash and a format number inside), compressed, restorable with
        ``Sandbox.restore`` in another process or on another machine.

        Raises SessionClosedError if the session is closed.
        """
        with self._lock:  # held while reading: no run may change the memory meanwhile
            if self._closed:
                raise SessionClosedError("this session is closed")
            view = self._guest.memory_view(STACK_BYTES)
            try:
                return _snapshot.pack(
                    view,
                    self._sb._base_memory(),
                    guest_sha256=self._sb._image.guest_sha256,
                    bindings=[b.name for b in self._sb.bindings],
                    memory_bytes=len(view) + STACK_BYTES,
                    key=self._sb._snapshot_key,
                )
            finally:
                view.release()

    def close(self) -> None:
        """Free the session's instance (waiting for a run in progress). Safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._guest.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_snapshot(sb: Owner, data: bytes) -> Memory:
    """The memory of a snapshot made for `sb`'s guest build, bindings and snapshot key.

    Raises SnapshotError for anything else."""
    return _snapshot.unpack(
        data,
        guest_sha256=sb._image.guest_sha256,
        bindings=[b.name for b in sb.bindings],
        skip=STACK_BYTES,
        max_memory_bytes=store_limit(sb.limits),
        key=sb._snapshot_key,
    )
