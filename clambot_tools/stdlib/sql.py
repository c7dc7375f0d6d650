"""Read-only SQL bindings on one SQLite file.

``bindings(db_path)`` grants ``sql_query`` and ``sql_tables``. Read-only is enforced by
SQLite itself, not by looking at the SQL: every call opens its own connection with the
``file:...?mode=ro`` URI and ``PRAGMA query_only=ON``, so any statement that would change
the database (INSERT, UPDATE, DELETE, CREATE, DROP, temp tables...) fails inside
SQLite. On top of that an authorizer refuses ATTACH and DETACH (which VACUUM and
VACUUM INTO also use, so no other file can be read or written), every PRAGMA
except a few that only describe the schema, and the functions that reach outside SQL
(``fts3_tokenizer``, which hands out a host pointer, and ``load_extension``).

Time: a query stops at its own deadline (``timeout_s``) or at the deadline of the
script's run, whichever comes first, and at once when the run ends (the run's
cancellation interrupts the connection), wherever the call runs (a pool thread or
inline on the run's own thread).

Memory: every value SQLite builds is capped before it is allocated
(``SQLITE_LIMIT_LENGTH``, set from the result cap and the statement's number of
columns, so one row can never hold much more than twice the result cap), and each
cell is measured before it is converted to JSON, so one call holds a few times
``max_result_bytes`` of host memory at most, whatever the database holds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
import urllib.parse
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from .. import Binding, CallContext, ConfigError, binding, current_call
from . import ToolError

_MIB = 1 << 20
#: JS numbers hold integers exactly only up to 2**53 - 1; larger ones become strings
_SAFE_INT = (1 << 53) - 1
#: SQLite VM steps between two checks of the deadline
_PROGRESS_STEPS = 2000
#: a row may hold this many times the result cap (its values together, as SQLite
#: holds them): a row larger than the cap cannot be returned anyway
_ROW_BUDGET_FACTOR = 2
#: no value is capped below this, however many columns a statement has
_MIN_VALUE_BYTES = 1024
#: functions that reach outside SQL: fts3_tokenizer('name') returns a host pointer
_DENIED_FUNCTIONS = frozenset({"fts3_tokenizer", "load_extension"})

#: pragmas that take a table or index name and only describe it
_PRAGMAS_WITH_NAME = frozenset(
    {
        "table_info",
        "table_xinfo",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
    }
)
#: pragmas allowed only as reads (no value given)
_PRAGMAS_READ_ONLY = frozenset(
    {
        "encoding",
        "user_version",
        "application_id",
        "schema_version",
        "page_size",
        "page_count",
        "freelist_count",
        "collation_list",
        "function_list",
        "module_list",
        "pragma_list",
    }
)
_ARGS = ConfigDict(extra="forbid", strict=True)


class QueryResult(TypedDict):
    """What the query binding returns: rows are lists in the order of `columns`."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


class Column(TypedDict):
    """A column of a table or view."""

    name: str
    type: str
    nullable: bool
    primary_key: bool


class Table(TypedDict):
    """A table or view and its columns."""

    name: str
    type: Literal["table", "view"]
    columns: list[Column]


class Tables(TypedDict):
    """What the tables binding returns."""

    tables: list[Table]
    truncated: bool


class _QueryArgs(BaseModel):
    model_config = _ARGS
    sql: str = Field(description="one SQL statement (SELECT, WITH ... SELECT, ...)")
    params: list[Any] | dict[str, Any] | None = Field(
        None, description="values for ? placeholders (a list) or :name placeholders (an object)"
    )


class _NoArgs(BaseModel):
    model_config = _ARGS


