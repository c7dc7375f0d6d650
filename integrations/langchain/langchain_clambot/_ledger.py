"""What one run of a LangGraph task knows of its earlier runs, kept in the checkpoint.

LangGraph resumes an interrupted task by running it again from its start. Of what an
interrupted task did, it keeps only its last interrupt and the answers given so far,
which ``interrupt()`` hands back by their order in the task (a ToolNode runs all the
tool calls of one AIMessage in one task, so their questions share that order). So that
an answer is only ever applied to the question it was given to, and a write that
already ran is not run again, the tool keeps records of its own for the step:

* ``asked``: the approval question put to the human at each place in that order;
* ``done``: each write a script made, with its result (or its error).

They are pending writes of the step's checkpoint, written with the checkpointer the
graph runs with (``put_writes``, under task ids of ours, which LangGraph's own reading
of pending writes skips): any worker that resumes the step reads them, and the next
step starts without them. `TaskRun` is one run of one task in this process: the
records read from the checkpoint, the answers taken in this run, the question it
raised; every tool call the task runs shares it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("langchain_clambot")

#: the channel name of our pending writes (LangGraph never reads it)
CHANNEL = "__clambot__"
_TASK_PREFIX = "clambot:"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def canonical_json(value: Any) -> str:
    """`value` as canonical JSON (sorted keys, no spaces; str() for the rest)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a write that completed ended: its JSON result, or its error's message."""

    ok: bool
    value: Any = None
    error: str = ""


class CheckpointLedger:
    """The records of one task in the pending writes of its step's checkpoint.

    Attributes:
        saver: the graph's checkpointer.
        config: the step's checkpoint (thread, graph namespace, checkpoint id).
        task_id: the LangGraph task the records belong to.
    """

    def __init__(self, saver: Any, config: dict[str, Any], task_id: str) -> None:
        self.saver = saver
        self.config = config
        self.task_id = task_id

    @classmethod
    def of(cls, conf: Mapping[str, Any]) -> CheckpointLedger | None:
        """The ledger of the task whose ``configurable`` is `conf`, or None outside a
        LangGraph task run with a checkpointer. Never raises."""
        try:
            from langgraph.checkpoint.base import BaseCheckpointSaver
        except ImportError:  # pragma: no cover - the langgraph extra is not installed
            return None
        saver = conf.get("__pregel_checkpointer")
        task_id, thread = conf.get("__pregel_task_id"), conf.get("thread_id")
        ns, cmap = conf.get("checkpoint_ns"), conf.get("checkpoint_map")
        if not isinstance(saver, BaseCheckpointSaver) or task_id is None or thread is None:
            return None
        if not isinstance(ns, str) or not isinstance(cmap, Mapping):
            return None
        # the task's namespace is the graph's plus "|node:task"; the graph's own
        # checkpoint (where the task's pending writes go) is the map's entry for it
        graph_ns = ns.rsplit("|", 1)[0] if "|" in ns else ""
        checkpoint_id = cmap.get(graph_ns)
        if checkpoint_id is None:
            return None
        config = {
            "configurable": {
                "thread_id": thread,
                "checkpoint_ns": graph_ns,
                "checkpoint_id": checkpoint_id,
            }
        }
        return cls(saver, config, str(task_id))

    def _records(self, tup: Any) -> list[dict[str, Any]]:
        writes = getattr(tup, "pending_writes", None) or []
        mine = [
            (str(tid), value)
            for tid, channel, value in writes
            if channel == CHANNEL
            and str(tid).startswith(_TASK_PREFIX)
            and isinstance(value, Mapping)
            and value.get("task") == self.task_id
        ]
        mine.sort(key=lambda w: w[0])  # our write ids begin with the time they were made
        return [dict(value) for _, value in mine]

    def load(self) -> list[dict[str, Any]]:
        """This task's records, oldest first. Raises what the checkpointer raises."""
        return self._records(self.saver.get_tuple(self.config))

    async def aload(self) -> list[dict[str, Any]]:
        """`load` with the checkpointer's async API."""
        return self._records(await self.saver.aget_tuple(self.config))

    def _write(self, record: dict[str, Any]) -> tuple[list[tuple[str, Any]], str]:
        write_id = f"{_TASK_PREFIX}{time.time_ns():020d}:{secrets.token_hex(4)}:{self.task_id}"
        return [(CHANNEL, {**record, "task": self.task_id})], write_id

    def put(self, record: dict[str, Any]) -> None:
        """Store `record`. Raises what the checkpointer raises."""
        writes, write_id = self._write(record)
        self.saver.put_writes(self.config, writes, write_id)

    async def aput(self, record: dict[str, Any]) -> None:
        """`put` with the checkpointer's async API."""
        writes, write_id = self._write(record)
        await self.saver.aput_writes(self.config, writes, write_id)


