"""Approvals resumed on another worker: a second Python process that shares nothing
with this one but the SQLite checkpoint file (and the file the refund tool records
its calls in). What was asked and answered, and which writes ran, is read from the
checkpoint there: each question is shown once, each approved write runs once, an
answer never applies to a call that changed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from approval_helpers import (
    PATTERNS,
    SHAPES,
    agent_model,
    answer_all,
    build,
    cfg,
    human,
    make_js,
    refunds,
    start,
    tool_results,
)
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

HERE = Path(__file__).resolve().parent


def run_worker(*jobs: dict[str, Any]) -> list[dict[str, Any]]:
    """Run `jobs` (see approval_worker.py) in a new Python process."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "approval_worker.py"), json.dumps(list(jobs))],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def pairs(rows: list[list[Any]]) -> list[tuple[str, Any]]:
    return [(order, amount) for order, amount in rows]


SCENARIOS = [(pattern, shape) for pattern in PATTERNS for shape in SHAPES]
#: the orders the human refuses in each shape
DENY = {"parallel": ["P2"], "sequential": []}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Any]]:
    """Each scenario paused here on its first question(s); one worker process answers
    one round of each; this process answers the rest (the worker's answers and the
    writes it made are known here only through the checkpoint)."""
    tmp = tmp_path_factory.mktemp("workers")
    db = tmp / "checkpoints.sqlite"
    conn = sqlite3.connect(db, check_same_thread=False)
    try:
        saver = SqliteSaver(conn)
        first: dict[tuple[str, str], list[tuple[str, Any]]] = {}
        jobs: list[dict[str, Any]] = []
        for pattern, shape in SCENARIOS:
            log = tmp / f"{pattern}-{shape}.jsonl"
            calls = SHAPES[shape]
            graph = build(pattern, make_js(log), saver, *agent_model(pattern, calls))
            out = start(pattern, graph, f"{pattern}-{shape}", calls)
            first[(pattern, shape)] = [
                (i.value["args"]["order_id"], i.value["args"]["amount_eur"])
                for i in out["__interrupt__"]
            ]
            how = "map" if pattern == "agent" else "bare"
            jobs.append(
                {
                    "db": str(db),
                    "thread": f"{pattern}-{shape}",
                    "pattern": pattern,
                    "log": str(log),
                    "deny": DENY[shape],
                    "how": how,
                    "rounds": 1,
                }
            )
        worker = run_worker(*jobs)
        results = {}
        for (pattern, shape), job, w in zip(SCENARIOS, jobs, worker, strict=True):
            log = Path(job["log"])
            graph = build(pattern, make_js(log), saver)
            asked, _ = answer_all(graph, job["thread"], human(DENY[shape]), job["how"])
            state = graph.get_state(cfg(job["thread"])).values
            results[(pattern, shape)] = {
                "first": first[(pattern, shape)],
                "worker": pairs(w["asked"]),
                "here": asked,
                "refunds": refunds(log),
                "results": tool_results(state),
            }
        yield results
    finally:
        conn.close()


@pytest.mark.parametrize("pattern, shape", SCENARIOS)
def test_resumed_on_another_worker(
    resumed: dict[tuple[str, str], Any], pattern: str, shape: str
) -> None:
    r = resumed[(pattern, shape)]
    expected = {"parallel": [("P1", 30), ("P2", 30)], "sequential": [("A", 1), ("B", 30)]}
    # every question was shown, once: first here, then by the worker, then here
    assert sorted(r["worker"]) == sorted(r["first"])
    shown = r["worker"] + r["here"]
    assert sorted(shown) == sorted(expected[shape])
    # each approved write ran once, the denied one never
    approved = [q for q in expected[shape] if q[0] not in DENY[shape]]
    assert sorted(r["refunds"]) == sorted(approved)
    statuses = sorted(status for status, _ in r["results"].values())
    assert statuses == (["error", "success"] if shape == "parallel" else ["success"])


def test_an_answer_is_not_applied_to_a_changed_call_on_another_worker(tmp_path: Path) -> None:
    """Worker 1 (here) pauses on refund(A1, 5); the data changes; worker 2 resumes
    with True (the README's answer) and refund(A1, 5000) ran. Now worker 2 asks about
    5000, and only the human's answer to that question lets it run."""
    db, log, data = tmp_path / "cp.sqlite", tmp_path / "calls.jsonl", tmp_path / "orders.json"
    data.write_text(json.dumps({"A1": 5}))
    code = (
        "const o = await tools.lookup({order_id: 'A1'});\n"
        "await tools.refund({order_id: 'A1', amount_eur: o.amount_eur})"
    )
    conn = sqlite3.connect(db, check_same_thread=False)
    try:
        graph = build(
            "agent", make_js(log, data), SqliteSaver(conn), *agent_model("agent", [(code, "c1")])
        )
        out = start("agent", graph, "t", [(code, "c1")])
        assert [i.value["args"] for i in out["__interrupt__"]] == [
            {"order_id": "A1", "amount_eur": 5}
        ]
    finally:
        conn.close()

    data.write_text(json.dumps({"A1": 5000}))
    job = {"db": str(db), "thread": "t", "pattern": "agent", "log": str(log), "data": str(data)}
    (w,) = run_worker({**job, "how": "bare", "rounds": 1})
    assert pairs(w["asked"]) == [("A1", 5)]
    assert pairs(w["pending"]) == [("A1", 5000)]  # asked anew
    assert refunds(log) == []

    (w,) = run_worker({**job, "how": "bare", "deny": ["A1"]})
    assert pairs(w["asked"]) == [("A1", 5000)]
    assert w["pending"] == []
    assert w["results"]["c1"][0] == "error"
    assert refunds(log) == []


def test_allow_session_survives_a_checkpoint_reload_in_its_thread_only(tmp_path: Path) -> None:
    """With sessions=True, "allow for session" is kept in the thread's state: another
    worker continuing the thread does not ask again, while another thread is asked."""
    db, log = tmp_path / "cp.sqlite", tmp_path / "calls.jsonl"
    refund = "await tools.refund({order_id: 'A1', amount_eur: 5})"
    conn = sqlite3.connect(db, check_same_thread=False)
    try:
        graph = build("toolnode", make_js(log, sessions=True), SqliteSaver(conn))
        start("toolnode", graph, "user-A", [(refund, "c1")])
        graph.invoke(Command(resume="allow_session"), cfg("user-A"))
    finally:
        conn.close()
    assert refunds(log) == [("A1", 5)]

    job = {"db": str(db), "pattern": "toolnode", "sessions": True, "log": str(log)}
    again = "await tools.refund({order_id: 'A1', amount_eur: 6})"
    w_a, w_b = run_worker(
        {**job, "thread": "user-A", "turn": [[again, "c2"]], "rounds": 0},
        {**job, "thread": "user-B", "turn": [[again, "c3"]], "rounds": 0},
    )
    assert w_a["pending"] == [] and w_a["results"]["c2"][0] == "success"
    assert pairs(w_b["pending"]) == [("A1", 6)]
    assert refunds(log) == [("A1", 5), ("A1", 6)]