def bindings(
    db_path: str | os.PathLike[str],
    *,
    max_rows: int = 1000,
    max_result_bytes: int = _MIB,
    timeout_s: float = 5.0,
    prefix: str = "sql_",
) -> list[Binding]:
    """Read-only query bindings on the SQLite database file `db_path`.

    Grants ``<prefix>query`` and ``<prefix>tables`` (effect ``read``).

    Args:
        db_path: an existing SQLite database file. It is opened read-only on every
            call; nothing a script sends can change it.
        max_rows: most rows one query returns (then ``truncated`` is true).
        max_result_bytes: most bytes of JSON one query returns (rows past it are cut
            and ``truncated`` is true); keep it at or below the sandbox's
            ``Limits.max_result_bytes``.
        timeout_s: longest one call may run inside SQLite before it is stopped; a
            call also stops at the deadline of the script's run, and as soon as the
            run ends.
        prefix: prefix of the binding names.

    Returns the bindings to pass to ``Sandbox(bindings=...)``. The calls raise
    ToolError with a message for the script, which never shows the database's path.

    Raises ConfigError if `db_path` is not an existing file or a cap is not positive.
    """
    for cap_name, cap in (("max_rows", max_rows), ("max_result_bytes", max_result_bytes)):
        if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
            raise ConfigError(f"sql.bindings: {cap_name} must be an int > 0, got {cap!r}")
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, (int, float))
        or not 0 < timeout_s < float("inf")
    ):
        raise ConfigError(f"sql.bindings: timeout_s must be a number > 0, got {timeout_s!r}")
    if not isinstance(prefix, str):
        raise ConfigError("sql.bindings: prefix must be a str")
    path = os.fspath(db_path)
    if not isinstance(path, str) or not os.path.isfile(path):
        raise ConfigError(f"sql.bindings: {path!r} is not an existing database file")
    db = _Database(os.path.abspath(path), max_rows, max_result_bytes, float(timeout_s))
    return [
        binding(
            db.query,
            name=f"{prefix}query",
            args_schema=_QueryArgs,
            effects=("read",),
            description=(
                "Run one read-only SQL statement on the SQLite database and return "
                "{columns, rows, truncated}: rows are arrays in column order. Pass values "
                "as params ('?' with a list, ':name' with an object) rather than in the "
                "SQL text. The database cannot be changed: INSERT, UPDATE, DELETE, "
                "CREATE, DROP, ATTACH and most PRAGMAs fail. At most "
                f"{max_rows} rows and {max_result_bytes} bytes come back (truncated is "
                f"then true); a statement running over {timeout_s:g} s, or past the "
                "script's own time limit, is stopped. A single value larger than the byte "
                "limit cannot be read (length(col) still works), and the more columns a "
                "statement has, the smaller each value must be. BLOBs come back as "
                "base64 strings, integers beyond 2^53 as strings."
            ),
        ),
        binding(
            db.tables,
            name=f"{prefix}tables",
            args_schema=_NoArgs,
            effects=("read",),
            description=(
                "List the tables and views of the SQLite database with their columns: "
                "returns {tables: [{name, type, columns: [{name, type, nullable, "
                "primary_key}]}], truncated}. Call it first to learn the schema."
            ),
        ),
    ]


class _Guard:
    """Per-connection state: when the call must stop, and why the authorizer refused
    something."""

    def __init__(self, timeout_s: float, call: CallContext | None) -> None:
        self.own_deadline = time.monotonic() + timeout_s
        self.call = call
        self.deadline = self.own_deadline if call is None else min(self.own_deadline, call.deadline)
        self.refusal: str | None = None
        #: the most bytes SQLite may build for one value now, and the statement's
        #: number of columns it was computed for (for the error message)
        self.value_cap = 0
        self.width = 1

    def over(self) -> bool:
        """Whether the call must stop now: its deadline passed or its run ended."""
        return time.monotonic() > self.deadline or (self.call is not None and self.call.cancelled)

    def progress(self) -> int:
        """SQLite's progress handler: non-zero stops the statement."""
        return 1 if self.over() else 0

    def authorize(
        self,
        action: int,
        arg1: str | None,
        arg2: str | None,
        db_name: str | None,
        trigger: str | None,
    ) -> int:
        """SQLite's authorizer: refuse ATTACH/DETACH, pragmas that are not plain reads
        and the functions that reach outside SQL."""
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            self.refusal = (
                "ATTACH, DETACH and VACUUM are not allowed: only this one database can be read"
            )
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA:
            pragma = (arg1 or "").lower()
            if pragma in _PRAGMAS_WITH_NAME or (pragma in _PRAGMAS_READ_ONLY and arg2 is None):
                return sqlite3.SQLITE_OK
            self.refusal = (
                f"PRAGMA {pragma} is not allowed; allowed: "
                + ", ".join(sorted(_PRAGMAS_WITH_NAME | _PRAGMAS_READ_ONLY))
                + " (reading only)"
            )
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
            self.refusal = f"the SQL function {(arg2 or '').lower()}() is not allowed"
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


