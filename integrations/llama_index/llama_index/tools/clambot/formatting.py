"""What the model sees: code fences stripped from its script, and a run's result as text.

Both keep line numbers meaningful: fence stripping blanks lines instead of removing them,
so ``line 3`` in an error is line 3 of what the model sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from clambot_tools import LogEntry, RunError, RunResult

#: the default cap, in characters, of the text a run's result becomes
DEFAULT_MAX_CHARS = 4000

# An opening fence: ``` or ~~~ (three or more) and an optional info string (```js).
_FENCE_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*[A-Za-z0-9_+.#-]*[ \t]*\r?$")
_FENCE_CLOSE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*\r?$")
#: longest line of code shown in an error's frame; longer ones show a window around the column
_FRAME_WIDTH = 120


def strip_code_fences(code: str) -> str:
    """Remove the markdown code fences a model may wrap its script in.

    When the first non-blank line opens a fence (```` ```js ````, ```` ``` ````,
    ``~~~``), the code inside every fenced block is kept and everything else (the fence
    lines, prose around the blocks) becomes an empty line, so each line keeps its
    number. A closing fence glued to the last line of code, and a one-line
    ```` ```code``` ````, become spaces, so columns keep theirs too. Code that does not
    start with a fence is returned unchanged.
    """
    lines = code.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return code
    if _FENCE_OPEN.match(lines[first]) is None:
        return _strip_one_line_fence(code)
    out = list(lines)
    fence: str | None = None
    last_code: int | None = None
    for i, line in enumerate(lines):
        if fence is None:
            opened = _FENCE_OPEN.match(line)
            if opened is not None:
                fence = opened.group("fence")
            out[i] = ""
            continue
        closed = _FENCE_CLOSE.match(line)
        if closed is not None:
            mark = closed.group("fence")
            if mark[0] == fence[0] and len(mark) >= len(fence):
                fence = None
                out[i] = ""
                continue
        if line.strip():
            last_code = i
    if fence is not None and last_code is not None:
        # an unclosed block whose last line ends with the fence: `x + 1```
        tail = out[last_code].rstrip()
        if tail.endswith(fence) and tail.strip() != fence:
            out[last_code] = tail[: -len(fence)] + " " * len(fence)
    return "\n".join(out)


def _strip_one_line_fence(code: str) -> str:
    stripped = code.strip()
    if "\n" in stripped or len(stripped) < 7:
        return code
    for mark in ("```", "~~~"):
        if stripped.startswith(mark) and stripped.endswith(mark):
            start = code.index(mark)
            end = code.rindex(mark)
            inner = code[start + 3 : end]
            if mark[0] in (inner[:1], inner[-1:]):  # ```` or more: not a simple fence
                return code
            return code[:start] + "   " + inner + "   " + code[end + 3 :]
    return code


def cap(text: str, limit: int) -> str:
    """Shorten `text` to about `limit` characters, keeping its start and its end and
    saying in the middle how much was cut. Text within the limit is returned as is."""
    if len(text) <= limit:
        return text
    marker = " [... {} characters cut ...] "
    room = max(0, limit - len(marker) - 8)
    head = (room * 2) // 3
    tail = room - head
    cut = len(text) - head - tail
    return text[:head] + marker.format(cut) + (text[len(text) - tail :] if tail else "")


def _render_value(value: Any) -> str:
    if value is None:
        return "null (or undefined: end the script with the expression whose value you want)"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # nested too deeply, or otherwise not JSON
        return repr(value)


def _render_logs(logs: Sequence[LogEntry], limit: int) -> str:
    lines = [e.message if e.level == "log" else f"[{e.level}] {e.message}" for e in logs]
    header = f"console ({len(lines)} line{'s' if len(lines) != 1 else ''}):"
    return header + "\n" + cap("\n".join(lines), max(100, limit - len(header) - 1))


def _hint(err: RunError, tool_names: Sequence[str] | None) -> str:
    msg = err.message.lower()
    if err.kind == "syntax":
        if "return not in a function" in msg:
            return (
                "a script is not a function body: instead of `return x`, end the script "
                "with the expression `x`"
            )
        return (
            "the script does not parse: send plain JavaScript (no TypeScript types, no "
            "markdown, no import/require)"
        )
    if err.kind == "runtime":
        if ("not a function" in msg or "is not a granted tool" in msg) and tool_names is not None:
            names = ", ".join(tool_names) if tool_names else "none"
            return f"call tools as `await tools.name({{...}})`; the tools available are: {names}"
        if "is not defined" in msg:
            return (
                "only standard JavaScript and the `tools` object exist here: no require, "
                "fetch, process, window or Node.js APIs"
            )
        return "an uncaught exception: fix the script, or handle the error with try/catch"
    return {
        "binding_failed": (
            "a tools.* call failed (the message says why): check its arguments "
            "against the declaration, or catch the error with try/catch"
        ),
        "binding_denied": (
            "the policy refused this tool call; the same call will be refused "
            "again, so do without it or tell the user"
        ),
        "timeout": (
            "the run hit its time limit: do less work per run, look for an endless "
            "loop, or make fewer tool calls"
        ),
        "memory": "the run hit its memory limit: work on smaller pieces of data",
        "stack": "recursion went too deep: use a loop instead",
        "output_limit": (
            "the console output or the result was too large: log less and "
            "return a smaller result (a summary or a slice)"
        ),
        "internal": "the engine failed, not necessarily the script: try again, more simply",
    }.get(err.kind, "")


def _frame(code: str, line: int, column: int | None) -> list[str]:
    """The error's line and the one before it, numbered, with a caret under the column."""
    lines = code.split("\n")
    if not 1 <= line <= len(lines):
        return []
    width = len(str(line))
    out: list[str] = []
    col = max(1, column or 1)
    for n in range(max(1, line - 1), line + 1):
        text = lines[n - 1].rstrip("\r")
        start = 0
        if len(text) > _FRAME_WIDTH:
            # a window around the column, so a long (say, minified) line stays short
            start = max(0, min(col - 1 - _FRAME_WIDTH // 2, len(text) - _FRAME_WIDTH))
            shown = text[start : start + _FRAME_WIDTH]
            shown = ("..." if start else "") + shown
            shown += "..." if start + _FRAME_WIDTH < len(text) else ""
        else:
            shown = text
        mark = ">" if n == line else " "
        out.append(f"{mark} {n:>{width}} | {shown}")
        if n == line and column is not None:
            lead = "..." if start else ""
            before = lead + text[start : col - 1]
            pad = "".join("\t" if ch == "\t" else " " for ch in before)
            out.append(f"  {' ' * width} | {pad}^")
    return out


def format_run_result(
    result: RunResult,
    code: str | None = None,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    tool_names: Sequence[str] | None = None,
) -> str:
    """A RunResult as the compact text a model reads in a tool message.

    Success: ``result: <value>`` (strings as they are, anything else as JSON), then the
    console output if there was any. Failure: the error's kind, name and message, where
    it happened with a two-line code frame taken from `code` (the script as it ran;
    without it, no frame), a hint on what to do about that kind of error, then the
    console output. The script itself is never repeated; values, messages and logs over
    their share of `max_chars` are cut in the middle with a marker saying how much.

    `tool_names`, when given, are listed in the hint for a call to a missing tool.
    """
    limit = max(400, max_chars)
    parts: list[str] = []
    if result.ok or result.error is None:
        value = _render_value(result.value)
        room = limit if not result.logs else (limit * 2) // 3
        value = cap(value, room - len("result: "))
        parts.append(f"result:\n{value}" if "\n" in value else f"result: {value}")
        if result.logs:
            parts.append(_render_logs(result.logs, limit - len(parts[0]) - 1))
        return "\n".join(parts)
    err = result.error
    parts.append(f"error kind: {err.kind}")
    parts.append(cap(f"{err.name}: {err.message}", limit // 3))
    if err.line is not None:
        where = f"at line {err.line}" + (f", column {err.column}" if err.column else "")
        frame = _frame(code, err.line, err.column) if code is not None else []
        parts.append(where + (":" if frame else ""))
        parts.extend(frame)
    hint = _hint(err, tool_names)
    if hint:
        parts.append(f"hint: {hint}")
    if result.logs:
        used = sum(len(p) + 1 for p in parts)
        parts.append(_render_logs(result.logs, limit - used))
    return "\n".join(parts)
