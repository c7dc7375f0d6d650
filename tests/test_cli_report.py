"""`clambot report`: a canary's figures from an audit log built with known numbers."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import Approval, AuditLog, Policy, Sandbox, binding
from clambot_tools.cli import main
from clambot_tools.cli._report import read_audit

DAY1 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY2 = DAY1 + 86_400


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _cli(argv: list[str], tty: bool = False) -> tuple[int, str, str]:
    out, err = (_Tty() if tty else io.StringIO()), io.StringIO()
    code = main(argv, stdin=io.StringIO(), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _line(rec: dict[str, Any]) -> bytes:
    return (json.dumps(rec, sort_keys=True) + "\n").encode()


def _known_log(path: Path) -> None:
    """200 runs of 1..200 ms (memory 1..200 kB), 10 of them failed: 5 timeout,
    3 cancelled, 2 expired (outcomes this code may not know yet); 100 runs a day.
    Calls: read 50 ok, 2 failed; refund approved 3, approved_for_session 1,
    approval_denied 2, approval_failed 1 (all denied); 1 call to an unknown binding.
    Then 7 damaged lines and 1 record of another event."""
    errors = ["timeout"] * 5 + ["cancelled"] * 3 + ["expired"] * 2
    lines = []
    for i in range(200):
        t = (DAY1 if i < 100 else DAY2) + i
        outcome = errors[i // 20] if i % 20 == 7 else "ok"
        lines.append(
            _line(
                {
                    "event": "run",
                    "time": t,
                    "outcome": outcome,
                    "duration_ms": float(i + 1),
                    "memory_bytes": (i + 1) * 1000,
                    "binding_calls": 0,
                    "code_sha256": "c" * 64,
                }
            )
        )

    def call(binding: str | None, decision: str, outcome: str, t: float = DAY2) -> None:
        rec = {"event": "call", "time": t, "binding": binding, "decision": decision}
        lines.append(_line({**rec, "outcome": outcome, "duration_ms": 1.0, "attempts": 1}))

    for _ in range(50):
        call("read", "allowed", "ok")
    for _ in range(2):
        call("read", "allowed", "failed")
    for d in ["approved"] * 3 + ["approved_for_session"]:
        call("refund", d, "ok")
    for d in ["approval_denied"] * 2 + ["approval_failed"]:
        call("refund", d, "denied")
    call(None, "denied", "denied")
    lines.append(_line({"event": "session_opened", "time": DAY2}))
    lines += [
        b"not json at all\n",
        b"[1, 2, 3]\n",
        _line({"event": "run", "time": DAY2, "duration_ms": 5}),  # no outcome
        _line({"event": "run", "outcome": "ok", "duration_ms": 5}),  # no time
        _line({"event": "run", "time": DAY2, "outcome": "ok", "duration_ms": -1}),
        b'{"event": "run", "time": 1767312000, "outcome": "\xff\xfe"}\n',  # not UTF-8
        b'{"event": "run", "time": 17673',  # cut off by a crash, no newline
    ]
    path.write_bytes(b"".join(lines))


@pytest.fixture
def log(tmp_path: Path) -> Path:
    p = tmp_path / "audit.jsonl"
    _known_log(p)
    return p


def test_figures_match_the_known_log(log: Path) -> None:
    code, out, _ = _cli(["report", str(log), "--json"])
    assert code == 0
    r = json.loads(out)
    assert (r["runs"], r["ok"]) == (200, 190)
    assert r["error_rate"] == pytest.approx(0.05) and r["success_rate"] == pytest.approx(0.95)
    assert r["errors_by_kind"] == {"timeout": 5, "cancelled": 3, "expired": 2}
    # nearest rank over 1..200 ms
    assert (r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"]) == (100, 190, 198, 200)
    assert r["memory_p95_bytes"] == 190_000
    hist = {h["up_to_ms"]: h["runs"] for h in r["latency_histogram"]}
    assert (hist[1], hist[2], hist[5], hist[100], hist[200], hist[500]) == (1, 1, 3, 50, 100, 0)
    assert sum(hist.values()) == 200
    assert r["calls"] == 60
    assert r["bindings"]["read"] == {
        "calls": 52,
        "denied": 0,
        "failed": 2,
        "by_decision": {"allowed": 52},
        "by_outcome": {"failed": 2, "ok": 50},
    }
    assert r["bindings"]["refund"]["denied"] == 3
    assert r["bindings"]["(unknown)"]["denied"] == 1
    assert r["approvals"] == {
        "granted": 4,
        "refused": 3,
        "by_decision": {
            "approval_denied": 2,
            "approval_failed": 1,
            "approved": 3,
            "approved_for_session": 1,
        },
    }
    assert r["other_events"] == {"session_opened": 1}
    assert r["records"] == 261
    assert r["damaged"]["count"] == 7
    assert r["damaged"]["first_lines"] == list(range(262, 269))
    first_day = sum(len(x) + 1 for x in log.read_bytes().split(b"\n")[:100])
    assert r["per_day"] == [
        {"day": "2026-01-01", "records": 100, "bytes": first_day, "runs": 100, "calls": 0},
        {
            "day": "2026-01-02",
            "records": 161,
            "bytes": sum(len(x) + 1 for x in log.read_bytes().split(b"\n")[100:261]),
            "runs": 100,
            "calls": 60,
        },
    ]


def test_since_keeps_only_later_records(log: Path) -> None:
    code, out, _ = _cli(["report", str(log), "--json", "--since", "2026-01-02"])
    r = json.loads(out)
    assert code == 0 and r["runs"] == 100 and r["calls"] == 60
    assert r["errors_by_kind"] == {"cancelled": 3, "expired": 2}
    assert r["p50_ms"] == 150 and r["since"] == "2026-01-02T00:00:00+00:00"
    code, _, err = _cli(["report", str(log), "--since", "last tuesday"])
    assert code == 2 and "--since" in err


@pytest.mark.parametrize(
    ("rollout", "status", "says"),
    [
        ("", 1, "error rate 5.00% is above max_error_rate 2.00%"),
        ("max_error_rate = 0.1\nmax_p95_ms = 150\n", 1, "p95 190.0 ms is above max_p95_ms"),
        ("max_error_rate = 0.1\n", 0, "passed"),
        ("min_runs = 500\n", 0, "not judged"),
    ],
)
def test_check_exits_non_zero_when_a_threshold_is_crossed(
    log: Path, rollout: str, status: int, says: str
) -> None:
    cfg = log.parent / "sandbox.toml"
    cfg.write_text(f"[rollout]\n{rollout}")
    code, out, _ = _cli(["report", str(log), "--config", str(cfg), "--check"], tty=True)
    assert code == status and says in out
    code, out, _ = _cli(["report", str(log), "--config", str(cfg), "--check", "--json"])
    check = json.loads(out)["check"]
    assert code == status and check["passed"] == (status == 0)


def test_readable_report_has_a_table_and_a_histogram(log: Path) -> None:
    code, out, _ = _cli(["report", str(log)], tty=True)
    assert code == 0
    assert re.search(r"runs\s+success\s+errors\s+p50\s+p95\s+p99", out)
    assert re.search(r"200\s+95\.0%\s+5\.0%\s+100\.0 ms\s+190\.0 ms\s+198\.0 ms", out)
    assert re.search(r"<= 200\.0 ms\s+100\s+#{40}\n", out)  # the widest bar
    assert re.search(r"<= 100\.0 ms\s+50\s+#{20}\n", out)
    assert re.search(r"refund\s+7\s+3\s+0", out)
    assert "damaged lines: 7 (line 262, 263" in out
    assert "approvals: 4 granted, 3 not granted" in out


def test_names_from_the_log_are_shown_inert(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    name = "x\x1b]0;pwned\x07\x1b[2J\ud800"  # JSON may spell a lone surrogate
    log.write_bytes(
        _line({"event": "call", "time": DAY1, "binding": name, "decision": "d", "outcome": "o"})
    )
    code, out, _ = _cli(["report", str(log)], tty=True)
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "x\\x1b]0;pwned" in out
    out.encode("utf-8")
    code, out, _ = _cli(["report", str(log), "--json"])
    assert code == 0 and "\x1b" not in out
    assert list(json.loads(out.encode("utf-8"))["bindings"]) == ["x\x1b]0;pwned\x07\x1b[2J\ufffd"]


def test_an_over_long_line_is_damaged_and_skipped_piecewise(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    ok = _line({"event": "run", "time": DAY1, "outcome": "ok", "duration_ms": 3})
    log.write_bytes(ok + b'{"event": "run", "pad": "' + b"x" * 10_000 + b'"}\n' + ok)
    rep = read_audit(log, max_line=1024)
    assert (rep.runs, rep.damaged, rep.damaged_lines) == (2, 1, [2])
    assert rep.damaged_reasons == {"too long": 1}


def test_report_reads_what_the_sandbox_writes(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"

    @binding(effects=("write",))
    def refund(order: str) -> str:
        return "done"

    sb = Sandbox(
        bindings=[refund],
        audit=AuditLog(log),
        policy=Policy(approve=lambda req: Approval.DENY),
    )
    sb.run("1 + 1")
    sb.run("await tools.refund({order: 'A1'})")
    sb.run("throw new Error('x')")
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text('[audit]\npath = "audit.jsonl"\n')
    code, out, _ = _cli(["report", "--config", str(cfg), "--json"])  # the log from [audit]
    r = json.loads(out)
    assert code == 0 and r["runs"] == 3 and r["damaged"]["count"] == 0
    assert r["errors_by_kind"] == {"binding_denied": 1, "runtime": 1}
    assert r["bindings"]["refund"]["denied"] == 1
    assert r["approvals"]["refused"] == 1


def test_a_missing_log_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = _cli(["report", str(tmp_path / "nope.jsonl")])
    assert code == 2 and "cannot read" in err


def test_since_takes_durations_and_iso_times() -> None:
    from clambot_tools.cli._report import parse_since

    now = 2_000_000_000.0
    assert parse_since("30m", now) == now - 1800 and parse_since("7d", now) == now - 7 * 86_400
    assert parse_since("2026-01-02") == DAY2
    assert parse_since("2026-01-02T02:00+02:00") == DAY2 == parse_since("2026-01-02T00:00Z")