class _Database:
    """The operations behind the bindings, on one database file and its caps."""

    def __init__(
        self, abs_path: str, max_rows: int, max_result_bytes: int, timeout_s: float
    ) -> None:
        self.uri = f"file:{urllib.parse.quote(abs_path)}?mode=ro"
        self.max_rows = max_rows
        self.max_result_bytes = max_result_bytes
        self.timeout_s = timeout_s

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> QueryResult:
        """Run the statement `sql` with `params`; its columns and (capped) rows.

        Raises ToolError if SQLite refuses or fails the statement (a write, ATTACH, a
        syntax error...), a value or the first row is too large, the deadline passes
        or the script's run ends.
        """
        args = params if params is not None else ()
        with self._connect() as (conn, guard), self._sqlite_errors(guard):
            probed = _result_columns(conn, sql, args)
            width = probed if probed is not None else _MAX_COLUMNS
            value_cap = self._value_cap(width)
            if sys.version_info >= (3, 11):
                conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, value_cap)
            guard.value_cap, guard.width = value_cap, width
            cur = conn.execute(sql, args)
            columns = [d[0] for d in cur.description] if cur.description else []
            if len(columns) > width:  # the schema changed between the probe and now
                raise ToolError("the database schema changed during the call; run it again")
            budget = self.max_result_bytes - _json_size(columns) - 64
            rows: list[list[Any]] = []
            truncated = False
            while True:
                if guard.over():  # between rows, SQLite's handler may not have run yet
                    raise sqlite3.OperationalError("interrupted")
                raw = cur.fetchone()
                if raw is None:
                    break
                row = _fit_row(raw, budget) if len(rows) < self.max_rows else None
                if row is None:
                    if not rows:
                        raise ToolError(
                            f"the first row alone is larger than the {self.max_result_bytes}"
                            "-byte result limit; select fewer or shorter columns "
                            "(e.g. substr(col, 1, 1000))"
                        )
                    truncated = True
                    break
                budget -= row[1]
                rows.append(row[0])
            cur.close()
        return {"columns": columns, "rows": rows, "truncated": truncated}

    def tables(self) -> Tables:
        """The tables and views of the database with their columns.

        Raises ToolError if the database cannot be read, the deadline passes or the
        script's run ends.
        """
        tables: list[Table] = []
        truncated = False
        with self._connect() as (conn, guard), self._sqlite_errors(guard):
            found = conn.execute(
                "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
            ).fetchall()
            if len(found) > self.max_rows:
                found, truncated = found[: self.max_rows], True
            budget = self.max_result_bytes
            for name, kind in found:
                cols = conn.execute(
                    'SELECT name, type, "notnull", pk FROM pragma_table_xinfo(?) '
                    "WHERE hidden != 1 ORDER BY cid",
                    (name,),
                ).fetchall()
                table: Table = {
                    "name": name,
                    "type": kind,
                    "columns": [
                        {"name": c, "type": t, "nullable": not nn, "primary_key": pk > 0}
                        for c, t, nn, pk in cols
                    ],
                }
                budget -= _json_size(table)
                if budget < 0:  # a schema of thousands of wide tables: say so, keep the start
                    truncated = True
                    break
                tables.append(table)
        return {"tables": tables, "truncated": truncated}

    def _value_cap(self, columns: int) -> int:
        """The most bytes SQLite may build for one value of a statement with `columns`
        result columns: the result cap for one column, less for wide rows, so that a
        row's values together stay within a few result caps."""
        row_budget = _ROW_BUDGET_FACTOR * self.max_result_bytes
        per_value = row_budget // max(columns, 1)
        return max(_MIN_VALUE_BYTES, min(self.max_result_bytes + _MIN_VALUE_BYTES, per_value))

    @contextmanager
    def _connect(self) -> Iterator[tuple[sqlite3.Connection, _Guard]]:
        """A fresh read-only connection with its deadline, authorizer and value cap,
        interrupted when the script's run ends; closed after."""
        call = current_call()
        guard = _Guard(self.timeout_s, call)
        if guard.over():
            raise ToolError(_RUN_OVER)
        try:
            conn = sqlite3.connect(
                self.uri,
                uri=True,
                # the busy timeout sleeps inside SQLite: it must end by the deadline too
                timeout=max(0.0, guard.deadline - time.monotonic()),
                isolation_level=None,
                check_same_thread=False,  # only interrupt() comes from another thread
            )
        except sqlite3.Error:
            raise ToolError("the database could not be opened") from None
        lock = threading.Lock()
        open_ = [True]

        def interrupt() -> None:
            with lock:  # never on a connection being closed: sqlite3_interrupt forbids it
                if open_[0]:
                    conn.interrupt()

        unregister = call.on_cancel(interrupt) if call is not None else None
        try:
            try:
                conn.text_factory = _text
                conn.execute("PRAGMA query_only = ON")
                if sys.version_info >= (3, 11):
                    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
                    # no string or blob may exceed this (randomblob(1e9), a stored blob)
                    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self._value_cap(1))
                conn.set_authorizer(guard.authorize)
                conn.set_progress_handler(guard.progress, _PROGRESS_STEPS)
            except sqlite3.Error:
                raise ToolError("the database could not be opened") from None
            guard.value_cap = self._value_cap(1)
            yield conn, guard
        finally:
            if unregister is not None:
                unregister()
            with lock:
                open_[0] = False
                conn.close()

    @contextmanager
    def _sqlite_errors(self, guard: _Guard) -> Iterator[None]:
        """Turn sqlite3 errors into ToolErrors that say what to do."""
        try:
            yield
        except sqlite3.Error as exc:
            raise ToolError(self._explain(exc, guard)) from None

    def _explain(self, exc: sqlite3.Error, guard: _Guard) -> str:
        text = str(exc)
        if guard.refusal is not None and ("not authorized" in text or "denied" in text):
            return guard.refusal
        if "readonly database" in text or "read-only" in text:
            return (
                "the database is read-only: statements that change it (INSERT, UPDATE, "
                "DELETE, CREATE, DROP, ...) are refused"
            )
        if "interrupted" in text and guard.over():
            if time.monotonic() > guard.own_deadline:
                return f"the query ran longer than {self.timeout_s:g} s and was stopped"
            return _RUN_OVER
        if "one statement at a time" in text:
            return "run one SQL statement per call"
        if "too big" in text:
            alone = self._value_cap(1)
            if guard.value_cap >= alone:
                return (
                    f"a value is larger than {guard.value_cap} bytes, the most one value "
                    "may hold: it cannot be read through this tool (length(col) still works)"
                )
            return (
                f"a value is larger than {guard.value_cap} bytes, the most one value may "
                f"hold in a statement with {guard.width} columns; select fewer columns "
                f"(one alone may hold {alone} bytes) or length(col)"
            )
        return f"SQL error: {text}"


