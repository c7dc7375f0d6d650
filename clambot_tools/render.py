"""What a model (and a person) reads of a run: the one set of rules.

The LangChain and LlamaIndex tools, the ``clambot`` command and the notebook display
all show runs through this module; each keeps only its own framework's formatting.

* `strip_code_fences`: the script inside the markdown fence a model may wrap it in,
  so that line N of an error is line N of the code the model wrote in the fence.
* `js_lines`: lines as QuickJS-NG numbers them (JavaScript's line breaks, but for
  U+2028/U+2029 inside strings and comments), so a line number here is the engine's.
* `code_frame`: the failing line, a line or two before it and a ``^`` under the column.
* `cap`: text cut to a length, with a marker saying how much was cut.
* `hint`: one sentence on what to do next, fitted to the error (or to a suspicious
  success: a NaN, a Promise turned into text, a tool call without ``await``).
* `model_text`: the text a model reads back from a run (value, logs, or the error with
  its frame, call stack and hint), never the whole script, and always encodable.
* `tool_description`: the description of the ``run_js_sandboxed`` tool.

Text from the script is made safe by ``_text`` (re-exported here as `visible`): control
and invisible characters become escapes and lone surrogates become ``\\ud800``
escapes, so everything returned here encodes to UTF-8.

The functions take a ``RunResult`` (or anything with its fields) and never raise for
anything a script produced.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ._hints import _Error, _Log, _Result, _Tool, hint
from ._limits import Limits
from ._source import js_lines, strip_code_fences
from ._text import json_text, visible

__all__ = [
    "DEFAULT_MAX_LOG_CHARS",
    "DEFAULT_MAX_VALUE_CHARS",
    "NO_FRAME_KINDS",
    "CodeFrame",
    "cap",
    "code_frame",
    "frame_of",
    "hint",
    "js_lines",
    "model_text",
    "strip_code_fences",
    "tool_description",
    "value_text",
    "visible",
    "where",
]

#: default cap on the characters of the value a model reads
DEFAULT_MAX_VALUE_CHARS = 4000
#: default cap on the characters of console output a model reads
DEFAULT_MAX_LOG_CHARS = 2000
#: longest error message a model reads (a script can throw a huge string)
MAX_MESSAGE_CHARS = 1000
#: characters of a source line shown in a code frame (a window around the column)
FRAME_WIDTH = 120

#: kinds whose position is where a limit stopped the script, not a mistake in it (a
#: top-level endless loop reports line 1, column 1): no "at line" and no code frame
NO_FRAME_KINDS = frozenset({"timeout", "memory", "output_limit", "internal"})


class _Describes(Protocol):
    """What `tool_description` reads of a Sandbox."""

    @property
    def limits(self) -> Limits: ...
    @property
    def bindings(self) -> Sequence[Any]: ...
    def describe_tools(self, *, max_chars: int | None = ...) -> str: ...


# -- capping


def cap(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its start and its end with a
    marker between them saying how many characters were cut (``[… 4,902 of 5,002
    characters cut …]``). The result has at most `limit` characters (at least the
    marker). Never raises."""
    if len(text) <= limit:
        return text
    longest = f" [… {len(text):,} of {len(text):,} characters cut …] "
    room = max(0, limit - len(longest))
    head = (room * 2) // 3
    tail = room - head
    marker = f" [… {len(text) - head - tail:,} of {len(text):,} characters cut …] "
    return text[:head] + marker + (text[len(text) - tail :] if tail else "")


# -- the code frame


@dataclass(frozen=True)
class CodeFrame:
    """The lines around a failing position and a marker line pointing at its column.

    Attributes:
        lines: (line number, visible text) pairs, the failing line last.
        marker: whitespace (tabs kept, so it aligns with the line) then ``^``; empty
            when the column is unknown.
    """

    lines: tuple[tuple[int, str], ...]
    marker: str

    def render(self) -> str:
        """The frame as text: numbered lines, ``>`` before the failing one, the marker."""
        last = self.lines[-1][0]
        width = len(str(last))
        rows = [f"{'>' if n == last else ' '} {n:>{width}} | {text}" for n, text in self.lines]
        if self.marker:
            rows.append(f"  {'':>{width}} | {self.marker}")
        return "\n".join(rows)


