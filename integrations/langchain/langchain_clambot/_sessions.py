"""JavaScript sessions per LangGraph thread, kept in the graph's state.

The state's ``js_session`` key maps a tool's name to a `JSSessionRecord`: the base64
of the session's ``Session.snapshot()``, a revision id and a sequence number. The graph's
checkpointer stores it with the rest of the thread's state, so any worker that can read
the checkpoint can restore the session, and LangGraph's own machinery (interrupts and
resumes, retries, time travel, forks) always sees the JavaScript state that belongs to
that point of the thread.

Each tool object keeps, in its process, a cache of live ``Session`` objects by thread
id (`SessionCache`): a live session is only a copy of what the state holds, used while
its revision is the one the state holds (or one a parallel call of the same graph step
made from it), and restored from the state otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures as cf
import contextvars
import dataclasses
import functools
import inspect
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from clambot_tools import (
    Approval,
    ApprovalRequest,
    Approver,
    Binding,
    Sandbox,
    Session,
    SnapshotError,
)
from langchain_core.runnables import RunnableConfig
from typing_extensions import TypedDict

#: the state key holding the sessions of a thread, by tool name
SESSION_KEY = "js_session"
#: the state key holding, by tool name, the bindings a human allowed for the thread
APPROVALS_KEY = "js_approvals"
#: error kinds after which the core Session has already put itself back as it was
RESTORED_KINDS = frozenset({"timeout", "memory", "stack", "output_limit", "internal"})


class JSSessionRecord(TypedDict):
    """One tool's JavaScript session as the graph's state holds it.

    Attributes:
        snapshot: base64 of ``Session.snapshot()`` (versioned, compressed bytes,
            signed with the tool's ``snapshot_key``: edited ones are refused).
        rev: a random id of this revision of the session.
        seq: how many successful runs made it (the latest of two updates wins).
    """

    snapshot: str
    rev: str
    seq: int


def merge_js_sessions(
    current: Mapping[str, JSSessionRecord] | None,
    update: Mapping[str, JSSessionRecord | None] | None,
) -> dict[str, JSSessionRecord]:
    """The reducer of the ``js_session`` state key.

    Updates are merged by tool name; of two records for one tool (parallel tool calls
    in one graph step) the one with the higher ``seq`` wins. ``None`` as the update
    forgets every session of the thread; ``None`` for a tool forgets that tool's.
    """
    merged: dict[str, JSSessionRecord] = dict(current or {})
    if update is None:
        return {}
    for name, record in update.items():
        if record is None:
            merged.pop(name, None)
            continue
        old = merged.get(name)
        if old is None or _seq(record) >= _seq(old):
            merged[name] = record
    return merged


def _seq(record: Any) -> int:
    """The record's seq, or -1 when the record is damaged."""
    seq = record.get("seq") if isinstance(record, Mapping) else None
    return seq if isinstance(seq, int) else -1


def merge_js_approvals(
    current: Mapping[str, list[str]] | None,
    update: Mapping[str, list[str] | None] | None,
) -> dict[str, list[str]]:
    """The reducer of the ``js_approvals`` state key: the bindings a human allowed for
    the thread ("allow_session"), by tool name. Updates add to them; ``None`` forgets
    every one of the thread, ``None`` for a tool forgets that tool's."""
    if update is None:
        return {}
    merged = {name: list(names) for name, names in (current or {}).items()}
    for name, names in update.items():
        if names is None:
            merged.pop(name, None)
        else:
            merged[name] = sorted(set(merged.get(name, [])) | set(names))
    return merged


class JSSessionState(TypedDict, total=False):
    """The state keys that ``SandboxedJSTool(sessions=True)`` keeps its sessions, and
    the bindings allowed for the thread's session, in.

    Mix it into a graph's state schema: ``class State(MessagesState, JSSessionState)``
    (with ``create_agent``, use ``JSSessionMiddleware()`` instead).
    """

    js_session: Annotated[dict[str, JSSessionRecord], merge_js_sessions]
    js_approvals: Annotated[dict[str, list[str]], merge_js_approvals]


@dataclasses.dataclass(frozen=True)
class Where:
    """Where in a graph a tool call runs.

    Attributes:
        thread: the LangGraph thread id ("" outside a thread).
        step: the graph step (the checkpoints it starts from), None outside a graph.
        call: (task id, tool call id): the same in a re-run of the call (a retry, a
            resume, a replay), different for calls made in parallel.
    """

    thread: str
    step: str | None
    call: tuple[str, str]

    @classmethod
    def of(cls, config: RunnableConfig, tool_call_id: str) -> Where:
        """Read `config` (the tool's RunnableConfig). Never raises."""
        conf = config.get("configurable") or {}
        thread = conf.get("thread_id")
        cmap = conf.get("checkpoint_map")
        step: str | None = None
        if isinstance(cmap, Mapping) and cmap:
            step = repr(sorted((str(k), str(v)) for k, v in cmap.items()))
        task = str(conf.get("__pregel_task_id") or "")
        return cls("" if thread is None else str(thread), step, (task, tool_call_id))


def stored_rev(record: Any) -> str | None:
    """The rev of a stored record (None when there is none, or it is damaged)."""
    rev = record.get("rev") if isinstance(record, Mapping) else None
    return rev if isinstance(rev, str) else None


def decode_record(record: Any) -> tuple[bytes, str, int]:
    """(snapshot bytes, rev, seq) of a stored record.

    Raises SnapshotError if the record is not one this tool wrote (damaged state).
    """
    if not isinstance(record, Mapping):
        raise SnapshotError("the stored session is damaged (not a record)")
    snap, rev, seq = record.get("snapshot"), record.get("rev"), record.get("seq")
    if not isinstance(snap, str) or not isinstance(rev, str) or not isinstance(seq, int):
        raise SnapshotError("the stored session is damaged (fields missing)")
    try:
        data = base64.b64decode(snap.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SnapshotError("the stored session is damaged (not base64)") from None
    return data, rev, seq


class Relay:
    """The bindings and approver of the run a live session is running now.

    A Session belongs to one Sandbox, whose bindings are fixed, while each run of the
    tool has its own (they close over that run's RunState). The session's Sandbox is
    given relay bindings that call the current run's; runs of one session are one at a
    time, so one relay per session is enough.
    """

    def __init__(self) -> None:
        self._bindings: dict[str, Binding] = {}
        self._approve: Approver | None = None

    def start(self, bindings: list[Binding], approve: Approver | None) -> None:
        """Make `bindings` and `approve` those of the run about to start."""
        self._bindings = {b.name: b for b in bindings}
        self._approve = approve

    def end(self) -> None:
        """Forget the run's bindings and approver once it is over: a live session
        outlives its runs, and they hold the run's state (its graph, its approvals)."""
        self._bindings, self._approve = {}, None

    def _current(self, name: str) -> Binding:
        b = self._bindings.get(name)
        if b is None:
            raise RuntimeError(f"tools.{name} was called outside a run")
        return b

    def approve(self, request: ApprovalRequest) -> Any:
        """Ask the current run's approver (deny when there is none).

        ``ALLOW_SESSION`` is passed on as ``ALLOW_ONCE``: the run keeps it (in the
        thread's state), and the session's Sandbox, which outlives the run and may be
        restored for another thread, must never remember it.
        """
        if self._approve is None:
            return Approval.DENY
        answer = self._approve(request)
        if inspect.isawaitable(answer):
            return _once_later(answer)
        return _once(answer)

    def binding(self, b: Binding, *, either: bool) -> Binding:
        """A relay of `b` (whose name, schema and effects it keeps).

        With `either`, the current run's binding may be sync or async (a LangChain tool,
        bound for ``invoke`` or ``ainvoke``): the relay is async, and runs a sync one on
        a pool of this package's own (never the event loop's default executor, which
        the application and LangChain's own sync tools need).
        """
        name = b.name
        if b.is_async or either:

            async def acall(**kwargs: Any) -> Any:
                cur = self._current(name)
                if cur.is_async:
                    return await cur.func(**kwargs)
                loop = asyncio.get_running_loop()
                # in a copy of this context: the tool call's span stays current
                call = functools.partial(contextvars.copy_context().run, cur.func, **kwargs)
                return await loop.run_in_executor(_relay_pool(), call)

            return dataclasses.replace(b, func=acall, is_async=True)

        def call(**kwargs: Any) -> Any:
            return self._current(name).func(**kwargs)

        return dataclasses.replace(b, func=call, is_async=False)


_pool: cf.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _relay_pool() -> cf.ThreadPoolExecutor:
    """Threads for sync tools called through a session's relay (made on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = cf.ThreadPoolExecutor(256, thread_name_prefix="clambot-lc-relay")
        return _pool


def _once(answer: Any) -> Any:
    """`answer`, with ALLOW_SESSION as ALLOW_ONCE."""
    return Approval.ALLOW_ONCE if answer == Approval.ALLOW_SESSION else answer


async def _once_later(answer: Awaitable[Any]) -> Any:
    """`_once` of an answer still to come."""
    return _once(await answer)


@dataclasses.dataclass
class _StepMark:
    """The graph step in which a live session last moved on from the state."""

    step: str
    base: str | None
    calls: set[tuple[str, str]]


class LiveSession:
    """One thread's live Session in this process, and which revision it holds.

    Attributes:
        lock: held for the whole of a run (sync, run, commit or roll back).
        sandbox: the Sandbox of the session (relay bindings).
        relay: where the relay bindings and approver find the current run's.
        session: the live Session, None until the first run.
        rev: the revision the session holds (None: a new, empty session).
        seq: its sequence number (0 for an empty session).
        snapshot: the bytes of that revision (None for an empty session).
    """

    def __init__(self, sandbox: Sandbox, relay: Relay) -> None:
        self.lock = threading.Lock()
        self.sandbox = sandbox
        self.relay = relay
        self.session: Session | None = None
        self.rev: str | None = None
        self.seq = 0
        self.snapshot: bytes | None = None
        self._mark: _StepMark | None = None

    def _replace(self, session: Session) -> None:
        old, self.session = self.session, session
        if old is not None:
            old.close()

    def sync(self, stored: Any, where: Where, *, reset: bool) -> str | None:
        """Make the live session hold what `stored` (the state's record, or None)
        holds, restoring it when the live one is another revision. Kept as it is when
        a parallel call of the same graph step moved it on from `stored`.

        Returns None, or with `reset`, the reason an unreadable record was replaced by
        an empty session. Raises SnapshotError (without `reset`) if the record is
        damaged or comes from another guest build, format or set of bindings.
        """
        rev = stored_rev(stored)
        if self.session is not None and (stored is None or rev is not None):
            if self.rev == rev:
                return None
            m = self._mark
            if (
                m is not None
                and where.step is not None
                and m.step == where.step
                and m.base == rev
                and where.call not in m.calls
            ):
                return None
        try:
            if stored is None:
                data, seq = None, 0
                session = self.sandbox.session()
            else:
                data, rev, seq = decode_record(stored)
                session = self.sandbox.restore(data)
        except SnapshotError as exc:
            if not reset:
                raise
            self._replace(self.sandbox.session())
            self.rev, self.snapshot, self._mark = None, None, None
            self.seq = max(_seq(stored), 0)  # the next record must win over the bad one
            return str(exc)
        self._replace(session)
        self.rev, self.seq, self.snapshot, self._mark = rev, seq, data, None
        return None

    def rollback(self) -> None:
        """Put the live session back to the revision it held before the run."""
        try:
            fresh = (
                self.sandbox.restore(self.snapshot)
                if self.snapshot is not None
                else self.sandbox.session()
            )
        except SnapshotError:  # pragma: no cover - our own bytes: restore from the state
            self.drop()
            return
        self._replace(fresh)

    def commit(self, stored: Any, where: Where) -> JSSessionRecord:
        """Snapshot the session after a successful run: its new record for the state.

        Raises ConfigError if the session is closed.
        """
        assert self.session is not None
        data = self.session.snapshot()
        base = stored_rev(stored)
        if where.step is not None:
            m = self._mark
            if m is not None and m.step == where.step and m.base == base:
                m.calls.add(where.call)
            else:
                self._mark = _StepMark(where.step, base, {where.call})
        self.rev, self.seq, self.snapshot = uuid.uuid4().hex, self.seq + 1, data
        return JSSessionRecord(
            snapshot=base64.b64encode(data).decode("ascii"), rev=self.rev, seq=self.seq
        )

    def drop(self) -> None:
        """Forget the live session: the next run restores it from the state."""
        if self.session is not None:
            self.session.close()
        self.session, self.rev, self.seq, self.snapshot, self._mark = None, None, 0, None, None


class SessionCache:
    """The live sessions of one tool in this process, by thread id, least recently
    used evicted past `max_live` (a session that is running is never evicted)."""

    def __init__(self, max_live: int, factory: Callable[[], LiveSession]) -> None:
        self._max = max_live
        self._factory = factory
        self._live: OrderedDict[str, LiveSession] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, thread: str) -> LiveSession:
        """The live session of `thread`, made (empty) if there is none."""
        with self._lock:
            live = self._live.get(thread)
            if live is None:
                live = self._live[thread] = self._factory()
            self._live.move_to_end(thread)
            for key in list(self._live)[: max(0, len(self._live) - self._max)]:
                old = self._live[key]
                if old is not live and old.lock.acquire(blocking=False):
                    try:
                        old.drop()
                    finally:
                        old.lock.release()
                    del self._live[key]
            return live

    def discard(self, thread: str, live: LiveSession) -> None:
        """Forget `live` (without waiting for it): the thread's next run makes another."""
        with self._lock:
            if self._live.get(thread) is live:
                del self._live[thread]

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)

    def close(self) -> None:
        """Close every live session that is not running, and forget them all."""
        with self._lock:
            live, self._live = list(self._live.values()), OrderedDict()
        for s in live:
            if s.lock.acquire(blocking=False):
                try:
                    s.drop()
                finally:
                    s.lock.release()


async def acquire(lock: threading.Lock) -> None:
    """Take `lock` without blocking the event loop (polls; safe to cancel)."""
    delay = 0.001
    while not lock.acquire(blocking=False):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)
