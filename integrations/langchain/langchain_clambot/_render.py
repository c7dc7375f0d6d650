"""The compact text a model reads back from a run: the value, the logs, or the error.

Never the submitted script: only, on an error, the failing line and its neighbour.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from clambot_tools import LogEntry, RunError, RunResult

from ._fences import js_lines

#: longest error message shown (a script can throw a huge string)
MAX_MESSAGE_CHARS = 1000
#: longest code line shown in a frame; longer ones are shown as a window around the column
_FRAME_WIDTH = 160
_STACK_FRAME = re.compile(r"at (?:(?P<fn>[^\s(]+) \()?script\.js:(?P<line>\d+):(?P<col>\d+)")
#: kinds whose position is where the script was when a limit stopped it, not a mistake
_NO_FRAME_KINDS = frozenset({"timeout", "memory", "output_limit", "internal"})

_HINTS: dict[str, str] = {
    "syntax": "Write plain JavaScript: no type annotations, no import/require, no top-level "
    "return (the last expression is the result).",
    "runtime": "An exception was thrown and not caught.",
    "timeout": "The run hit its time limit (tool calls included): do less per run, and "
    "avoid loops that never end.",
    "memory": "The run hit its memory limit: keep less data in memory at once.",
    "stack": "Recursion went too deep: use a loop instead.",
    "output_limit": "The console output or the result was too large: log less, return less.",
    "binding_denied": "A tool call was refused (by the policy or a human): do not retry "
    "it unchanged.",
    "binding_failed": "A tool call failed; wrap it in try/catch to handle the failure.",
    "internal": "The sandbox failed, not your script; you may retry once.",
}


def cap(text: str, limit: int, what: str) -> str:
    """`text`, cut to `limit` characters with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return (
        f"{text[:limit]}... [cut: {len(text) - limit} more characters of {what}, "
        f"{len(text)} in all]"
    )


def _default(value: Any) -> Any:
    """json.dumps fallback: anything not JSON is shown as its str()."""
    return str(value)


def value_json(value: Any) -> str:
    """The run's value as compact JSON (NaN and infinities spelt as in JavaScript)."""
    try:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=True, default=_default
        )
    except (TypeError, ValueError):  # e.g. nesting too deep for json: show something
        return repr(value)


def _render_logs(logs: Sequence[LogEntry], limit: int) -> str:
    """Console entries one a line (levels other than log in brackets), capped."""
    lines = [e.message if e.level == "log" else f"[{e.level}] {e.message}" for e in logs]
    return cap("\n".join(lines), limit, "console output")


def render_success(result: RunResult, *, max_value_chars: int, max_log_chars: int) -> str:
    """The model's view of a run that succeeded: its value as JSON, then its logs."""
    value = result.value
    if value is None:
        head = (
            "Result: null (the last expression was null or undefined; the value of "
            "the script's last expression is the result)"
        )
    else:
        if isinstance(value, float) and not math.isfinite(value):
            text = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        else:
            text = value_json(value)
        head = "Result (JSON): " + cap(text, max_value_chars, "the result")
    if not result.logs:
        return head
    return f"{head}\nConsole output:\n{_render_logs(result.logs, max_log_chars)}"


def _frame(script: str, line: int, column: int | None) -> list[str]:
    """Up to three lines: the line before the failing one, the failing one, a caret."""
    lines = js_lines(script)
    if not 1 <= line <= len(lines):
        return []
    width = len(str(line))
    out: list[str] = []
    if line >= 2 and lines[line - 2].strip():
        prev = lines[line - 2].expandtabs(4)
        out.append(f"  {line - 1:>{width}} | {_clip(prev, 0)}")
    text = lines[line - 1].expandtabs(4)
    col = None
    if column is not None and column >= 1:
        col = len(lines[line - 1][: column - 1].expandtabs(4))
    start = 0 if col is None or col < _FRAME_WIDTH - 20 else col - _FRAME_WIDTH // 2
    out.append(f"> {line:>{width}} | {_clip(text, start)}")
    if col is not None:
        lead = 3 if start > 0 else 0  # the "..." _clip put in front
        out.append(f"  {' ' * width} | {' ' * (col - start + lead)}^")
    return out


def _clip(text: str, start: int) -> str:
    """`text` from `start`, at most _FRAME_WIDTH characters, "..." where it was cut."""
    piece = text[start : start + _FRAME_WIDTH]
    if start > 0:
        piece = "..." + piece
    if start + _FRAME_WIDTH < len(text):
        piece += "..."
    return piece.rstrip()


def _call_stack(err: RunError) -> str | None:
    """ "f (line 1:25) <- line 3:1" when the error came from inside a function call."""
    if not err.stack:
        return None
    frames = [m.groupdict() for m in _STACK_FRAME.finditer(err.stack)]
    if len(frames) < 2:
        return None
    parts = []
    for f in frames[:6]:
        where = f"line {f['line']}:{f['col']}"
        fn = f["fn"]
        parts.append(f"{fn} ({where})" if fn and fn != "<eval>" else where)
    more = " <- ..." if len(frames) > 6 else ""
    return "Call stack: " + " <- ".join(parts) + more


def render_error(
    result: RunResult,
    script: str,
    *,
    max_log_chars: int,
    tool_name: str,
    calls_done: Mapping[str, int] | None = None,
) -> str:
    """The model's view of a failed run: kind, name, message, the line with a short code
    frame, the call stack when the error came from a function, the logs written before
    the error, the tool calls that completed before it (their effects happened), and a
    one-line hint. Never the whole script."""
    err = result.error
    if err is None:  # not a failure: nothing to explain
        return "Error: the run failed without an error record."
    message = cap(err.message, MAX_MESSAGE_CHARS, "the message")
    lines = [f"Error ({err.kind}): {err.name}: {message}"]
    if err.line is not None and err.kind not in _NO_FRAME_KINDS:
        where = f"line {err.line}" + (f", column {err.column}" if err.column else "")
        frame = _frame(script, err.line, err.column)
        lines.append(f"At {where} of the script:" if frame else f"At {where} of the script.")
        lines.extend(frame)
        stack = _call_stack(err)
        if stack:
            lines.append(stack)
    if result.logs:
        lines.append("Console output before the error:")
        lines.append(_render_logs(result.logs, max_log_chars))
    if calls_done:
        done = ", ".join(f"tools.{n} x{c}" for n, c in sorted(calls_done.items()))
        lines.append(f"Tool calls that completed before the error: {done}.")
    hint = _HINTS.get(err.kind)
    if hint:
        lines.append(hint)
    if err.kind in ("syntax", "runtime", "stack"):
        lines.append(f"Fix the script and call {tool_name} again.")
    return "\n".join(lines)