def code_frame(
    code: str, line: int | None, column: int | None, *, context: int = 2
) -> CodeFrame | None:
    """The frame of `code` at `line` and `column` (1-based, in characters, as RunError
    reports them), with up to `context` non-blank lines before it; None when the line is
    unknown or outside the code. Every line is made visible (escapes for control and
    invisible characters) and cut to a window of FRAME_WIDTH characters around the
    column; the marker counts wide characters as two cells and keeps tabs. Never raises."""
    if line is None:
        return None
    src = js_lines(code)
    if not 1 <= line <= len(src):
        return None
    text = src[line - 1]
    index = len(text) if column is None else min(max(column - 1, 0), len(text))
    start = 0
    if len(text) > FRAME_WIDTH:
        start = max(0, min(index - FRAME_WIDTH // 2, len(text) - FRAME_WIDTH))
    shown = ["…" if start > 0 else ""]
    marker = [" " if start > 0 else ""]
    for i, ch in enumerate(text[start : start + FRAME_WIDTH], start):
        seen = visible(ch)
        shown.append(seen)
        if i < index:
            if ch == "\t":
                marker.append("\t")
            elif seen != ch:
                marker.append(" " * len(seen))
            else:
                marker.append(" " * _cells(ch))
    if start + FRAME_WIDTH < len(text):
        shown.append("…")
    before = [(n, visible(_clip(src[n - 1]))) for n in range(max(1, line - context), line)]
    while before and not before[0][1].strip():
        before.pop(0)
    return CodeFrame(
        lines=(*before, (line, "".join(shown))),
        marker="".join(marker) + "^" if column is not None else "",
    )


def _clip(text: str) -> str:
    return text if len(text) <= FRAME_WIDTH else text[:FRAME_WIDTH] + "…"


def _cells(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def frame_of(err: _Error, code: str | None, *, context: int = 2) -> CodeFrame | None:
    """The code frame of `err` in `code`, or None: no code, no line, or a kind whose
    position is where a limit stopped the script (`NO_FRAME_KINDS`)."""
    if code is None or err.kind in NO_FRAME_KINDS:
        return None
    return code_frame(code, err.line, err.column, context=context)


def where(err: _Error) -> str:
    """``line 3, column 5`` (or ``line 3``) where `err` happened; "" when unknown or
    when the position is only where a limit stopped the script."""
    if err.line is None or err.kind in NO_FRAME_KINDS:
        return ""
    return f"line {err.line}" + (f", column {err.column}" if err.column is not None else "")


# -- values


def value_text(value: Any, *, indent: int | None = None) -> str:
    """A run's value as JSON a person or a model reads: NaN and the infinities as in
    JavaScript, invisible characters as ``\\uXXXX`` escapes and lone surrogates as
    ``\\udXXX`` escapes (as ``JSON.stringify`` writes them), compact unless `indent`
    is given. Always encodes to UTF-8; any depth. Never raises."""
    text, _ = json_text(
        value, indent=indent, compact=indent is None, js_numbers=True, escape_surrogates=True
    )
    return text


# -- the text a model reads back

_STACK_FRAME = re.compile(r"at (?:(?P<fn>[^\s(]+) \()?script\.js:(?P<line>\d+):(?P<col>\d+)")


def model_text(
    result: _Result,
    code: str | None = None,
    *,
    max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
    max_log_chars: int = DEFAULT_MAX_LOG_CHARS,
    max_chars: int | None = None,
    calls_done: Mapping[str, int] | None = None,
    tools: Sequence[_Tool] = (),
) -> str:
    """The text a model reads back from a run: compact, encodable, never the script.

    A success: ``Result (JSON): <value>`` (``Result (text):`` and the text itself for a
    string of several lines, ``Result: null (...)`` for nothing), then ``Console
    output:`` and the logs (levels other than log in brackets). A failure:
    ``Error (kind): Name: message``, ``At line L, column C of the script:`` with the
    failing line and the one before it, a ``^`` under the column (from `code`, the
    script as it ran; without it, no frame), the call stack when the error came from a
    function, the console output before the error, the tool calls that completed before
    it (`calls_done`: name -> count; their effects happened), and a ``Hint:`` fitted to
    the error (see `hint`; `tools`, the granted bindings, let it name a misspelt field).
    Successes that look like a slip get a hint too.

    The value is cut to `max_value_chars`, the logs to `max_log_chars` and the message to
    1,000 characters, each with a marker saying how much was cut; with `max_chars` the
    whole text stays within about that many characters (the value taking two thirds of
    what is left when there are logs). Lone surrogates appear as ``\\ud800`` escapes and
    control and invisible characters as escapes, so the text always encodes to UTF-8.
    Never raises.
    """
    err = result.error
    tail: list[str] = []
    advice = hint(result, code, tools=tools)
    if err is not None and not result.ok:
        head = _error_lines(err, code, max_chars)
        if calls_done:
            done = ", ".join(f"tools.{n} x{c}" for n, c in sorted(calls_done.items()))
            tail.append(f"Tool calls that completed before the error: {done}.")
    else:
        head = []
    if advice:
        tail.append(f"Hint: {advice}")
    fixed = sum(len(s) + 1 for s in head + tail)
    room = None if max_chars is None else max(200, max_chars - fixed)
    parts = list(head)
    logs_room = max_log_chars if room is None else min(max_log_chars, room)
    if err is None or result.ok:
        value_room = max_value_chars
        if room is not None:
            value_room = min(value_room, (room * 2) // 3 if result.logs else room)
        parts.append(_value_line(result.value, value_room))
        if result.logs:
            if room is not None:
                logs_room = min(logs_room, room - len(parts[-1]) - 20)
            parts.append("Console output:\n" + _logs(result.logs, max(100, logs_room)))
    elif result.logs:
        parts.append("Console output before the error:\n" + _logs(result.logs, max(100, logs_room)))
    return "\n".join(parts + tail)


def _value_line(value: Any, limit: int) -> str:
    if value is None:
        return (
            "Result: null (the last expression was null or undefined; the value of the "
            "script's last expression is the result)"
        )
    if isinstance(value, str) and "\n" in value:
        # text of several lines (a report, a declaration from tools.$describe) reads
        # better, and costs fewer tokens, as itself than as one JSON string
        return "Result (text):\n" + visible(cap(value, max(20, limit - 15)))
    return "Result (JSON): " + cap(value_text(value), max(20, limit - 15))


def _logs(logs: Sequence[_Log], limit: int) -> str:
    lines = [e.message if e.level == "log" else f"[{e.level}] {e.message}" for e in logs]
    return visible(cap("\n".join(lines), limit))


def _error_lines(err: _Error, code: str | None, max_chars: int | None) -> list[str]:
    limit = MAX_MESSAGE_CHARS if max_chars is None else min(MAX_MESSAGE_CHARS, max_chars // 3)
    message = cap(err.message, max(100, limit))
    lines = [visible(f"Error ({err.kind}): {err.name}: {message}")]
    at = where(err)
    if at:
        frame = frame_of(err, code, context=1)
        lines.append(f"At {at} of the script" + (":" if frame else "."))
        if frame is not None:
            lines.append(frame.render())
        stack = _call_stack(err)
        if stack:
            lines.append(stack)
    return lines


def _call_stack(err: _Error) -> str | None:
    """``Call stack: f (line 1:25) <- line 3:1`` when the error came from a function."""
    if not err.stack:
        return None
    frames = [m.groupdict() for m in _STACK_FRAME.finditer(err.stack)]
    if len(frames) < 2:
        return None
    parts = []
    for f in frames[:6]:
        at = f"line {f['line']}:{f['col']}"
        fn = f["fn"]
        parts.append(visible(f"{fn} ({at})") if fn and fn != "<eval>" else at)
    more = " <- ..." if len(frames) > 6 else ""
    return "Call stack: " + " <- ".join(parts) + more


# -- the tool's description

# What the model must know, in as few tokens as it takes (bench/tokens.py measures it):
# the language, how the result comes back, await, what is kept, the limits, the tools.
# The parts in [brackets] go first when a length limit leaves the declaration too little
# room (the declaration is worth more to the model than they are).
_ABOUT = (
    "Run a JavaScript program in a sandbox; get its last expression's value (as JSON) "
    "and console output. Write plain JavaScript, not Python, not TypeScript: no type "
    "annotations, no import/require, no top-level `return` (end with the value, e.g. "
    "`({{count, items}})`). Top-level `await` works. {memory_rule}[ No network, files or "
    "environment{outside}.] Limits: {timeout:g} s per run[ (tool calls included)], "
    "{memory} MiB."
)
_FRESH = "Each run starts fresh."
_KEPT = (
    "Top-level declarations and globals are kept from one call of this tool to the next "
    "in this conversation: reuse them; assign, never redeclare, a kept name. A failed "
    "script changes nothing: send the fixed script whole."
)
_TOOLS = (
    "Call tools as `await tools.name({{...}})` with one object of named arguments[; run "
    "independent calls together with `Promise.all`; a failed call throws an Error you can "
    "catch. `tools` is declared in TypeScript notation; write JavaScript]."
)
_OPTIONAL = re.compile(r"\[([^\]]*)\]")


def tool_description(
    sandbox: _Describes, *, sessions: bool = False, max_chars: int | None = None
) -> str:
    """The description of the ``run_js_sandboxed`` tool over `sandbox` (a Sandbox): what
    the language is, how results and tools work, what is kept between runs (`sessions`:
    top-level declarations persist), the limits, then the TypeScript declaration of the
    tools a script can call (``sandbox.describe_tools()``), when any are granted.

    With `max_chars` (OpenAI takes 1,024), the declaration gets the room the rest
    leaves: whole when it fits (first with all the text, then without the sentences a
    model needs least), else names and summaries, then names only, then a count
    (scripts read the rest with ``tools.$describe``/``tools.$search``). The smallest
    form takes about 800 characters in all: a smaller `max_chars` is exceeded.
    """
    has_tools = bool(sandbox.bindings)
    limits = sandbox.limits
    text = _ABOUT.format(
        outside=" but the tools below" if has_tools else "",
        timeout=limits.timeout_s,
        memory=limits.memory_mb,
        memory_rule=_KEPT if sessions else _FRESH,
    )
    if has_tools:
        text += "\n" + _TOOLS.format() + "\n\n"
    full = _OPTIONAL.sub(r"\1", text)
    if not has_tools:
        return full
    whole = sandbox.describe_tools(max_chars=None)
    if max_chars is None:
        return full + sandbox.describe_tools()
    if len(full) + len(whole) <= max_chars:
        return full + whole
    short = _OPTIONAL.sub("", text)
    if len(short) + len(whole) <= max_chars:
        return short + whole
    return short + sandbox.describe_tools(max_chars=max(0, max_chars - len(short)))
