"""The audit log: every run and call, with hashes and decisions, never the secrets."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import Approval, AuditLog, Policy, Sandbox, binding

SECRET = "sk-live-0123456789abcdef"


def _bindings() -> list[Any]:
    def lookup(user: str, token: str) -> dict[str, str]:
        return {"user": user, "note": f"token was {token}"}

    @binding(effects=("write",))
    def delete(user: str) -> str:
        return "deleted"

    def explode() -> None:
        raise RuntimeError(f"failed with {SECRET}")

    return [lookup, delete, explode]


CODE = f"""
const a = await tools.lookup({{user: 'ann', token: '{SECRET}'}});
try {{ await tools.delete({{user: 'ann'}}) }} catch (e) {{}}
try {{ await tools.explode() }} catch (e) {{}}
await tools.nope?.();
a.user
"""


def test_json_lines_file_records_runs_and_calls(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sb = Sandbox(bindings=_bindings(), audit=path, policy=Policy(approve=lambda req: Approval.DENY))
    res = sb.run(CODE)
    assert res.value == "ann"
    text = path.read_text()
    assert SECRET not in text and "ann" not in text  # args only as digests
    records = [json.loads(line) for line in text.splitlines()]
    calls = [r for r in records if r["event"] == "call"]
    runs = [r for r in records if r["event"] == "run"]
    assert [(c["binding"], c["decision"], c["outcome"]) for c in calls] == [
        ("lookup", "allowed", "ok"),
        ("delete", "approval_denied", "denied"),
        ("explode", "allowed", "failed"),
    ]
    code_hash = hashlib.sha256(CODE.encode()).hexdigest()
    assert {r["code_sha256"] for r in records} == {code_hash}
    assert runs[0]["outcome"] == "ok" and runs[0]["binding_calls"] == 3
    assert all(r["duration_ms"] >= 0 and r["time"] > 0 for r in records)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_arguments_are_logged_only_when_asked() -> None:
    records: list[dict[str, Any]] = []
    sb = Sandbox(bindings=_bindings(), audit=AuditLog(records.append, include_args=True))
    sb.run("await tools.lookup({user: 'bob', token: 't'})")
    (call,) = [r for r in records if r["event"] == "call"]
    assert json.loads(call["args"]) == {"user": "bob", "token": "t"}
    assert call["args_sha256"] == hashlib.sha256(call["args"].encode()).hexdigest()


def test_logging_handler_receives_records(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.audit")
    with caplog.at_level(logging.INFO, logger="test.audit"):
        Sandbox(audit=logger).run("1 + 1")
    (rec,) = caplog.records
    assert rec.audit["event"] == "run" and rec.audit["outcome"] == "ok"  # type: ignore[attr-defined]


def test_failing_sink_does_not_break_the_run() -> None:
    def broken(record: dict[str, Any]) -> None:
        raise OSError("disk full")

    assert Sandbox(audit=broken).run("2 + 2").value == 4


def test_denied_and_limited_runs_are_audited() -> None:
    records: list[dict[str, Any]] = []
    sb = Sandbox(bindings=_bindings(), audit=records.append, policy=Policy(allow=[]))
    res = sb.run("await tools.lookup({user: 'x', token: 'y'})")
    assert res.error is not None and res.error.kind == "binding_denied"
    assert [(r["event"], r.get("decision"), r["outcome"]) for r in records] == [
        ("call", "denied", "denied"),
        ("run", None, "binding_denied"),
    ]
