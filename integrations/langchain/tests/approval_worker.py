"""Another worker: answers the approval questions of threads whose checkpoints are in a
SQLite file, in a process that has never seen them.

    python approval_worker.py '[job, ...]'

Each job: ``db``, ``thread``, ``pattern`` ("agent" or "toolnode"), ``sessions``,
``log`` and ``data`` (the files of approval_helpers' tools), ``deny`` (orders to
refuse), ``allow`` (the answer to the others), ``how`` ("map" or "bare"), ``rounds``
(how many times to resume), and ``turn`` (scripts of a new user turn to run first, or
null). Prints one JSON line: for each job, the questions it answered, its tool results
and the questions still pending.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from approval_helpers import (
    answer_all,
    build,
    cfg,
    human,
    make_js,
    shown,
    start,
    tool_results,
)
from langgraph.checkpoint.sqlite import SqliteSaver
from lc_helpers import js_calls


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job (see the module docstring)."""
    data = Path(job["data"]) if job.get("data") else None
    js = make_js(Path(job["log"]), data, sessions=job.get("sessions", False))
    turn = [tuple(c) for c in job.get("turn") or []]
    model = [js_calls(*turn)] if turn and job["pattern"] == "agent" else []
    with sqlite3.connect(job["db"], check_same_thread=False) as conn:
        graph = build(job["pattern"], js, SqliteSaver(conn), *model)
        out = start(job["pattern"], graph, job["thread"], turn) if turn else None
        asked, out = answer_all(
            graph,
            job["thread"],
            human(job.get("deny", ()), job.get("allow", True)),
            job.get("how", "map"),
            out,
            rounds=job.get("rounds", 8),
            must_end=False,
        )
        state = graph.get_state(cfg(job["thread"]))
    return {
        "asked": asked,
        "results": tool_results(state.values),
        "pending": [shown(i.value) for i in state.interrupts],
    }


def main() -> None:
    print(json.dumps([run(job) for job in json.loads(sys.argv[1])]))


if __name__ == "__main__":
    main()
