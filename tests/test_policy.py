"""Approval of write bindings, and retries of transient failures."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from clambot_tools import (
    Approval,
    ApprovalRequest,
    ConfigError,
    Limits,
    Policy,
    Sandbox,
    TransientError,
    binding,
)


def _writer(log: list[str]) -> Any:
    @binding(effects=("write",), description="Save a note")
    def save(text: str) -> str:
        log.append(text)
        return "saved"

    return save


def test_approver_sees_binding_args_and_code_hash() -> None:
    seen: list[ApprovalRequest] = []
    saved: list[str] = []

    def approve(req: ApprovalRequest) -> Approval:
        seen.append(req)
        return Approval.ALLOW_ONCE

    code = "await tools.save({text: 'hello'})"
    sb = Sandbox(bindings=[_writer(saved)], policy=Policy(approve=approve))
    assert sb.run(code).value == "saved"
    (req,) = seen
    assert (req.binding, dict(req.args), req.effects) == ("save", {"text": "hello"}, ("write",))
    import hashlib

    assert req.code_sha256 == hashlib.sha256(code.encode()).hexdigest()
    assert saved == ["hello"]


def test_denied_approval_never_runs_the_binding() -> None:
    saved: list[str] = []
    sb = Sandbox(bindings=[_writer(saved)], policy=Policy(approve=lambda req: Approval.DENY))
    res = sb.run("await tools.save({text: 'x'})")
    assert res.error is not None and res.error.kind == "binding_denied"
    caught = sb.run("try { await tools.save({text: 'x'}) } catch (e) { e.message }")
    assert "not approved" in caught.value
    assert saved == []


def test_failing_or_odd_approver_denies() -> None:
    saved: list[str] = []

    def broken(req: ApprovalRequest) -> Approval:
        raise RuntimeError("approver crashed")

    for approve in (broken, lambda req: "yes please", lambda req: None):
        sb = Sandbox(bindings=[_writer(saved)], policy=Policy(approve=approve))  # type: ignore[arg-type]
        res = sb.run("await tools.save({text: 'x'})")
        assert res.error is not None and res.error.kind == "binding_denied"
        assert "crashed" not in res.error.message
    assert saved == []


def test_allow_for_session_asks_once() -> None:
    asked: list[str] = []
    saved: list[str] = []

    async def approve(req: ApprovalRequest) -> Approval:
        await asyncio.sleep(0)
        asked.append(req.binding)
        return Approval.ALLOW_SESSION

    sb = Sandbox(bindings=[_writer(saved)], policy=Policy(approve=approve))
    for i in range(3):
        assert sb.run(f"await tools.save({{text: 'n{i}'}})").value == "saved"
    assert asked == ["save"]
    assert saved == ["n0", "n1", "n2"]


def test_read_bindings_need_no_approval() -> None:
    def read() -> str:
        return "data"

    def never(req: ApprovalRequest) -> bool:
        raise AssertionError("must not be asked")

    sb = Sandbox(bindings=[read], policy=Policy(approve=never))
    assert sb.run("await tools.read()").value == "data"


def test_approval_time_counts_against_the_deadline() -> None:
    saved: list[str] = []

    returned = threading.Event()

    def slow_human(req: ApprovalRequest) -> bool:
        returned.wait(30)  # answers only once the run has returned
        return True

    sb = Sandbox(
        bindings=[_writer(saved)], policy=Policy(approve=slow_human), limits=Limits(timeout_s=0.3)
    )
    res = sb.run("await tools.save({text: 'late'})")
    returned.set()
    assert res.error is not None and res.error.kind == "timeout"


def test_transient_errors_are_retried_with_backoff() -> None:
    attempts: list[float] = []

    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise TransientError("rate limited")
        return "ok"

    sb = Sandbox(bindings=[flaky], policy=Policy(retry_attempts=3, retry_backoff_s=0.05))
    assert sb.run("await tools.flaky()").value == "ok"
    assert len(attempts) == 3
    assert attempts[2] - attempts[0] >= 0.05


def test_async_transient_errors_give_up_after_the_cap() -> None:
    calls = 0

    async def always_busy() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("busy")

    sb = Sandbox(bindings=[always_busy], policy=Policy(retry_attempts=2, retry_backoff_s=0))
    res = sb.run("await tools.always_busy()")
    assert res.error is not None and res.error.kind == "binding_failed"
    assert res.error.message == "tools.always_busy() failed: busy" and calls == 2


def test_ordinary_errors_are_not_retried() -> None:
    calls = 0

    def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad input")

    res = Sandbox(bindings=[broken]).run("await tools.broken()")
    assert res.error is not None and res.error.kind == "binding_failed" and calls == 1


def test_retries_stop_at_the_run_deadline() -> None:
    calls = 0

    def busy() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("busy")

    sb = Sandbox(
        bindings=[busy],
        limits=Limits(timeout_s=0.4),
        policy=Policy(retry_attempts=1000, retry_backoff_s=0.05, retry_max_backoff_s=0.1),
    )
    t0 = time.monotonic()
    res = sb.run("await tools.busy()")
    assert res.error is not None and res.error.kind in ("timeout", "binding_failed")
    assert time.monotonic() - t0 < 1.5
    assert calls < 20


@pytest.mark.parametrize(
    "bad",
    [
        dict(deny_effects=["teleport"]),
        dict(max_calls=-1),
        dict(retry_attempts=0),
        dict(allow="one"),
        dict(approve=42),
    ],
)
def test_invalid_policies_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Policy(**bad)


def test_writes_are_refused_without_an_approver_unless_opted_in() -> None:
    saved: list[str] = []
    sb = Sandbox(bindings=[_writer(saved)])
    res = sb.run("await tools.save({text: 'x'})")
    assert res.error is not None and res.error.kind == "binding_denied"
    assert "no approver is set" in res.error.message
    assert "auto_approve=('write',)" in res.error.message  # says how to allow it
    assert saved == []
    opted_in = Sandbox(bindings=[_writer(saved)], policy=Policy(auto_approve=("write",)))
    assert opted_in.run("await tools.save({text: 'y'})").value == "saved"
    assert saved == ["y"]


def test_the_request_names_the_exact_call() -> None:
    seen: list[ApprovalRequest] = []

    def approve(req: ApprovalRequest) -> Approval:
        seen.append(req)
        return Approval.ALLOW_ONCE

    sb = Sandbox(bindings=[_writer([])], policy=Policy(approve=approve))
    code = (
        "await tools.save({text: 'a'}); await tools.save({text: 'a'});"
        " await tools.save({text: 'b'})"
    )
    assert sb.run(code).ok
    a1, a2, b = seen
    assert a1.args_sha256 == a2.args_sha256 != b.args_sha256
    assert (a1.occurrence, a2.occurrence, b.occurrence) == (0, 1, 0)
    assert len({a1.request_id, a2.request_id, b.request_id}) == 3
    # the same call of the same script asks with the same id when the script runs again
    again: list[ApprovalRequest] = []

    def note_and_allow(request: ApprovalRequest) -> bool:
        again.append(request)
        return True

    sb2 = Sandbox(bindings=[_writer([])], policy=Policy(approve=note_and_allow))
    assert sb2.run(code).ok
    assert [r.request_id for r in again] == [r.request_id for r in seen]
