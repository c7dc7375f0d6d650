"""Read-only SQL bindings on one SQLite file.

``bindings(db_path)`` grants ``sql_query`` and ``sql_tables``. Read-only is enforced by
SQLite itself, not by looking at the SQL: every call opens its own connection with the
``file:...?mode=ro`` URI and ``PRAGMA query_only=ON``, so any statement that would change
the database (INSERT, UPDATE, DELETE, CREATE, DROP, temp tables...) fails inside
SQLite. On top of that an authorizer refuses ATTACH and DETACH (which VACUUM and
VACUUM INTO also use, so no other file can be read or written) and every PRAGMA
except a few that only describe the schema. A progress handler stops a query once its
deadline passes, and results are capped by row count and by size.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import urllib.parse
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from .. import Binding, ConfigError, binding
from . import ToolError

_MIB = 1 << 20
#: JS numbers hold integers exactly only up to 2**53 - 1; larger ones become strings
_SAFE_INT = (1 << 53) - 1
#: SQLite VM steps between two checks of the deadline
_PROGRESS_STEPS = 2000

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
        timeout_s: longest one call may run inside SQLite before it is stopped.
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
                f"then true); a statement running over {timeout_s:g} s is stopped. BLOBs "
                "come back as base64 strings, integers beyond 2^53 as strings."
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
    """Per-connection state: the deadline and why the authorizer refused something."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.refusal: str | None = None

    def progress(self) -> int:
        """SQLite's progress handler: non-zero stops the statement."""
        return 1 if time.monotonic() > self.deadline else 0

    def authorize(
        self,
        action: int,
        arg1: str | None,
        arg2: str | None,
        db_name: str | None,
        trigger: str | None,
    ) -> int:
        """SQLite's authorizer: refuse ATTACH/DETACH and pragmas that are not plain reads."""
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
        syntax error...), it runs past the deadline, or one row alone is too large.
        """
        with self._connect() as (conn, guard), self._sqlite_errors(guard):
            cur = conn.execute(sql, params if params is not None else ())
            columns = [d[0] for d in cur.description] if cur.description else []
            budget = self.max_result_bytes - len(_to_json(columns)) - 64
            rows: list[list[Any]] = []
            truncated = False
            for raw in cur:
                row = [_cell(v) for v in raw]
                budget -= len(_to_json(row)) + 1
                if len(rows) >= self.max_rows or budget < 0:
                    if not rows:
                        raise ToolError(
                            f"the first row alone is larger than the {self.max_result_bytes}"
                            "-byte result limit; select fewer or shorter columns "
                            "(e.g. substr(col, 1, 1000))"
                        )
                    truncated = True
                    break
                rows.append(row)
            cur.close()
        return {"columns": columns, "rows": rows, "truncated": truncated}

    def tables(self) -> Tables:
        """The tables and views of the database with their columns.

        Raises ToolError if the database cannot be read or the deadline passes.
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
            for name, kind in found:
                cols = conn.execute(
                    'SELECT name, type, "notnull", pk FROM pragma_table_xinfo(?) '
                    "WHERE hidden != 1 ORDER BY cid",
                    (name,),
                ).fetchall()
                tables.append(
                    {
                        "name": name,
                        "type": kind,
                        "columns": [
                            {"name": c, "type": t, "nullable": not nn, "primary_key": pk > 0}
                            for c, t, nn, pk in cols
                        ],
                    }
                )
        return {"tables": tables, "truncated": truncated}

    @contextmanager
    def _connect(self) -> Iterator[tuple[sqlite3.Connection, _Guard]]:
        """A fresh read-only connection with its deadline and authorizer; closed after."""
        guard = _Guard(self.timeout_s)
        try:
            conn = sqlite3.connect(self.uri, uri=True, timeout=self.timeout_s, isolation_level=None)
        except sqlite3.Error:
            raise ToolError("the database could not be opened") from None
        try:
            try:
                conn.text_factory = _text
                conn.execute("PRAGMA query_only = ON")
                if sys.version_info >= (3, 11):
                    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
                    # no one string or blob may exceed this (randomblob(1e9) and the like)
                    conn.setlimit(
                        sqlite3.SQLITE_LIMIT_LENGTH, max(32 * _MIB, self.max_result_bytes)
                    )
                conn.set_authorizer(guard.authorize)
                conn.set_progress_handler(guard.progress, _PROGRESS_STEPS)
            except sqlite3.Error:
                raise ToolError("the database could not be opened") from None
            yield conn, guard
        finally:
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
        if "interrupted" in text and time.monotonic() > guard.deadline:
            return f"the query ran longer than {self.timeout_s:g} s and was stopped"
        if "one statement at a time" in text:
            return "run one SQL statement per call"
        if "too big" in text:
            return f"SQL error: {text} (strings and blobs are limited in size)"
        return f"SQL error: {text}"


def _cell(value: Any) -> Any:
    """A SQLite value as JSON data a script can use without losing precision."""
    if isinstance(value, int) and not -_SAFE_INT <= value <= _SAFE_INT:
        return str(value)
    if isinstance(value, bytes):
        return b64encode(value).decode("ascii")
    return value


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
