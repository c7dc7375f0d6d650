"""stdlib.sql: a real SQLite file, opened read-only, queried through a real Sandbox."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import ConfigError, Limits, RunResult, Sandbox
from clambot_tools.stdlib import sql


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
    msg = failure(small.run("await tools.sql_query({sql: 'SELECT hex(zeroblob(1000))'})"), db)
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
