"""A run owns what it starts (issues 10 and 11): once `run`/`arun` has returned, been
cancelled or interrupted, none of its calls starts, retries or is approved, and the
audit log says what really happened to each."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import (
    Approval,
    ApprovalRequest,
    Limits,
    Policy,
    Sandbox,
    TransientError,
    binding,
)


class Audit:
    """A Sandbox's audit log in memory, with an event set by each call's final record."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.call_recorded = threading.Event()

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if record["event"] == "call":
            self.call_recorded.set()

    def calls(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == "call"]


class Outbox:
    """An 'email' tool that records every mail it really sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.started = threading.Event()

    def binding(self) -> Any:
        async def email(to: str) -> str:
            self.sent.append(to)
            return "sent"

        return binding(email, effects=("network",))


def test_cancelling_arun_cancels_its_calls_and_nothing_runs_afterwards() -> None:
    outbox = Outbox()
    slow_started = asyncio.Event()
    slow_cancelled: list[bool] = []
    records: list[dict[str, Any]] = []

    async def slow() -> str:
        slow_started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            slow_cancelled.append(True)
            raise
        return "done"

    sb = Sandbox(
        bindings=[binding(slow), outbox.binding()],
        limits=Limits(timeout_s=60),
        audit=records.append,
    )
    code = "await tools.slow(); await tools.email({to: 'boss@example.com'})"

    async def main() -> None:
        task = asyncio.create_task(sb.arun(code))
        await asyncio.wait_for(slow_started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # cancellation has returned: the pending call was cancelled, nothing else runs
        assert slow_cancelled == [True]
        await asyncio.sleep(0.2)  # a window in which a stray email would show itself

    asyncio.run(main())
    assert outbox.sent == []
    calls = [r for r in records if r["event"] == "call"]
    assert [(c["binding"], c["outcome"]) for c in calls] == [("slow", "cancelled")]
    (run,) = [r for r in records if r["event"] == "run"]
    assert run["outcome"] == "cancelled"


def test_cancelling_arun_drops_queued_calls() -> None:
    outbox = Outbox()
    gate, busy_started = threading.Event(), threading.Event()

    def busy() -> str:
        busy_started.set()
        gate.wait(30)
        return "ok"

    sb = Sandbox(
        bindings=[binding(busy), outbox.binding()],
        limits=Limits(timeout_s=60, max_concurrent_calls=1),
    )
    code = "await Promise.all([tools.busy(), tools.email({to: 'a@example.com'})])"

    async def main() -> None:
        task = asyncio.create_task(sb.arun(code))
        # the busy call holds the run's only slot
        assert await asyncio.to_thread(busy_started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        await asyncio.sleep(0.2)  # a window in which the dropped email would show itself

    asyncio.run(main())
    assert outbox.sent == []  # it was queued behind the cap: dropped, never started


def test_ctrl_c_stops_a_cpu_bound_run_promptly(tmp_path: Path) -> None:
    script = """
import json, os, signal, sys, threading, time
from clambot_tools import Limits, Sandbox
spinning = threading.Event()
async def started():  # async: the run stays on this (the main) thread
    spinning.set()
sb = Sandbox(bindings=[started], limits=Limits(timeout_s=60))
sb.run("1 + 1")
sent = []
def interrupt():
    spinning.wait(30)
    sent.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=interrupt, daemon=True).start()
t0 = time.monotonic()
try:
    sb.run("await tools.started(); for (;;) {}")
    print(json.dumps({"raised": None}))
except KeyboardInterrupt:
    print(json.dumps({"raised": "KeyboardInterrupt", "after_s": time.monotonic() - sent[0]}))
