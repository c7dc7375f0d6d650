"""stdlib.sql: a real SQLite file, opened read-only, queried through a real Sandbox."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import CallContext, ConfigError, Limits, RunResult, Sandbox
from clambot_tools._context import enter_call, leave_call
from clambot_tools.stdlib import ToolError, sql


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "data.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, age INTEGER);"
        "CREATE TABLE blobs (data BLOB, big INTEGER);"
        "CREATE VIEW adults AS SELECT name FROM people WHERE age >= 18;"
        "INSERT INTO blobs VALUES (x'00ff10', 9007199254740993);"
    )
    conn.executemany(
        "INSERT INTO people (name, age) VALUES (?, ?)", [(f"person{i}", i) for i in range(50)]
    )
    conn.commit()
    conn.close()
    return path


def sandbox(db: Path, **kwargs: Any) -> Sandbox:
    return Sandbox(bindings=sql.bindings(db, **kwargs), limits=Limits(timeout_s=5))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def failure(res: RunResult, db: Path, *, script_names_paths: bool = False) -> str:
    """The error message of a failed call; it never shows the database's path (where
    the script's own arguments name a path, the call's text echoes them: only the
    binding's part after "failed: " is checked then)."""
    assert res.error is not None, res
    assert res.error.kind == "binding_failed", res.error
    message = res.error.message
    said = message.split(" failed: ", 1)[1] if script_names_paths else message
    assert str(db) not in said and str(db.parent) not in said
    return message


def test_select_with_params(db: Path) -> None:
    sb = sandbox(db)
    res = sb.run(
        "await tools.sql_query({sql: 'SELECT id, name FROM people WHERE age < ? "
        "ORDER BY id', params: [2]})"
    )
    assert res.value == {
        "columns": ["id", "name"],
        "rows": [[1, "person0"], [2, "person1"]],
        "truncated": False,
    }
    res = sb.run(
        "await tools.sql_query({sql: 'SELECT count(*) AS n FROM adults WHERE name "
        "LIKE :p', params: {p: 'person4%'}})"
    )
    assert res.value["rows"] == [[10]]
    # BLOBs as base64, integers past 2^53 as strings (JS numbers would round them)
    res = sb.run("await tools.sql_query({sql: 'SELECT data, big FROM blobs'})")
    assert res.value["rows"] == [["AP8Q", "9007199254740993"]]