#: SQLite's own most result columns (SQLITE_MAX_COLUMN), when a statement's is unknown
_MAX_COLUMNS = 2000
_RUN_OVER = "the script's time limit was reached (or its run ended): the query was stopped"


def _result_columns(conn: sqlite3.Connection, sql: str, args: Any) -> int | None:
    """How many columns `sql` returns, from its compiled program (EXPLAIN prepares the
    statement without running it), so values can be capped before any is built.
    None if the statement cannot be explained (it is an EXPLAIN itself, or fails)."""
    try:
        cur = conn.execute("EXPLAIN " + sql, args)
    except (sqlite3.Error, ValueError, TypeError):
        return None
    width = 0
    for _addr, opcode, _p1, p2, *_rest in cur:
        if opcode == "ResultRow" and isinstance(p2, int):
            width = max(width, p2)
    return width


def _fit_row(raw: tuple[Any, ...], budget: int) -> tuple[list[Any], int] | None:
    """The row as JSON-ready cells and its size in JSON bytes, or None if it does not
    fit in `budget`; each cell is measured before it is converted."""
    size = 2
    row: list[Any] = []
    for value in raw:
        if _json_floor(value) > budget - size:
            return None
        cell = _cell(value)
        size += _json_size(cell) + 1
        if size > budget:
            return None
        row.append(cell)
    return row, size


def _json_floor(value: Any) -> int:
    """A lower bound of the JSON size of `value`'s cell, without building it."""
    if isinstance(value, bytes):
        return 4 * ((len(value) + 2) // 3) + 2
    if isinstance(value, str):
        return len(value) + 2
    return 1


def _cell(value: Any) -> Any:
    """A SQLite value as JSON data a script can use without losing precision."""
    if isinstance(value, int) and not -_SAFE_INT <= value <= _SAFE_INT:
        return str(value)
    if isinstance(value, bytes):
        return b64encode(value).decode("ascii")
    return value


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _json_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