print(json.dumps({"still_works": sb.run("2 + 2").value}))
"""
    env = dict(os.environ, CLAMBOT_CACHE_DIR=os.environ.get("CLAMBOT_CACHE_DIR", ""))
    if not env["CLAMBOT_CACHE_DIR"]:
        del env["CLAMBOT_CACHE_DIR"]
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert first["raised"] == "KeyboardInterrupt"
    # the run's limit is 60 s: it stopped because of the interrupt (typically in a few
    # ms; bench/concurrency.py measures it), well before that
    assert first["after_s"] < 5, first
    assert second == {"still_works": 4}


def test_ctrl_c_while_waiting_for_a_sync_tool_raises_and_cancels() -> None:
    # In a sync run with sync bindings the caller waits for a package thread; a
    # KeyboardInterrupt there (delivered here by hand) cancels the run and propagates.
    gate, waiting = threading.Event(), threading.Event()
    sent: list[str] = []

    def wait() -> str:
        waiting.set()
        gate.wait(30)
        return "ok"

    def send(to: str) -> str:
        sent.append(to)
        return "sent"

    sb = Sandbox(bindings=[wait, send], limits=Limits(timeout_s=60))
    main_thread = threading.get_ident()

    def interrupt() -> None:
        waiting.wait(30)  # the caller is inside run(), its run waiting for the tool
        signal.pthread_kill(main_thread, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        sb.run("await tools.wait(); await tools.send({to: 'x'})")
    gate.set()
    time.sleep(0.2)  # a window in which a stray send would show itself
    assert sent == []
    assert sb.run("1 + 1").value == 2


def test_a_late_approval_never_runs_the_write() -> None:
    refunds: list[str] = []
    audit = Audit()
    returned = threading.Event()

    @binding(effects=("write",))
    def refund(order_id: str) -> str:
        refunds.append(order_id)
        return "refunded"

    def slow_human(req: ApprovalRequest) -> Approval:
        returned.wait(30)  # answers once the run has returned (at its 0.3 s limit)
        return Approval.ALLOW_ONCE

    sb = Sandbox(
        bindings=[refund],
        policy=Policy(approve=slow_human),
        limits=Limits(timeout_s=0.3),
        audit=audit,
    )
    res = sb.run("await tools.refund({order_id: 'A1'})")
    returned.set()
    assert res.error is not None and res.error.kind == "timeout"
    # the approver's thread decides what to do with the answer, then records the call
    assert audit.call_recorded.wait(10)
    assert refunds == []
    (call,) = audit.calls()
    assert (call["decision"], call["outcome"]) == ("approved", "expired")


def test_a_late_async_approval_never_runs_the_write() -> None:
    refunds: list[str] = []

    @binding(effects=("write",))
    async def refund(order_id: str) -> str:
        refunds.append(order_id)
        return "refunded"

    returned, approver_done = asyncio.Event(), asyncio.Event()

    async def slow_human(req: ApprovalRequest) -> Approval:
        try:
            await returned.wait()  # answers once the run has returned, if it still can
            return Approval.ALLOW_ONCE
        finally:
            approver_done.set()

    sb = Sandbox(bindings=[refund], policy=Policy(approve=slow_human), limits=Limits(timeout_s=0.3))

    async def main() -> None:
        res = await sb.arun("await tools.refund({order_id: 'A1'})")
        returned.set()
        assert res.error is not None and res.error.kind == "timeout"
        await asyncio.wait_for(approver_done.wait(), 10)  # cancelled, or answered late
        await asyncio.sleep(0.2)  # a window in which a refund would show itself

    asyncio.run(main())
    assert refunds == []


def test_no_retry_starts_after_the_run_ended() -> None:
    attempts: list[float] = []

    def flaky() -> None:
        attempts.append(time.monotonic())
        raise TransientError("busy")

    audit = Audit()
    sb = Sandbox(
        bindings=[flaky],
        policy=Policy(retry_attempts=10, retry_backoff_s=0.4, retry_max_backoff_s=0.4),
        limits=Limits(timeout_s=0.5),
        audit=audit,
    )
    t0 = time.monotonic()
    res = sb.run("await tools.flaky()")
    ended = time.monotonic()
    assert res.error is not None and res.error.kind == "timeout"
    # the call's record is written when its retrying stops: no attempt can follow it
    assert audit.call_recorded.wait(10)
    assert attempts and all(t <= ended for t in attempts), [t - t0 for t in attempts]


def test_an_approver_that_raises_is_audited_as_such() -> None:
    records: list[dict[str, Any]] = []

    @binding(effects=("write",))
    def refund(order_id: str) -> str:
        return "refunded"

    def broken(req: ApprovalRequest) -> Approval:
        raise RuntimeError("the approvals service is down")

    sb = Sandbox(bindings=[refund], policy=Policy(approve=broken), audit=records.append)
    res = sb.run("await tools.refund({order_id: 'A1'})")
    assert res.error is not None and res.error.kind == "binding_denied"
    (call,) = [r for r in records if r["event"] == "call"]
    assert (call["decision"], call["outcome"]) == ("approval_failed", "denied")


def test_a_sync_call_still_running_at_the_end_is_recorded_when_it_finishes() -> None:
    audit = Audit()
    release = threading.Event()

    def stubborn() -> str:  # ignores cancellation: Python cannot stop it
        release.wait(30)
        return "done"

    sb = Sandbox(bindings=[stubborn], limits=Limits(timeout_s=0.3), audit=audit)
    res = sb.run("await tools.stubborn()")
    assert res.error is not None and res.error.kind == "timeout"
    running = [r for r in audit.records if r["event"] == "call_running"]
    assert [r["binding"] for r in running] == ["stubborn"]
    assert audit.calls() == []
    release.set()
    assert audit.call_recorded.wait(10)
    (call,) = audit.calls()
    assert (call["outcome"], call.get("after_run")) == ("ok", True)


def test_a_blocking_inline_call_cannot_hold_the_caller_past_the_deadline() -> None:
    calls = 0

    def lookup(n: int) -> int:
        nonlocal calls
        calls += 1
        if n == 99:
            time.sleep(4)  # fast until now, so it runs inline
        return n

    sb = Sandbox(bindings=[lookup], limits=Limits(timeout_s=1))
    assert sb.run("let s = 0; for (let i = 0; i < 20; i++) s += await tools.lookup({n: i}); s").ok
    t0 = time.monotonic()
    res = sb.run("await tools.lookup({n: 1}); await tools.lookup({n: 99})")
    elapsed = time.monotonic() - t0
    assert res.error is not None and res.error.kind == "timeout"
    assert elapsed < 3, f"the caller waited {elapsed:.1f} s under a 1 s limit"


def test_every_timeout_has_one_name() -> None:
    sb = Sandbox(limits=Limits(timeout_s=0.3))
    paths = [
        "for (;;) {}",  # QuickJS's interrupt
        "for (;;) { try { for (;;) {} } finally { continue } }",  # the epoch trap
        "await new Promise(r => setTimeout(r, 60000))",  # the driver's deadline
        "JSON.stringify({ toJSON() { for (;;) {} } })",
    ]
    for code in paths:
        err = sb.run(code).error
        assert err is not None and err.kind == "timeout", (code, err)
        assert err.name == "TimeoutError", (code, err)
        assert err.message == "the script ran longer than its 0.3 s time limit", (code, err)
