"""Saved scripts: a script that worked becomes a named, versioned tool, reviewed once and
then run by name.

    from clambot_tools import Policy, Sandbox, ScriptLibrary

    library = ScriptLibrary("scripts")            # a directory, reviewable in a pull request
    sb = Sandbox(bindings=[sql_query], scripts=library, policy=Policy(approve=ask_a_human))
    sb.save_script(
        "monthly_revenue", source,
        description="Revenue of one month, by region",
        args_schema={"type": "object", "properties": {"month": {"type": "string"}},
                     "required": ["month"]},
        bindings=["sql_query"],
    )                                               # a write: asks the approver; audited
    sb.run_saved("monthly_revenue", {"month": "2024-03"})   # the input is the global `args`

A saved script has a name, a description, a JSON Schema for its arguments, the
bindings it may call and its source. Each save of a changed script is a new version:
numbered (1, 2, 3...) and content-addressed (`version` is the sha256 of the source,
the schema, the bindings and the description), and immutable: a stored version whose
content no longer matches its sha256 is refused, never run.

Two stores with one interface (`ScriptStore`): `DirectoryStore` (the default: one file
per version, ``<root>/<name>/v<number>.js``, the metadata in a comment at its top) and
`SQLiteStore` (one table, for a server).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import _wording
from ._audit import AuditLog, canonical_digest, digest
from ._errors import ScriptError
from ._policy import Approval, ApprovalRequest, Policy

if TYPE_CHECKING:
    from ._result import RunResult

__all__ = [
    "DirectoryStore",
    "SQLiteStore",
    "SavedScript",
    "SavedScriptTool",
    "ScriptLibrary",
    "ScriptStore",
    "content_version",
    "failure_text",
    "saved_script_tools",
]

#: a script's name: what it is called by (a tool name in every framework, a directory)
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: the longest description (OpenAI's tool descriptions stop at 1,024 characters)
MAX_DESCRIPTION = 1000
MAX_SOURCE_BYTES = 1 << 20
MAX_SCHEMA_BYTES = 64 << 10
#: a stored file larger than this is refused unread
_MAX_FILE_BYTES = MAX_SOURCE_BYTES + 2 * MAX_SCHEMA_BYTES
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def content_version(
    description: str, args_schema: Mapping[str, Any], bindings: Sequence[str], source: str
) -> str:
    """The version of a script's content: sha256 of its source, argument schema,
    bindings and description as canonical JSON (each of them changes what the script
    does or what a model and a reviewer are told it does)."""
    text = json.dumps(
        {
            "args_schema": args_schema,
            "bindings": sorted(bindings),
            "description": description,
            "source": source,
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SavedScript:
    """One version of a saved script.

    Attributes:
        name: what it is called by (letters, digits, ``_``; at most 64).
        number: its place among the versions of `name` (1 for the first).
        version: sha256 of its content (see `content_version`).
        description: what it does, for a model and a reviewer.
        args_schema: the JSON Schema of its input (an object), which arrives in the
            script as the global ``args``.
        bindings: the tools it may call; a run of it can call nothing else.
        source: the JavaScript.
        saved_at: when it was saved (ISO 8601, UTC); not part of its content.
    """

    name: str
    number: int
    version: str
    description: str
    args_schema: dict[str, Any]
    bindings: tuple[str, ...]
    source: str
    saved_at: str = ""
    _code_sha256: list[str] = field(default_factory=list, repr=False, compare=False)

    @property
    def ref(self) -> str:
        """``name@number``."""
        return f"{self.name}@{self.number}"

    @property
    def code_sha256(self) -> str:
        """sha256 of the source alone (what runs, approvals and the audit log name)."""
        if not self._code_sha256:
            self._code_sha256.append(digest(self.source))
        return self._code_sha256[0]

    def intact(self) -> bool:
        """Whether the content still matches `version`."""
        return self.version == content_version(
            self.description, self.args_schema, self.bindings, self.source
        )

    def metadata(self) -> dict[str, Any]:
        """Everything but the source, as JSON data."""
        return {
            "name": self.name,
            "number": self.number,
            "version": self.version,
            "description": self.description,
            "args_schema": self.args_schema,
            "bindings": list(self.bindings),
            "saved_at": self.saved_at,
        }


def draft(
    name: str,
    source: str,
    *,
    description: str,
    args_schema: Mapping[str, Any] | None = None,
    bindings: Iterable[str] = (),
) -> SavedScript:
    """A checked, not yet stored version (number 0) of a script.

    Raises ScriptError naming what is invalid: the name, an empty or too long
    description, a schema that is not a JSON object schema, a binding name, a source
    that is empty, too large or not valid Unicode.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ScriptError(_wording.script_bad_name(name))
    if not isinstance(description, str) or not description.strip():
        raise ScriptError(f"script {name}: a description is required (what it does, for a model)")
    description = description.strip()
    if len(description) > MAX_DESCRIPTION:
        raise ScriptError(
            f"script {name}: the description is {len(description)} characters; "
            f"at most {MAX_DESCRIPTION}"
        )
    schema = _schema(name, args_schema)
    names = _binding_names(name, bindings)
    if not isinstance(source, str) or not source.strip():
        raise ScriptError(f"script {name}: the source is empty")
    try:
        size = len(source.encode("utf-8"))
    except UnicodeEncodeError:
        raise ScriptError(f"script {name}: the source is not valid Unicode text") from None
    if size > MAX_SOURCE_BYTES:
        raise ScriptError(f"script {name}: the source is {size} bytes; at most {MAX_SOURCE_BYTES}")
    version = content_version(description, schema, names, source)
    return SavedScript(name, 0, version, description, schema, names, source)