class TaskRun:
    """One run of one LangGraph task in this process, shared by its tool calls.

    Attributes:
        ledger: where the records are kept durably (None: only in this process, when
            the graph has no checkpointer, so the task cannot be resumed anyway).
        lock: held while approval questions are asked or answers taken, so that this
            run's ``interrupt()`` calls are made one at a time, in slot order (only
            approvers take it, on worker threads: never the event loop, which an
            async checkpointer's sync API waits for).
        asked: the question put to the human at each slot (our records, by slot).
        answers: the answers taken back from LangGraph in this run, by slot.
        open: the interrupt this run raised for a question (the task pauses with
            it), or the invalid answer that fails this run; None while neither.
        wrote: a write went ahead in this run (matters only without a ledger).
    """

    def __init__(self, ledger: CheckpointLedger | None) -> None:
        self.ledger = ledger
        self.lock = threading.Lock()
        self.asked: list[dict[str, Any]] = []
        self.answers: list[Any] = []
        self.open: BaseException | None = None
        self.wrote = False
        self._done: dict[str, Outcome] = {}
        self._loaded = ledger is None
        self._load_lock = threading.Lock()
        self._state = threading.Lock()  # short holds only: never across I/O
        self._running: set[object] = set()
        self._idle = threading.Condition()

    # -- the tool calls running in this run of the task

    def enter(self) -> object:
        """Count a tool call of this task as running; returns its token."""
        token = object()
        with self._idle:
            self._running.add(token)
        return token

    def leave(self, token: object) -> None:
        """The tool call `token` ended (or is about to stop the task)."""
        with self._idle:
            self._running.discard(token)
            self._idle.notify_all()

    def wait_others(self, token: object, timeout: float) -> bool:
        """Leave, then wait up to `timeout` s until no other tool call of this run is
        running. False on timeout.

        A ToolNode runs the calls of one AIMessage side by side in one task, and with
        ``ainvoke`` (``asyncio.gather``) the task ends at the first call that raises
        an interrupt while the others go on: the call that stops the task waits for
        them (they stop at their next tool call, seeing `open`), so that nothing a
        script started acts after the graph returned."""
        deadline = time.monotonic() + timeout
        with self._idle:
            self._running.discard(token)
            self._idle.notify_all()
            while self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    async def await_others(self, token: object, timeout: float) -> bool:
        """`wait_others` without blocking the event loop (polls)."""
        self.leave(token)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            with self._idle:
                if not self._running:
                    return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

    # -- reading the records

    def _apply(self, records: list[dict[str, Any]]) -> None:
        slots: dict[int, dict[str, Any]] = {}
        for rec in records:
            kind = rec.get("kind")
            if kind == "asked" and isinstance(rec.get("slot"), int):
                question = rec.get("question")
                if isinstance(question, Mapping):
                    slots.setdefault(rec["slot"], dict(question))  # the first one wins
            elif kind == "done" and isinstance(rec.get("key"), str):
                outcome = Outcome(
                    bool(rec.get("ok")), rec.get("value"), str(rec.get("error") or "")
                )
                self._done.setdefault(rec["key"], outcome)
        asked: list[dict[str, Any]] = []
        while len(asked) in slots:
            asked.append(slots[len(asked)])
        self.asked = asked
        self._loaded = True

    def load(self) -> None:
        """Read the records once (a failure reads as none, and is logged)."""
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            assert self.ledger is not None
            try:
                records = self.ledger.load()
            except Exception:
                logger.exception("could not read the approval records of the checkpoint")
                records = []
            with self._state:
                if not self._loaded:
                    self._apply(records)

    async def aload(self) -> None:
        """`load` with the checkpointer's async API."""
        if self._loaded:
            return
        assert self.ledger is not None
        try:
            records = await self.ledger.aload()
        except Exception:
            logger.exception("could not read the approval records of the checkpoint")
            records = []
        with self._state:
            if not self._loaded:
                self._apply(records)

    # -- questions

    def record_asked(self, slot: int, question: Mapping[str, Any]) -> None:
        """Keep (durably, when there is a ledger) that `question` was asked at `slot`.

        Raises what the checkpointer raises: a question must not be shown unless its
        record is kept."""
        if self.ledger is not None:
            self.ledger.put({"kind": "asked", "slot": slot, "question": dict(question)})
        self.asked.append(dict(question))

    # -- writes

    @staticmethod
    def write_key(scope: str, binding: str, args_json: str, occurrence: int) -> str:
        """The identity of a write: the tool call (or script), the binding, its
        arguments and how many identical calls the script made before it."""
        return _digest(f"{scope}\0{binding}\0{args_json}\0{occurrence}")

    def outcome(self, key: str) -> Outcome | None:
        """How the write `key` ended in an earlier run of this task, if it did."""
        with self._state:
            return self._done.get(key)

    def _done_record(self, key: str, outcome: Outcome) -> dict[str, Any] | None:
        with self._state:
            self.wrote = True
            if key in self._done:
                return None
            self._done[key] = outcome
        if self.ledger is None:
            return None
        return {
            "kind": "done",
            "key": key,
            "ok": outcome.ok,
            "value": outcome.value,
            "error": outcome.error,
        }

    def record_done(self, key: str, outcome: Outcome) -> None:
        """Keep how the write `key` ended. Never raises (a failure is logged: the
        write happened, and the script gets its result)."""
        record = self._done_record(key, outcome)
        if record is None:
            return
        try:
            assert self.ledger is not None
            self.ledger.put(record)
        except Exception:
            logger.exception("could not record a completed write in the checkpoint")

    async def arecord_done(self, key: str, outcome: Outcome) -> None:
        """`record_done` with the checkpointer's async API."""
        record = self._done_record(key, outcome)
        if record is None:
            return
        try:
            assert self.ledger is not None
            await self.ledger.aput(record)
        except Exception:
            logger.exception("could not record a completed write in the checkpoint")


# One TaskRun per run of a task. It is kept on a function of the run's LangGraph
# scratchpad (made anew for each run of a task, shared by its tool calls): it lives as
# long as the run, and a TaskRun that refers back to the run (through an exception's
# traceback) is a plain cycle the garbage collector frees, never a process-wide root.
_ATTR = "_clambot_task_run"
_RUNS_LOCK = threading.Lock()


def task_run_of(conf: Mapping[str, Any]) -> TaskRun | None:
    """The TaskRun of the LangGraph task whose ``configurable`` is `conf` (made on
    first use), or None outside a LangGraph task. Never raises."""
    scratchpad = conf.get("__pregel_scratchpad")
    anchor = getattr(scratchpad, "get_null_resume", None)
    if anchor is None or not hasattr(anchor, "__dict__"):
        return None
    with _RUNS_LOCK:
        run = getattr(anchor, _ATTR, None)
        if not isinstance(run, TaskRun):
            run = TaskRun(CheckpointLedger.of(conf))
            setattr(anchor, _ATTR, run)
        return run