def test_tables_lists_tables_views_and_columns(db: Path) -> None:
    res = sandbox(db).run("await tools.sql_tables({})")
    tables = {t["name"]: t for t in res.value["tables"]}
    assert set(tables) == {"people", "blobs", "adults"} and res.value["truncated"] is False
    assert tables["adults"]["type"] == "view"
    assert tables["people"]["columns"] == [
        {"name": "id", "type": "INTEGER", "nullable": True, "primary_key": True},
        {"name": "name", "type": "TEXT", "nullable": False, "primary_key": False},
        {"name": "age", "type": "INTEGER", "nullable": True, "primary_key": False},
    ]


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("INSERT INTO people (name) VALUES ('mallory')", "read-only"),
        ("UPDATE people SET name = 'x'", "read-only"),
        ("DELETE FROM people", "read-only"),
        ("DROP TABLE people", "read-only"),
        ("CREATE TABLE t (x)", "read-only"),
        ("CREATE TEMP TABLE t (x)", "read-only"),
        ("ALTER TABLE people ADD COLUMN y", "read-only"),
        ("ATTACH DATABASE '{other}' AS other", "ATTACH"),
        ("VACUUM INTO '{other}'", "VACUUM"),
        ("VACUUM", "VACUUM"),
        ("PRAGMA query_only = OFF", "PRAGMA query_only is not allowed"),
        ("PRAGMA journal_mode = WAL", "PRAGMA journal_mode is not allowed"),
        ("PRAGMA database_list", "PRAGMA database_list is not allowed"),
        ("SELECT 1; DELETE FROM people", "one SQL statement per call"),
        ("SELEC 1", "syntax error"),
    ],
)
def test_changes_and_escapes_fail_and_leave_the_file_unchanged(
    db: Path, statement: str, expected: str
) -> None:
    other = db.parent / "other.sqlite"
    before = digest(db)
    code = f"await tools.sql_query({{sql: {statement.format(other=other)!r}}})"
    msg = failure(sandbox(db).run(code), db, script_names_paths=True)
    assert expected in msg
    assert digest(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["data.sqlite"]


def test_failures_are_catchable(db: Path) -> None:
    res = sandbox(db).run(
        "try { await tools.sql_query({sql: 'DELETE FROM people'}) } catch (e) { e.message }"
    )
    assert "read-only" in res.value


def test_the_connection_itself_is_read_only(db: Path) -> None:
    """Without the authorizer, SQLite still refuses every change: read-only is enforced
    by the connection (mode=ro, query_only), not by inspecting the SQL."""
    database = sql.bindings(db)[0].func.__self__  # type: ignore[attr-defined]
    with database._connect() as (conn, _guard):
        conn.set_authorizer(None)
        for statement in (
            "INSERT INTO people (name) VALUES ('x')",
            "CREATE TEMP TABLE t (x)",
            "PRAGMA user_version = 7",
        ):
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                conn.execute(statement)
        conn.execute("PRAGMA query_only = OFF")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM people")


def test_row_and_size_caps(db: Path) -> None:
    sb = sandbox(db, max_rows=10)
    res = sb.run("await tools.sql_query({sql: 'SELECT id FROM people ORDER BY id'})")
    assert res.value["rows"] == [[i] for i in range(1, 11)] and res.value["truncated"] is True
    res = sb.run("await tools.sql_query({sql: 'SELECT id FROM people LIMIT 10'})")
    assert len(res.value["rows"]) == 10 and res.value["truncated"] is False

    small = sandbox(db, max_result_bytes=400)
    res = small.run("await tools.sql_query({sql: 'SELECT name FROM people'})")
    assert res.value["truncated"] is True and 0 < len(res.value["rows"]) < 50
    assert len(str(res.value)) < 600
    msg = failure(small.run("await tools.sql_query({sql: 'SELECT hex(zeroblob(300))'})"), db)
    assert "first row alone is larger" in msg


def test_runaway_recursive_query_is_stopped(db: Path) -> None:
    sb = sandbox(db, timeout_s=0.3)
    t0 = time.monotonic()
    res = sb.run(
        "await tools.sql_query({sql: 'WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL "
        "SELECT x + 1 FROM r) SELECT max(x) FROM r'})"
    )
    assert "ran longer than 0.3 s and was stopped" in failure(res, db)
    assert time.monotonic() - t0 < 2
    # the next call gets its own connection and deadline
    assert sb.run("await tools.sql_query({sql: 'SELECT 1'})").value["rows"] == [[1]]


def test_effects_names_and_config_errors(db: Path, tmp_path: Path) -> None:
    assert [(b.name, b.effects) for b in sql.bindings(db, prefix="db.")] == [
        ("db.query", ("read",)),
        ("db.tables", ("read",)),
    ]
    with pytest.raises(ConfigError, match="not an existing database file"):
        sql.bindings(tmp_path / "missing.sqlite")
    with pytest.raises(ConfigError, match="max_rows"):
        sql.bindings(db, max_rows=0)


# -- the run's deadline and end, host memory, functions that reach outside SQL

#: a query that never ends on its own, and reads a table (so it holds the file's
#: shared lock while it runs: that is how the tests see it running)
RUNAWAY = (
    "WITH RECURSIVE r(x) AS (SELECT (SELECT count(*) FROM people) UNION ALL "
    "SELECT x + 1 FROM r) SELECT max(x) FROM r"
)


def reading(db: Path) -> bool:
    """Whether a query is running on `db` now: its shared lock keeps anyone from
    taking an exclusive one."""
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN EXCLUSIVE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()


def seconds_until(condition: Callable[[], bool], limit: float) -> float | None:
    """Seconds until `condition()` holds (checked every 5 ms), or None after `limit`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if condition():
            return time.monotonic() - t0
        time.sleep(0.005)
    return None


def call_query(db: Path, ctx: CallContext, sql_text: str, timeout_s: float) -> str:
    """Call the query binding as the run driver does, serving the call `ctx`; the
    message of the ToolError it ends with."""
    query = sql.bindings(db, timeout_s=timeout_s)[0].func
    token = enter_call(ctx)
    try:
        query(sql=sql_text)
    except ToolError as exc:
        return str(exc)
    finally:
        leave_call(token)
    raise AssertionError("the runaway query returned")


def test_runaway_queries_stop_when_their_run_ends(db: Path) -> None:
    """Issue 10.2: a run's queries must not outlive it (they used to run on, keeping
    the cores busy, until the binding's own timeout)."""
    sb = Sandbox(bindings=sql.bindings(db, timeout_s=120), limits=Limits(timeout_s=3))
    done: list[RunResult] = []
    code = f"await Promise.all([0, 1].map(() => tools.sql_query({{sql: {RUNAWAY!r}}})))"
    runner = threading.Thread(target=lambda: done.append(sb.run(code)))
    runner.start()
    assert seconds_until(lambda: reading(db), 60) is not None  # the queries did start
    runner.join(60)
    # the run times out, or sees the query stopped at the same deadline first
    assert done and done[0].error is not None
    assert done[0].error.kind in ("timeout", "binding_failed")
    stopped = seconds_until(lambda: not reading(db), 60)
    assert stopped is not None and stopped < 5  # their own timeout is 120 s


def test_a_query_stops_at_the_deadline_of_the_call_it_serves(db: Path) -> None:
    """Issue 11.7: a call run inline on the run's own thread keeps the run's deadline
    (a recursive CTE used to hold a 1 s run for the binding's whole timeout)."""
    t0 = time.monotonic()
    msg = call_query(db, CallContext("sql_query", t0 + 0.5), RUNAWAY, timeout_s=20)
    assert "time limit was reached" in msg
    assert time.monotonic() - t0 < 10  # not the binding's own 20 s


def test_ending_the_run_interrupts_a_running_query(db: Path) -> None:
    ctx = CallContext("sql_query", time.monotonic() + 120)
    ended: list[tuple[str, float]] = []
    worker = threading.Thread(
        target=lambda: ended.append((call_query(db, ctx, RUNAWAY, 20), time.monotonic()))
    )
    worker.start()
    assert seconds_until(lambda: reading(db), 60) is not None
    cancelled_at = time.monotonic()
    ctx.cancel()  # what the run driver does when the run ends
    worker.join(60)
    ((msg, at),) = ended
    assert "run ended" in msg and at - cancelled_at < 5  # not the binding's own 20 s


def test_a_query_of_a_run_that_is_over_does_not_start(db: Path) -> None:
    ctx = CallContext("sql_query", time.monotonic() + 120)
    ctx.cancel()
    assert "run ended" in call_query(db, ctx, RUNAWAY, 20)


def test_fts3_tokenizer_cannot_leak_a_host_pointer(db: Path) -> None:
    """Issue 11.11: fts3_tokenizer('simple') returned the address of a C structure."""
    for statement in ("SELECT fts3_tokenizer('simple')", "SELECT hex(FTS3_TOKENIZER('porter'))"):
        msg = failure(sandbox(db).run(f"await tools.sql_query({{sql: {statement!r}}})"), db)
        assert "fts3_tokenizer() is not allowed" in msg


@pytest.fixture()
def big_db(tmp_path: Path) -> Path:
    """A database a script could use to make the host allocate: a 24 MiB blob, a
    700 KiB one and 600 KiB of text."""
    path = tmp_path / "big.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE big (data BLOB);"
        "INSERT INTO big VALUES (randomblob(24 * 1024 * 1024));"
        "CREATE TABLE mid (data BLOB, body TEXT);"
        "INSERT INTO mid VALUES (randomblob(700 * 1024), printf('%.*c', 600 * 1024, 'x'));"
    )
    conn.commit()
    conn.close()
    return path