def _schema(name: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    if given is None:
        return dict(EMPTY_SCHEMA)
    if not isinstance(given, Mapping):
        raise ScriptError(f"script {name}: args_schema must be a JSON Schema (a dict)")
    try:
        text = json.dumps(given, sort_keys=True, ensure_ascii=False, allow_nan=False)
        schema = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ScriptError(f"script {name}: args_schema is not JSON data: {exc}") from None
    if schema.get("type", "object") != "object":
        raise ScriptError(
            f"script {name}: args_schema must describe an object (its input is the global "
            f"`args`), not type {schema.get('type')!r}"
        )
    if len(text.encode("utf-8")) > MAX_SCHEMA_BYTES:
        raise ScriptError(f"script {name}: args_schema is larger than {MAX_SCHEMA_BYTES} bytes")
    schema.setdefault("type", "object")
    return dict(schema)


def _binding_names(name: str, given: Iterable[str]) -> tuple[str, ...]:
    if isinstance(given, str):
        raise ScriptError(f"script {name}: bindings is a list of tool names, not one string")
    out = set()
    for b in given:
        if not isinstance(b, str) or not 1 <= len(b) <= 128 or "\0" in b:
            raise ScriptError(f"script {name}: {b!r} is not a tool name")
        out.add(b)
    return tuple(sorted(out))


def _check(script: SavedScript, where: str) -> SavedScript:
    """`script` if its content matches its version. Raises ScriptError otherwise."""
    if not NAME_RE.match(script.name) or script.number < 1 or not script.intact():
        raise ScriptError(_wording.script_changed(script.ref, where))
    return script


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- stores


@runtime_checkable
class ScriptStore(Protocol):
    """Where saved scripts are kept. Every version read is checked against its sha256."""

    def names(self) -> list[str]:
        """The names that have at least one version, sorted."""

    def versions(self, name: str) -> list[SavedScript]:
        """Every version of `name`, oldest first ([] for an unknown name).

        Raises ScriptError if a stored version was changed after it was saved."""

    def version(self, name: str, number: int | None = None) -> SavedScript | None:
        """Version `number` of `name` (None: the latest), or None if there is none.

        Raises ScriptError if it was changed after it was saved."""

    def add(self, script: SavedScript) -> SavedScript:
        """Store `script` as a new version (``number`` 0: the next number) and return
        it as stored; a version with the same content is not stored twice (the stored
        one is returned).

        Raises ScriptError if ``number`` is given and taken by other content (versions
        are immutable), or the store cannot be written."""


_HEADER = "/* clambot saved script: do not edit; save a changed script as a new version"
_FILE_RE = re.compile(r"^v([1-9][0-9]{0,8})\.js$")


class DirectoryStore:
    """Saved scripts as files, one per version: ``<root>/<name>/v<number>.js``, the
    JavaScript preceded by a comment holding the metadata as JSON. Meant to be kept in
    git and reviewed in pull requests (keep the files byte for byte: a checkout that
    rewrites line endings changes their content, and they are then refused).

    Files are created once and never rewritten (a new version is a new file, made
    atomically); symbolic links are not followed.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        #: versions read and checked, by path, with the file's identity when read: a
        #: file whose inode, size or change times differ is read and checked again
        self._seen: dict[Path, tuple[tuple[int, ...], SavedScript]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def names(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ScriptError(f"cannot read the script library {self.root}: {exc}") from None
        return sorted(
            e.name
            for e in entries
            if NAME_RE.match(e.name) and e.is_dir(follow_symlinks=False) and self._numbers(e.name)
        )

    def _numbers(self, name: str) -> list[int]:
        try:
            files = os.listdir(self.root / name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise ScriptError(f"cannot read {self.root / name}: {exc}") from None
        return sorted(int(m.group(1)) for f in files if (m := _FILE_RE.match(f)))

    def versions(self, name: str) -> list[SavedScript]:
        if not NAME_RE.match(name):
            return []
        return [self._read(name, n) for n in self._numbers(name)]

    def version(self, name: str, number: int | None = None) -> SavedScript | None:
        if not NAME_RE.match(name):
            return None
        numbers = self._numbers(name)
        if number is None:
            return self._read(name, numbers[-1]) if numbers else None
        return self._read(name, number) if number in numbers else None

    def _read(self, name: str, number: int) -> SavedScript:
        path = self.root / name / f"v{number}.js"
        try:
            seen = _identity(os.stat(path, follow_symlinks=False))
        except OSError as exc:
            raise ScriptError(f"cannot read {path}: {exc.strerror or exc}") from None
        with self._lock:
            known = self._seen.get(path)
        if known is not None and known[0] == seen:
            return known[1]
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as f:
                seen = _identity(os.fstat(f.fileno()))
                data = f.read(_MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ScriptError(f"cannot read {path}: {exc.strerror or exc}") from None
        script = self._parse(path, name, number, data)
        with self._lock:
            self._seen[path] = (seen, script)
        return script

    def _parse(self, path: Path, name: str, number: int, data: bytes) -> SavedScript:
        """The checked version in a file's bytes. Raises ScriptError."""
        if len(data) > _MAX_FILE_BYTES:
            raise ScriptError(f"{path}: larger than a saved script can be")
        try:
            text = data.decode("utf-8")
            head, sep, source = text.partition("\n*/\n")
            first, _, meta_text = head.partition("\n")
            if not sep or first != _HEADER:
                raise ValueError("not a saved script file")
            meta = json.loads(meta_text)
            script = SavedScript(
                name=meta["name"],
                number=meta["number"],
                version=meta["version"],
                description=meta["description"],
                args_schema=meta["args_schema"],
                bindings=tuple(meta["bindings"]),
                source=source,
                saved_at=str(meta.get("saved_at", "")),
            )
        except (ValueError, KeyError, TypeError):
            raise ScriptError(f"{path}: not a readable saved script") from None
        if script.name != name or script.number != number:
            raise ScriptError(_wording.script_changed(f"{name}@{number}", str(path)))
        return _check(script, str(path))

    @staticmethod
    def _text(script: SavedScript) -> str:
        meta = json.dumps(script.metadata(), indent=2, sort_keys=True, ensure_ascii=False)
        # "*/" may only appear inside JSON strings, where "*\/" means the same
        meta = meta.replace("*/", "*\\/")
        return f"{_HEADER}\n{meta}\n*/\n{script.source}"

    def add(self, script: SavedScript) -> SavedScript:
        folder = self.root / script.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ScriptError(f"cannot write the script library {folder}: {exc}") from None
        for _ in range(1000):  # another writer may take the number we picked: pick again
            existing = self.versions(script.name)
            found = _existing(existing, script)
            if found is not None:
                return found
            number = script.number or 1 + max((s.number for s in existing), default=0)
            stored = dataclasses.replace(script, number=number, saved_at=script.saved_at or _now())
            tmp = folder / f".v{number}.{os.getpid()}.{time.monotonic_ns()}.tmp"
            try:
                with open(tmp, "x", encoding="utf-8", newline="") as f:
                    f.write(self._text(stored))
                try:
                    os.link(tmp, folder / f"v{number}.js")  # fails if the number is taken
                    return stored
                except FileExistsError:
                    continue  # taken meanwhile: read the versions again
                finally:
                    tmp.unlink(missing_ok=True)
            except OSError as exc:
                raise ScriptError(f"cannot write {folder}: {exc}") from None
        raise ScriptError(f"cannot save {script.name}: too many concurrent saves")


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced or written (a write always moves ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _existing(existing: list[SavedScript], script: SavedScript) -> SavedScript | None:
    """The stored version with `script`'s content, if any. Raises ScriptError if
    `script` asks for a number that holds other content."""
    for s in existing:
        if s.version == script.version:
            return s
    if script.number and any(s.number == script.number for s in existing):
        raise ScriptError(_wording.script_number_taken(script.name, script.number))
    return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS clambot_scripts (
    name TEXT NOT NULL,
    number INTEGER NOT NULL,
    version TEXT NOT NULL,
    description TEXT NOT NULL,
    args_schema TEXT NOT NULL,
    bindings TEXT NOT NULL,
    source TEXT NOT NULL,
    saved_at TEXT NOT NULL,
    PRIMARY KEY (name, number),
    UNIQUE (name, version)
);
CREATE TRIGGER IF NOT EXISTS clambot_scripts_immutable BEFORE UPDATE ON clambot_scripts
BEGIN SELECT RAISE(ABORT, 'saved script versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS clambot_scripts_kept BEFORE DELETE ON clambot_scripts
BEGIN SELECT RAISE(ABORT, 'saved script versions are immutable'); END;
"""


class SQLiteStore:
    """Saved scripts in one SQLite table (``clambot_scripts``), for a server: the same
    interface and checks as `DirectoryStore`. Triggers refuse updates and deletes;
    every version read is checked against its sha256 all the same. Safe to share
    between threads and processes (one connection per operation)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise ScriptError(f"cannot open the script database {self.path}: {exc}") from None

    def names(self) -> list[str]:
        db = self._connect()
        try:
            rows = db.execute("SELECT DISTINCT name FROM clambot_scripts ORDER BY name").fetchall()
        except sqlite3.Error as exc:
            raise ScriptError(f"cannot read {self.path}: {exc}") from None
        finally:
            db.close()
        return [r[0] for r in rows if isinstance(r[0], str)]

    def versions(self, name: str) -> list[SavedScript]:
        db = self._connect()
        try:
            rows = db.execute(
                "SELECT name, number, version, description, args_schema, bindings, source, "
                "saved_at FROM clambot_scripts WHERE name = ? ORDER BY number",
                (name,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise ScriptError(f"cannot read {self.path}: {exc}") from None
        finally:
            db.close()
        return [self._row(r) for r in rows]

    def version(self, name: str, number: int | None = None) -> SavedScript | None:
        db = self._connect()
        try:
            row = db.execute(
                "SELECT name, number, version, description, args_schema, bindings, source, "
                "saved_at FROM clambot_scripts WHERE name = ? AND (? IS NULL OR number = ?) "
                "ORDER BY number DESC LIMIT 1",
                (name, number, number),
            ).fetchone()
        except sqlite3.Error as exc:
            raise ScriptError(f"cannot read {self.path}: {exc}") from None
        finally:
            db.close()
        return self._row(row) if row is not None else None

    def _row(self, r: tuple[Any, ...]) -> SavedScript:
        where = f"{self.path} ({r[0]}@{r[1]})"
        try:
            script = SavedScript(
                name=r[0],
                number=int(r[1]),
                version=r[2],
                description=r[3],
                args_schema=json.loads(r[4]),
                bindings=tuple(json.loads(r[5])),
                source=r[6],
                saved_at=str(r[7]),
            )
        except (ValueError, TypeError):
            raise ScriptError(f"{where}: not a readable saved script") from None
        return _check(script, where)

    def add(self, script: SavedScript) -> SavedScript:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                existing = [
                    self._row(r)
                    for r in db.execute(
                        "SELECT name, number, version, description, args_schema, bindings, "
                        "source, saved_at FROM clambot_scripts WHERE name = ? ORDER BY number",
                        (script.name,),
                    ).fetchall()
                ]
                found = _existing(existing, script)
                if found is not None:
                    db.execute("ROLLBACK")
                    return found
                number = script.number or 1 + max((s.number for s in existing), default=0)
                stored = dataclasses.replace(
                    script, number=number, saved_at=script.saved_at or _now()
                )
                db.execute(
                    "INSERT INTO clambot_scripts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        stored.name,
                        stored.number,
                        stored.version,
                        stored.description,
                        json.dumps(stored.args_schema, sort_keys=True, ensure_ascii=False),
                        json.dumps(list(stored.bindings)),
                        stored.source,
                        stored.saved_at,
                    ),
                )
                db.execute("COMMIT")
                return stored
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise ScriptError(f"cannot write {self.path}: {exc}") from None
        finally:
            db.close()


# ---------------------------------------------------------------- the library

#: the approver's request names this as the "binding" of a save
SAVE_NAME = "save_script"


class ScriptLibrary:
    """Saved scripts, by name and version, over a `ScriptStore`.

    Args:
        store: a `ScriptStore`, or a directory path for a `DirectoryStore` (created
            when the first script is saved). ``ScriptLibrary.sqlite(path)`` uses SQLite.
    """

    def __init__(self, store: ScriptStore | str | os.PathLike[str]) -> None:
        if isinstance(store, (str, os.PathLike)):
            store = DirectoryStore(store)
        if not isinstance(store, ScriptStore):
            raise ScriptError("store must be a directory path or a ScriptStore")
        self.store: ScriptStore = store

    @classmethod
    def sqlite(cls, path: str | os.PathLike[str]) -> ScriptLibrary:
        """A library in the SQLite database at `path` (created if missing).

        Raises ScriptError if it cannot be opened."""
        return cls(SQLiteStore(path))

    def __repr__(self) -> str:
        return f"ScriptLibrary({self.store!r})"

    def names(self) -> list[str]:
        """The names of the saved scripts, sorted."""
        return self.store.names()

    def latest(self) -> list[SavedScript]:
        """The latest version of every saved script, by name.

        Raises ScriptError if one was changed after it was saved."""
        return [self.get(n) for n in self.names()]

    def versions(self, name: str) -> list[SavedScript]:
        """Every version of `name`, oldest first.

        Raises ScriptError for an unknown name, or a version changed after it was saved."""
        found = self.store.versions(name)
        if not found:
            raise ScriptError(_wording.script_unknown(name, self.names()))
        return found

    def get(self, name: str, version: int | str | None = None) -> SavedScript:
        """One version of `name`: the latest, or the given number (``3``, ``"3"``), or
        the version whose sha256 starts with `version` (at least 8 hex digits).
        ``"name@3"`` works as `name` too.

        Raises ScriptError for an unknown name or version, or a version changed after
        it was saved."""
        if version is None and isinstance(name, str) and "@" in name:
            name, _, version = name.partition("@")
        number = None
        if isinstance(version, int) and not isinstance(version, bool):
            number = version
        elif isinstance(version, str) and version.isdigit():
            number = int(version)
        if version is None or number is not None:
            script = self.store.version(name, number)
            if script is not None:
                return script
        found = self.versions(name)
        if isinstance(version, int) and not isinstance(version, bool):
            matches = [s for s in found if s.number == version]
        elif isinstance(version, str) and version.isdigit():
            matches = [s for s in found if s.number == int(version)]
        elif isinstance(version, str) and len(version) >= 8:
            matches = [s for s in found if s.version.startswith(version.lower())]
        else:
            matches = []
        if len(matches) != 1:
            raise ScriptError(_wording.script_no_version(name, version, [s.number for s in found]))
        return matches[0]

    def save(
        self,
        name: str,
        source: str,
        *,
        description: str,
        args_schema: Mapping[str, Any] | None = None,
        bindings: Iterable[str] = (),
        policy: Policy,
        audit: AuditLog | None = None,
    ) -> SavedScript:
        """Save `source` as the next version of `name` (nothing new when the latest
        version with this content exists: that one is returned) and return it.

        Saving is a write: decided by `policy` as a call with effect ``write`` is (its
        ``approve`` is asked unless ``auto_approve`` has ``"write"``; without an approver
        it is refused; ``deny_effects`` with ``"write"`` refuses it), the approver seeing
        the whole script as ``save_script`` arguments. A sync approver is called here;
        an async one is run on the package's event loop. The decision and outcome go to
        `audit`. The source must parse (it is compiled in a fresh sandbox first).

        Raises ScriptError if the definition is invalid, the source does not parse, the
        save is refused or not approved, or the store cannot be written.
        """
        script, request, started = self._prepare(name, source, description, args_schema, bindings)
        if request is None:
            return _already_saved(script, audit, started)
        answer = _decision(policy)
        if answer is None:
            answer = _ask_sync(policy, request)
        return self._conclude(script, request, answer, audit, started)

    async def asave(
        self,
        name: str,
        source: str,
        *,
        description: str,
        args_schema: Mapping[str, Any] | None = None,
        bindings: Iterable[str] = (),
        policy: Policy,
        audit: AuditLog | None = None,
    ) -> SavedScript:
        """The asyncio twin of `save`: an async approver is awaited on this loop (a
        sync one runs on a package thread). Raises as `save` does."""
        script, request, started = self._prepare(name, source, description, args_schema, bindings)
        if request is None:
            return _already_saved(script, audit, started)
        answer = _decision(policy)
        if answer is None:
            answer = await _ask_async(policy, request)
        return self._conclude(script, request, answer, audit, started)

    def _prepare(
        self,
        name: str,
        source: str,
        description: str,
        args_schema: Mapping[str, Any] | None,
        bindings: Iterable[str],
    ) -> tuple[SavedScript, ApprovalRequest | None, float]:
        """The draft and the approval request of a save; no request when the content
        is already saved (the stored version is returned instead)."""
        started = time.monotonic()
        script = draft(
            name, source, description=description, args_schema=args_schema, bindings=bindings
        )
        from ._bytecode import syntax_error

        problem = syntax_error(script.source)
        if problem is not None:
            raise ScriptError(f"script {name} cannot be saved: {problem}")
        existing = self.store.versions(name)
        for s in existing:
            if s.version == script.version:
                return s, None, started
        number = 1 + max((s.number for s in existing), default=0)
        args = {
            "name": script.name,
            "version": script.version,
            "number": number,
            "description": script.description,
            "args_schema": script.args_schema,
            "bindings": list(script.bindings),
            "source": script.source,
        }
        args_sha256 = canonical_digest(args)
        request = ApprovalRequest(
            binding=SAVE_NAME,
            description=_wording.save_request(script.name, number),
            effects=("write",),
            args=args,
            code_sha256=script.code_sha256,
            args_sha256=args_sha256,
            occurrence=0,
            request_id=digest(f"{SAVE_NAME}\0{args_sha256}\0{script.code_sha256}\0{0}")[:32],
        )
        return script, request, started

    def _conclude(
        self,
        script: SavedScript,
        request: ApprovalRequest,
        answer: str,
        audit: AuditLog | None,
        started: float,
    ) -> SavedScript:
        """Store `script` if `answer` (a decision) allows it; audit either way."""

        def record(decision: str, outcome: str, stored: SavedScript | None) -> None:
            _audit_save(audit, script, stored, decision, outcome, started, request.request_id)

        decision, _, reason = answer.partition(":")
        if decision not in ("approved", "auto_approved"):
            record(decision, "denied", None)
            raise ScriptError(reason or _wording.save_not_approved(script.name))
        try:
            stored = self.store.add(script)
        except ScriptError:
            record(decision, "failed", None)
            raise
        record(decision, "saved", stored)
        return stored


def _audit_save(
    audit: AuditLog | None,
    script: SavedScript,
    stored: SavedScript | None,
    decision: str,
    outcome: str,
    started: float,
    request_id: str | None,
) -> None:
    """One audit record of a save: what, which version, the decision and what became of it."""
    if audit is None:
        return
    audit.emit(
        {
            "event": "script_save",
            "script": script.name,
            "script_version": script.version,
            "script_number": stored.number if stored is not None else None,
            "code_sha256": script.code_sha256,
            "request_id": request_id,
            "decision": decision,
            "outcome": outcome,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
        }
    )


def _already_saved(script: SavedScript, audit: AuditLog | None, started: float) -> SavedScript:
    """A save of content that is already a version: nothing written, nothing to approve."""
    _audit_save(audit, script, script, "not_needed", "exists", started, None)
    return script


def _decision(policy: Policy) -> str | None:
    """The decision on a save the policy makes by itself (``decision[:reason]``), or
    None when the approver must be asked."""
    if not isinstance(policy, Policy):
        raise ScriptError("saving a script needs a clambot_tools.Policy (policy=...)")
    if "write" in policy.deny_effects:
        return "denied:" + _wording.save_denied_effect()
    if "write" not in policy.approve_effects or "write" in policy.auto_approve:
        return "auto_approved"
    if policy.approve is None:
        return "denied:" + _wording.save_needs_approver()
    return None


def _answer(value: Any) -> str:
    if value is True or value in (Approval.ALLOW_ONCE, Approval.ALLOW_SESSION):
        return "approved"
    return "approval_denied"


def _ask_sync(policy: Policy, request: ApprovalRequest) -> str:
    import inspect

    assert policy.approve is not None
    try:
        value = policy.approve(request)
        if inspect.isawaitable(value):
            import asyncio

            from ._pools import background_loop

            value = asyncio.run_coroutine_threadsafe(_awaited(value), background_loop()).result()
    except Exception:  # noqa: BLE001 - a failing approver denies
        return "approval_failed:" + _wording.approver_failed_save()
    return _answer(value)


async def _ask_async(policy: Policy, request: ApprovalRequest) -> str:
    import asyncio
    import inspect

    from ._pools import call_pool

    approve = policy.approve
    assert approve is not None
    try:
        if inspect.iscoroutinefunction(approve):
            value = await approve(request)
        else:
            value = await asyncio.get_running_loop().run_in_executor(call_pool(), approve, request)
            if inspect.isawaitable(value):
                value = await value
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a failing approver denies
        return "approval_failed:" + _wording.approver_failed_save()
    return _answer(value)


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


# ---------------------------------------------------------------- as tools


@dataclass(frozen=True)
class SavedScriptTool:
    """A saved script as a tool, for an MCP server or any other framework: its
    `name`, `description` and `input_schema` (JSON Schema), and `call` / `acall`,
    which run it in the Sandbox it came from (``Sandbox.run_saved``) and return the
    RunResult. `script` is the version they run.

    `call` and `acall` raise ScriptArgumentsError for arguments the schema refuses."""

    name: str
    description: str
    input_schema: dict[str, Any]
    call: Callable[[Mapping[str, Any] | None], RunResult]
    acall: Callable[[Mapping[str, Any] | None], Coroutine[Any, Any, RunResult]]
    script: SavedScript


class _RunsSaved(Protocol):
    """What `saved_script_tools` needs of a Sandbox."""

    @property
    def scripts(self) -> ScriptLibrary | None: ...

    def run_saved(
        self, name: str, args: Mapping[str, Any] | None = None, *, version: int | str | None = None
    ) -> RunResult: ...

    async def arun_saved(
        self, name: str, args: Mapping[str, Any] | None = None, *, version: int | str | None = None
    ) -> RunResult: ...


def saved_script_tools(
    sandbox: _RunsSaved, names: Iterable[str] | None = None
) -> list[SavedScriptTool]:
    """The saved scripts of `sandbox`'s library as tools: every script's latest version,
    or those in `names` (``"name"`` or ``"name@3"``), each run by `sandbox` (its
    bindings, policy, limits and audit).

    Raises ScriptError if the Sandbox has no library, a name is unknown, or a script
    was changed after it was saved."""
    library = sandbox.scripts
    if library is None:
        raise ScriptError(_wording.NO_LIBRARY)
    wanted = list(names) if names is not None else library.names()
    tools = []
    for ref in wanted:
        script = library.get(ref)

        def call(args: Mapping[str, Any] | None = None, _s: SavedScript = script) -> RunResult:
            return sandbox.run_saved(_s.name, args, version=_s.number)

        async def acall(
            args: Mapping[str, Any] | None = None, _s: SavedScript = script
        ) -> RunResult:
            return await sandbox.arun_saved(_s.name, args, version=_s.number)

        tools.append(
            SavedScriptTool(
                name=script.name,
                description=script.description,
                input_schema=dict(script.args_schema),
                call=call,
                acall=acall,
                script=script,
            )
        )
    return tools


def failure_text(name: str, result: RunResult, *, max_log_chars: int = 2000) -> str:
    """What a model reads of a saved script's failed run: the error, the console output
    before it, and that the script is not the model's to fix (no code frame: the model
    did not write it). Always encodes; never raises."""
    from .render import cap, visible

    err = result.error
    if err is None:
        return f"Error: the saved script {name} failed without an error record."
    lines = [visible(f"Error ({err.kind}): {err.name}: {cap(err.message, 1000)}")]
    if result.logs:
        text = "\n".join(
            e.message if e.level == "log" else f"[{e.level}] {e.message}" for e in result.logs
        )
        lines.append("Console output before the error:\n" + visible(cap(text, max_log_chars)))
    lines.append(f"The saved script {name} failed with these arguments; do not retry it unchanged.")
    return "\n".join(lines)
