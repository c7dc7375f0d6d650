"""How a run ended (`Ending`) becomes the RunResult a caller gets: the one place where
a limit, a trap or a JS error record is turned into a RunError."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from . import _jsonsafe, _wording
from ._driver import Ending
from ._errors import ERROR_KINDS, ErrorKind
from ._limits import Limits
from ._result import LogEntry, RunError, RunResult, RunStats


def char_column(code: str, line: int, column: int) -> int:
    """QuickJS counts columns in UTF-8 bytes; a person (and a model) counts characters."""
    if code.isascii():
        return column
    from .render import js_lines  # not at import: most scripts are ASCII

    lines = js_lines(code)
    if not 1 <= line <= len(lines):
        return column
    text = lines[line - 1]
    if text.isascii():
        return column
    prefix = text.encode("utf-8", "surrogatepass")[: max(0, column - 1)]
    return len(prefix.decode("utf-8", "ignore")) + 1


class Report:
    """Everything besides the Ending that goes into a RunResult."""

    __slots__ = ("binding_calls", "callable", "code", "fuel_used", "limits", "logs", "started")

    def __init__(
        self,
        code: str,
        limits: Limits,
        started: float,
        callable_names: Callable[[], list[str]] = list,
    ) -> None:
        self.code = code
        self.limits = limits
        self.started = started
        #: the names a script may call (asked only to explain a missing tool)
        self.callable = callable_names
        self.logs: list[LogEntry] = []
        self.binding_calls = 0
        self.fuel_used: int | None = None

    def stats(self, memory_bytes: int | None) -> RunStats:
        # model_construct: these values are ours and already typed; validation would
        # cost more than the rest of a small run's Python side
        return RunStats.model_construct(
            duration_ms=(time.perf_counter() - self.started) * 1000,
            memory_bytes=memory_bytes,
            binding_calls=self.binding_calls,
            fuel_used=self.fuel_used,
        )


def limit_error(kind: ErrorKind, message: str) -> RunError:
    """A RunError for a limit or a fault (no JS stack)."""
    # model_construct throughout: our own typed values, and validating would build
    # pydantic's schemas on the first failing run (~20 ms after a deadline)
    return RunError.model_construct(
        kind=kind,
        name=_wording.LIMIT_NAMES.get(kind, "Error"),
        message=message,
        stack=None,
        line=None,
        column=None,
    )


def _trap_message(ending: Ending, limits: Limits) -> str:
    kind = ending.trap
    if kind == "timeout":
        return _wording.timeout(limits, fuel=ending.detail == "out of fuel")
    if kind == "memory":
        return _wording.memory(limits)
    if kind == "stack":
        return _wording.stack()
    if kind == "output_limit":
        return _wording.log_limit(limits)
    if ending.detail.startswith("too many sandboxes"):
        return _wording.POOL_FULL
    return _wording.internal(ending.detail)


def error_of(ending: Ending, report: Report) -> RunError | None:
    """The RunError of `ending` (None for a value), or the value's parsed form via
    `value_of`. Never raises."""
    limits = report.limits
    if ending.kind == "timeout":
        return limit_error("timeout", _wording.timeout(limits))
    if ending.kind == "cancelled":
        return limit_error("timeout", _wording.CANCELLED)
    if ending.kind == "trap":
        assert ending.trap is not None
        return limit_error(ending.trap, _trap_message(ending, limits))
    if ending.kind == "error":
        assert ending.outcome is not None
        return _js_error(ending.outcome.payload, report)
    return None


def _js_error(payload: bytes, report: Report) -> RunError:
    try:
        rec = _jsonsafe.loads(payload.decode("utf-8", "surrogatepass"))
        kind, name, message = rec["kind"], rec["name"], rec["message"]
        stack = rec.get("stack")
        if kind not in ERROR_KINDS or not isinstance(message, str) or not isinstance(name, str):
            raise TypeError("unexpected fields")
    except (ValueError, KeyError, TypeError) as exc:
        return limit_error("internal", _wording.unreadable("error", exc))
    if kind in ("timeout", "memory"):
        # stopped by QuickJS's interrupt, or its own "out of memory": the words and the
        # name of every other path, and the JS stack (where the script was) kept
        name = _wording.LIMIT_NAMES[kind]
        words = _wording.timeout if kind == "timeout" else _wording.memory
        message = words(report.limits)
    if kind == "output_limit" and name != "RangeError":
        return limit_error("output_limit", message)
    call = rec.get("call")
    if isinstance(call, str) and call:  # a tool call's error: name the call
        message = _wording.call_summary(kind, name, call, message)
    missing = rec.get("missing_tool")
    if isinstance(missing, str) and missing:  # `tools.nope(...)`: which, and what is there
        message = _wording.missing_tool(missing, report.callable())
    message = message.encode("utf-8", "replace").decode("utf-8")
    err = RunError.from_js(kind, name, message, stack if isinstance(stack, str) else None)
    if err.line is not None and err.column is not None:
        column = char_column(report.code, err.line, err.column)
        if column != err.column:
            err = err.model_copy(update={"column": column})
    return err


def kind_of(ending: Ending | None) -> ErrorKind | Literal["ok"]:
    """How `ending` ends the run, as the RunError kind it will have (``ok`` for a value;
    ``internal`` when there is no ending: the run path itself failed). Never raises."""
    if ending is None:
        return "internal"
    if ending.kind in ("timeout", "cancelled"):
        return "timeout"
    if ending.kind == "trap":
        return ending.trap or "internal"
    if ending.kind == "done":
        return "ok"
    assert ending.outcome is not None
    try:
        kind = _jsonsafe.loads(ending.outcome.payload.decode("utf-8", "surrogatepass"))["kind"]
    except (ValueError, KeyError, TypeError):
        return "internal"
    return kind if kind in ERROR_KINDS else "internal"


def build(ending: Ending, report: Report, *, session_restored: bool = False) -> RunResult:
    """The RunResult for `ending`. Never raises."""
    out = ending.outcome
    memory = out.mem_used if out is not None else None
    err = error_of(ending, report)
    if err is None:
        assert out is not None
        try:
            value = _jsonsafe.loads(out.payload.decode("utf-8", "surrogatepass"))
        except ValueError as exc:
            err = limit_error("internal", _wording.unreadable("result", exc))
        else:
            return RunResult.model_construct(
                ok=True, value=value, logs=report.logs, error=None, stats=report.stats(memory)
            )
    if session_restored:
        err = err.model_copy(update={"message": err.message + _wording.SESSION_RESTORED})
    return RunResult.model_construct(
        ok=False, value=None, logs=report.logs, error=err, stats=report.stats(memory)
    )