def test_values_over_the_cap_fail_before_they_are_built(big_db: Path) -> None:
    sb = sandbox(big_db)  # max_result_bytes: 1 MiB
    q = "await tools.sql_query({sql: %r})"
    assert sb.run(q % "SELECT length(data) FROM big").value["rows"] == [[24 * 1024 * 1024]]
    for statement in ("SELECT data FROM big", "SELECT randomblob(2 * 1024 * 1024)"):
        msg = failure(sb.run(q % statement), big_db)
        assert "a value is larger than" in msg and "length(col) still works" in msg
    # each value fits, the row would not: the cap per value shrinks with the width
    msg = failure(sb.run(q % ("SELECT " + ", ".join(["body"] * 20) + " FROM mid")), big_db)
    assert "in a statement with 20 columns; select fewer columns" in msg
    # values under the cap still come back whole
    (blob,) = sb.run(q % "SELECT data FROM mid").value["rows"][0]
    assert len(base64.b64decode(blob)) == 700 * 1024
    assert sb.run(q % "SELECT body, 7 FROM mid").value["rows"] == [["x" * 600 * 1024, 7]]


MEMORY_PROBE = """
import json, resource, sys
from clambot_tools import Limits, Sandbox
from clambot_tools.stdlib import sql

sb = Sandbox(bindings=sql.bindings(sys.argv[1]), limits=Limits(timeout_s=120))
sb.run("await tools.sql_query({sql: 'SELECT 1'})")
queries = [
    "SELECT data FROM big",
    "SELECT data, data FROM mid",
    "SELECT " + ", ".join(["data"] * 40) + " FROM mid",
    "SELECT " + ", ".join(["randomblob(1000000)"] * 40),
]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = sb.run(
    "const qs = " + json.dumps(queries) + ";"
    "const all = await Promise.allSettled(Array.from({length: 32}, (_, i) =>"
    "  tools.sql_query({sql: qs[i % qs.length]})));"
    "all.map((r) => r.status)"
)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_mib": (after - before) / 1024, "statuses": res.value}))
"""


def test_large_values_cost_bounded_host_memory(big_db: Path) -> None:
    """Issue 11.8: one query of a large blob under a 1 MiB result cap cost ~150 MB of
    host memory, 32 in parallel 2.4 GB. Measured in a fresh process (peak RSS)."""
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(big_db)],
        cwd=big_db.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["statuses"] == ["rejected"] * 32
    assert report["grew_mib"] < 200, report  # 32 queries at once
