"""What a run returns: the value, the logs, the error and some statistics.

Strings keep what the script made, lone surrogates included (``'a\\ud800b'``), which no
UTF-8 text can hold: JSON made of these models (``model_dump_json()``,
``model_dump(mode="json")``) has U+FFFD in their place, and `RunResult.encodable` gives
a copy that any serialiser takes (a LangGraph checkpoint, say).
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from ._errors import ErrorKind

LogLevel = Literal["log", "info", "warn", "error", "debug"]
LOG_LEVELS: tuple[LogLevel, ...] = ("log", "info", "warn", "error", "debug")

#: a frame of the script; a line or column of more than 9 digits is not a real one (a
#: script can write any text into a stack)
_FRAME = re.compile(r"\(?script\.js:(\d{1,9}):(\d{1,9})\b\)?")

_M = TypeVar("_M", bound="_Encodes")


class _Encodes(BaseModel):
    """A model whose strings may hold lone surrogates, and whose JSON always encodes."""

    def encodable(self: _M) -> _M:
        """This object, or when any of its strings (in a value: also its keys) holds a lone
        surrogate, a copy with U+FFFD in their place: what a serialiser that writes UTF-8
        takes (msgpack, as in a LangGraph checkpoint, or JSON)."""
        from ._text import encodable  # only when serialising: not at import

        update: dict[str, Any] = {}
        for name in type(self).model_fields:
            old = getattr(self, name)
            if isinstance(old, _Encodes):
                new: Any = old.encodable()
            elif isinstance(old, list) and old and isinstance(old[0], _Encodes):
                new = [x.encodable() if isinstance(x, _Encodes) else x for x in old]
                new = old if all(x is y for x, y in zip(new, old, strict=True)) else new
            else:
                new, replaced = encodable(old)
                new = new if replaced else old
            if new is not old:
                update[name] = new
        return self.model_copy(update=update) if update else self

    @model_serializer(mode="wrap", when_used="json")
    def _serialize_encodable(self, handler: SerializerFunctionWrapHandler) -> Any:
        return handler(self.encodable())


class LogEntry(_Encodes):
    """One console call: its level and its text (arguments joined by spaces, lone
    surrogates kept as in the value)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    level: LogLevel
    message: str


class RunError(_Encodes):
    """Why a run failed, in the terms a model needs to repair its script.

    Attributes:
        kind: what happened (see ``ErrorKind``): the category to branch on.
        name: the JS error's name (``TypeError``...) or the limit's name.
        message: the JS error's message, or what limit was hit.
        stack: the JS stack, with ``script.js:LINE:COL`` frames, when there is one.
        line, column: where in the submitted script the error happened (1-based),
            when known. The script is run exactly as given, so these are its own lines.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    kind: ErrorKind
    name: str
    message: str
    stack: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line}, column {self.column})" if self.line is not None else ""
        return f"{self.kind}: {self.name}: {self.message}{where}"

    @classmethod
    def from_js(cls, kind: ErrorKind, name: str, message: str, stack: str | None) -> RunError:
        """Build a RunError and find the first frame of the user's script in `stack`."""
        line = column = None
        if stack:
            m = _FRAME.search(stack)
            if m:
                line, column = int(m.group(1)), int(m.group(2))
        return cls.model_construct(
            kind=kind, name=name, message=message, stack=stack or None, line=line, column=column
        )


class RunStats(BaseModel):
    """How much the run used."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    duration_ms: float
    memory_bytes: int | None = None
    binding_calls: int = 0
    fuel_used: int | None = None


class RunResult(_Encodes):
    """The outcome of one run.

    Attributes:
        ok: True when the script finished and its value converted to JSON.
        value: the JSON value of the script's last expression (awaited if it is a
            promise); None on error. Beyond JSON: ``undefined`` becomes None, NaN and
            ±Infinity become floats, -0 stays -0.0, BigInt becomes int, Map becomes a
            dict keyed by ``String(key)``, Set and typed arrays become lists, Error
            objects become ``{name, message, stack}``. Functions, symbols, promises
            and cycles cannot cross: the run fails with kind ``runtime`` naming where.
        logs: console output in order, each with its level.
        error: why the run failed, or None.
        stats: duration and other measurements.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    ok: bool
    value: Any = None
    logs: list[LogEntry] = []
    error: RunError | None = None
    stats: RunStats

    def _repr_html_(self) -> str:
        """Jupyter's rich view: value, logs, error and stats, all escaped."""
        from ._display import run_result_html

        return run_result_html(self)

    def _repr_markdown_(self) -> str:
        """Markdown view of the same (for front ends that prefer it)."""
        from ._display import run_result_markdown

        return run_result_markdown(self)

    def __str__(self) -> str:
        if self.ok:
            return f"RunResult(ok, value={self.value!r}, logs={len(self.logs)})"
        return f"RunResult(error={self.error}, logs={len(self.logs)})"
