"""What a model (and a person) reads of a run: the one set of rules.

The LangChain and LlamaIndex tools, the ``clambot`` command and the notebook display
all show runs through this module; each keeps only its own framework's formatting.

* `strip_code_fences`: the script inside the markdown fence a model may wrap it in,
  so that line N of an error is line N of the code the model wrote in the fence.
* `js_lines`: JavaScript's own line breaks (``\\n``, ``\\r\\n``, ``\\r``, U+2028,
  U+2029), so a line number here is the engine's line number.
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

import difflib
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ._limits import Limits
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


# -- what is read of a result (a RunResult, or anything with its fields)


class _Log(Protocol):
    @property
    def level(self) -> str: ...
    @property
    def message(self) -> str: ...


class _Error(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def stack(self) -> str | None: ...
    @property
    def line(self) -> int | None: ...
    @property
    def column(self) -> int | None: ...


class _Result(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def value(self) -> Any: ...
    @property
    def logs(self) -> Sequence[_Log]: ...
    @property
    def error(self) -> _Error | None: ...


class _Tool(Protocol):
    """What hints read of a granted tool (a Binding)."""

    @property
    def name(self) -> str: ...
    @property
    def result_schema(self) -> Mapping[str, Any] | None: ...


class _Describes(Protocol):
    """What `tool_description` reads of a Sandbox."""

    @property
    def limits(self) -> Limits: ...
    @property
    def bindings(self) -> Sequence[Any]: ...
    def describe_tools(self, *, max_chars: int | None = ...) -> str: ...


# -- lines and fences

#: the line endings of Markdown (CommonMark): where a fence line can end
_MD_LINE_BREAK = re.compile("\r\n|[\n\r]")
#: an opening fence alone on its line: ``` or ~~~ (3 or more), then an optional info
#: string such as `js` or `javascript` (no backtick in it, as in CommonMark)
_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*[^`\s]*[ \t]*$")
_CLOSE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*$")


def js_lines(code: str) -> list[str]:
    """`code` split into lines as the engine numbers them, so ``js_lines(code)[n - 1]``
    is line n of an error. That is JavaScript's line terminators (``\\n``, ``\\r\\n``,
    ``\\r``, U+2028, U+2029), except where QuickJS-NG does not count them: U+2028 and
    U+2029 inside strings, template literals and comments, and a lone ``\\r`` inside a
    block comment (measured: `tests/test_render.py`). Never raises."""
    if "\r" not in code and "\u2028" not in code and "\u2029" not in code:
        return code.split("\n")
    lines: list[str] = []
    start = 0
    for at, end in _engine_breaks(code):
        lines.append(code[start:at])
        start = end
    lines.append(code[start:])
    return lines


def _engine_breaks(code: str) -> list[tuple[int, int]]:
    """The (start, end) of each line break QuickJS-NG counts in `code`: a small scan of
    strings, template literals (with ``${}`` inside) and comments. Regular expression
    literals are not told apart from code (one holding a quote can mislead the scan; it
    matters only for U+2028, U+2029 and lone ``\\r`` after it)."""
    breaks: list[tuple[int, int]] = []
    state = ""  # "" code, a quote character, "`" a template, "//" or "/*" a comment
    depth = 0  # braces open in code
    resume: list[int] = []  # the depth at which each open ${ ... } returns to its template
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if c == "\n" or c == "\r":
            end = i + 2 if code.startswith("\r\n", i) else i + 1
            if c == "\n" or end == i + 2 or state != "/*":
                breaks.append((i, end))
            if state == "//":
                state = ""
            i = end
            continue
        if c in "\u2028\u2029":
            if not state:
                breaks.append((i, i + 1))
            elif state == "//":
                state = ""
            i += 1
            continue
        if not state:
            if c in "'\"`":
                state = c
            elif code.startswith("//", i) or code.startswith("/*", i):
                state = code[i : i + 2]
                i += 1
            elif c == "{":
                depth += 1
            elif c == "}":
                if resume and resume[-1] == depth:
                    resume.pop()
                    state = "`"
                else:
                    depth -= 1
        elif state == "/*":
            if code.startswith("*/", i):
                state = ""
                i += 1
        elif state != "//":  # in a string or a template
            if c == "\\" and i + 1 < n and code[i + 1] not in "\r\n\u2028\u2029":
                i += 1  # an escaped character (a line continuation is counted above)
            elif c == state:
                state = ""
            elif state == "`" and code.startswith("${", i):
                resume.append(depth)
                state = ""
                i += 1
        i += 1
    return breaks


def strip_code_fences(code: str) -> str:
    """The script inside the markdown code fence a model wrapped it in, or `code` as it is.

    When the first non-blank line opens a fence (three or more backticks or tildes, with
    an optional language tag such as ``js``), the script is the code inside it: its line
    1 is the line after the fence, so line N of an error is line N of the fenced code,
    and columns are unchanged. The block ends at a closing fence (the same character, at
    least as long, alone on its line), or at the end of the text; a closing fence glued
    to the end of the last line (``x + 1```` ``` ````) is cut off. When more fenced blocks
    follow (prose between them), their code is joined on, each line in its place: the
    lines between blocks become empty lines. Text after the last block is dropped.
    A one-line ```` ```code``` ```` becomes ``code``. Line terminators inside the script
    are kept as they were (a U+2028 in a string literal stays one), and text that does
    not start with a fence is returned unchanged (no JavaScript program starts with
    three backticks). Never raises.
    """
    spans = _line_spans(code)
    lines = [code[start:end] for start, end, _ in spans]
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return code
    opened = _OPEN.match(lines[first])
    if opened is None:
        return _one_line_fence(code)
    fence = opened.group("fence")
    inside = True
    kept: list[str] = []  # the script's lines, with their terminators
    last_code = -1  # index in `kept` of the last line of code
    for i in range(first + 1, len(lines)):
        line, term = lines[i], code[spans[i][1] : spans[i][2]]
        if inside:
            closed = _CLOSE.match(line)
            if closed and closed.group("fence")[0] == fence[0]:
                if len(closed.group("fence")) >= len(fence):
                    inside = False
                    kept.append(term)
                    continue
            kept.append(line + term)
            last_code = len(kept) - 1
            continue
        reopened = _OPEN.match(line)
        if reopened is not None:
            fence, inside = reopened.group("fence"), True
        kept.append(term)  # a fence line, or prose between blocks: an empty line
    if last_code < 0:
        return ""
    script = kept[: last_code + 1]
    tail = _MD_LINE_BREAK.sub("", script[-1])  # the last line of code, without its break
    if inside and tail.rstrip().endswith(fence) and tail.strip() != fence:
        tail = tail.rstrip()[: -len(fence)]  # ```js\nx + 1``` : never closed on a line
    script[-1] = tail
    return "".join(script)


def _line_spans(code: str) -> list[tuple[int, int, int]]:
    """(start, end of text, end with its line break) of each Markdown line."""
    spans: list[tuple[int, int, int]] = []
    pos = 0
    for m in _MD_LINE_BREAK.finditer(code):
        spans.append((pos, m.start(), m.end()))
        pos = m.end()
    spans.append((pos, len(code), len(code)))
    return spans


def _one_line_fence(code: str) -> str:
    """```` ```code``` ```` on one line: the code; anything else unchanged."""
    stripped = code.strip()
    if len(stripped) < 7 or _MD_LINE_BREAK.search(stripped):
        return code
    for mark in ("```", "~~~"):
        if stripped.startswith(mark) and stripped.endswith(mark):
            inner = stripped[3:-3]
            if mark[0] in (inner[:1], inner[-1:]):  # ```` or more: not a simple fence
                return code
            return inner
    return code


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


# -- hints

#: globals of Node.js and browsers a model may expect, which do not exist here
_NOT_HERE = frozenset(
    "require module exports process Buffer fetch window document globalThis.fetch "
    "XMLHttpRequest localStorage setInterval __dirname __filename fs axios import".split()
)
_BAD_ARGS = re.compile(r"^(tools(?:\.[\w$]+|\[[^\]]+\]))\(.*?\) has invalid arguments: ", re.S)
_POSITIONAL = re.compile(
    r"^(tools(?:\.[\w$]+|\[[^\]]+\]))\(.*\) takes one object of named arguments", re.S
)
_CALL_FAILED = re.compile(r"^(tools(?:\.[\w$]+|\[[^\]]+\]))\(.*?\) failed: ", re.S)
_NOT_APPROVED = re.compile(r"^(tools(?:\.[\w$]+|\[[^\]]+\]))\(.*?\) was not approved", re.S)
_REFUSED = re.compile(r"^(tools(?:\.[\w$]+|\[[^\]]+\]))\(.*?\) was refused: ", re.S)
_NOT_GRANTED = re.compile(r"^(tools(?:\.[\w$]+|\[[^\]]+\])) is not a granted tool")
_NOT_DEFINED = re.compile(r"^'?([\w$.]+)'? is not defined")
_OF_UNDEFINED = re.compile(r"cannot read propert(?:y|ies) (?:'([^']*)' )?of (undefined|null)")
_TOOL_CALL = re.compile(r"\btools\s*(?:\.\s*([A-Za-z_$][\w$]*)|\[\s*(['\"])(.*?)\2\s*\])\s*\(")
_ASSIGNED_CALL = re.compile(
    r"(?:\b(?:const|let|var)\s+|^\s*|[;{]\s*)([A-Za-z_$][\w$]*)\s*=(?![=>])\s*"
    r"(tools\s*(?:\.\s*[A-Za-z_$][\w$]*|\[\s*['\"].*?['\"]\s*\]))\s*\(",
    re.M,
)
#: TypeScript on a line: a typed declaration, parameter or return type, an interface,
#: a type alias, an `as` cast, a non-null assertion, an enum
_TYPESCRIPT = re.compile(
    r"\b(?:const|let|var)\s+[\w$]+\s*:\s*[\w$<{\[(]"
    r"|\(\s*[\w$]+\s*\??\s*:\s*[\w$<{\[(\"']"
    r"|,\s*[\w$]+\s*\??\s*:\s*(?:string|number|boolean|any|unknown)\b"
    r"|<\s*(?:string|number|boolean|any|unknown)\s*[,>\[]"
    r"|\)\s*:\s*(?:Promise\s*<|string|number|boolean|void|any|unknown|[A-Z][\w$]*\s*[{=])"
    r"|^\s*(?:export\s+)?(?:interface|enum)\s+[A-Za-z_$]"
    r"|^\s*(?:export\s+)?type\s+[A-Za-z_$][\w$]*\s*(?:<[^>]*>)?\s*="
    r"|\bas\s+(?:const|string|number|boolean|any|unknown|[A-Z][\w$]*)\b"
    r"|[\w$)\]]!\.",
    re.M,
)
_PYTHON = re.compile(
    r"^\s*(?:def\s+\w+\s*\(|elif\b|print\s+\S|from\s+[\w.]+\s+import\b|import\s+\w+\s*$"
    r"|(?:if|for|while|else|try|except|with|class)\b[^{;]*:\s*$)"
)
_FENCE_LINE = re.compile(r"^[ \t]*(?:`{3,}|~{3,})", re.M)
_MODULES = re.compile(r"^\s*(?:import\s|export\s)", re.M)
_WORDS_OF_A_SLIP = re.compile(
    r"(?<![\w$'\"])(undefined|NaN)(?![\w$'\"])|\[object (Promise|Object)\]"
)


def hint(result: _Result, code: str | None = None, *, tools: Sequence[_Tool] = ()) -> str | None:
    """One sentence on what to do next, fitted to how `result` ended (`code` is the
    script as it ran, for hints that look at it; `tools` the granted bindings, whose
    declared result fields tell a misspelt field), or None when there is nothing to say.

    Errors: wrong arguments say to match the declaration (not to catch the error); a
    refused call says not to retry it unchanged; a misspelt tool says to pick a granted
    one; TypeScript, a top-level ``return``, ``await`` outside an async function and
    Python each get their own advice; a Promise in the result says which call lacks
    ``await``. Successes that look like a slip: a NaN in the value (a misspelt field, or
    a missing ``await``), a Promise or an object turned into text, ``undefined`` or
    ``NaN`` in the console output or in a string of the value. Where a field the script
    reads is not in the declared result of a tool it calls but close to one
    (``line_totl``), the hint names it, its line and the declared name. Never raises.
    """
    try:
        err = result.error
        if err is None or result.ok:
            return _success_hint(result, code, tools)
        return _error_hint(err, code, tools)
    except Exception:  # noqa: BLE001 - a hint is a nicety: never fail the text over it
        return None


def _error_hint(err: _Error, code: str | None, tools: Sequence[_Tool]) -> str | None:
    kind, msg = err.kind, err.message
    if kind == "syntax":
        return _syntax_hint(err, code)
    if kind == "binding_failed":
        m = _POSITIONAL.match(msg)
        if m:
            return (
                f"Pass {m.group(1)} one object of named arguments, as declared: "
                f"`await {m.group(1)}({{name: value}})`; the call did not run."
            )
        m = _BAD_ARGS.match(msg)
        if m:
            return (
                f"Give {m.group(1)} the arguments its declaration lists (those names and "
                "types, no others); the call did not run, so fix it rather than catch it."
            )
        m = _CALL_FAILED.match(msg)
        if m:
            return (
                f"{m.group(1)} itself failed, for the reason given: if that is about the "
                "arguments, fix them; if some calls may fail (an id that does not exist), "
                "catch the error with try/catch around that call and carry on."
            )
        return "A tool call failed: read its message, fix the call or catch the error."
    if kind == "binding_denied":
        m = _NOT_APPROVED.match(msg)
        if m:
            return (
                f"A person did not approve this {m.group(1)} call: do not retry it "
                "unchanged; go on without it, or ask the user."
            )
        if "tool calls per run" in msg:
            return "Make fewer tool calls in one run: fewer items, or split the work."
        return (
            "The policy refuses this call, and will refuse it again: do not retry it "
            "unchanged; do without it, or tell the user."
        )
    if kind == "runtime":
        return _runtime_hint(err, code, tools)
    return {
        "timeout": "The run hit its time limit (tool calls included): do less per run, "
        "make fewer or parallel tool calls, and look for a loop that never ends.",
        "memory": "The run hit its memory limit: keep less data at once (process it in "
        "pieces, return a summary).",
        "stack": "Recursion went too deep: use a loop instead.",
        "output_limit": "The console output or a value was too large: log less, and "
        "return a smaller result (a summary or a slice).",
        "internal": "The sandbox failed, not the script: you may run it once more.",
    }.get(kind)


def _syntax_hint(err: _Error, code: str | None) -> str:
    msg = err.message
    line = ""
    if code is not None and err.line is not None:
        lines = js_lines(code)
        if 1 <= err.line <= len(lines):
            line = lines[err.line - 1]
    before = line[: (err.column or 1) - 1] if line else ""
    if "return not in a function" in msg:
        return (
            "A script is not a function body: instead of `return x`, end the script with "
            "the expression `x` (an object in parentheses: `({a, b})`)."
        )
    if "```" in line or (code is not None and _FENCE_LINE.search(code)):
        return "Send only the JavaScript, without prose or markdown around it."
    if _TYPESCRIPT.search(line):
        return (
            "That is TypeScript: write plain JavaScript, without type annotations, "
            "interfaces, `as` casts or `!`."
        )
    if re.search(r"\bawait\s*$", before) or ("await" in msg and "async" in msg):
        return (
            "`await` works at the top level and inside `async` functions only: make the "
            "callback `async` (`items.map(async x => ...)`, then `await Promise.all(...)`)."
        )
    if _MODULES.match(line):
        return "No import or export: the granted tools are on the global `tools`."
    if _PYTHON.match(line):
        return "That is Python: write JavaScript."
    return "Fix the syntax at the marked position, then send the whole script again."


def _runtime_hint(err: _Error, code: str | None, tools: Sequence[_Tool]) -> str:
    msg = err.message
    m = _NOT_GRANTED.match(msg)
    if m:
        return (
            f"There is no {m.group(1)}: call one of the granted tools listed (as declared "
            "in the tool description)."
        )
    unawaited = _unawaited_call(code)
    if "Promise" in msg and "await" in msg:
        if unawaited:
            return f"Add `await`: {unawaited}."
        return "Add `await` before each tool call (`await Promise.all([...])` for several)."
    if "cannot be converted to JSON" in msg:
        return (
            "Return plain data (objects, arrays, strings, numbers): no functions, "
            "symbols or cycles."
        )
    m = _NOT_DEFINED.match(msg)
    if m:
        name = m.group(1)
        if name in _NOT_HERE or name.split(".")[0] in _NOT_HERE:
            return (
                "Only standard JavaScript and `tools` exist here: no require, fetch, "
                "process, window or other Node.js or browser APIs."
            )
        return f"`{name}` is not defined: check its spelling, and declare it before use."
    if "redeclaration of" in msg:
        return "A name is declared twice: rename one, or assign it without let/const."
    if _OF_UNDEFINED.search(msg) or "is not iterable" in msg or msg.endswith("not a function"):
        if unawaited:
            return f"A tool call is not awaited: {unawaited}."
        misspelt = _misspelt_field(code, tools)
        if misspelt:
            return f"Likely a misspelt field: {misspelt}."
        tools_used = _tools_called(code)
        if not tools_used:
            return (
                "A value is not what the script assumed: a misspelt name or field, or a "
                "value that is not an array or a function."
            )
        return (
            "A value is not what the script assumed: a misspelt field (compare with the "
            f"declared result type of {', '.join(tools_used)}), a result that is not an "
            "array, or a tool call without `await`."
        )
    return "An exception was thrown and not caught: fix its cause, or catch it with try/catch."


def _success_hint(result: _Result, code: str | None, tools: Sequence[_Tool]) -> str | None:
    value = result.value
    unawaited = _unawaited_call(code)
    texts = [e.message for e in result.logs]
    slips = _slips(value, texts)
    if "Promise" in slips or (unawaited and (value is None or "undefined" in slips)):
        if unawaited:
            return f"A tool call is not awaited: {unawaited}."
        return "A Promise was turned into text: add `await` before the tool call."
    nan_at = _nan_path(value)
    if nan_at is not None or value is None or slips & {"undefined", "NaN"}:
        misspelt = _misspelt_field(code, tools)
        if misspelt:
            symptom = (
                "The result is NaN"
                if nan_at is not None
                else "The result is null"
                if value is None
                else f"The output shows `{'undefined' if 'undefined' in slips else 'NaN'}`"
            )
            return f"{symptom}, likely from a misspelt field: {misspelt}."
    tools_used = _tools_called(code)
    fields = (
        f"check the field names read from {', '.join(tools_used)} against the declared "
        "result type, or return one result to see its fields"
        if tools_used
        else "check the names of the fields and variables it was computed from"
    )
    if nan_at is not None:
        at = "" if nan_at == "$" else f" at {nan_at}"
        return (
            f"The result holds NaN{at}: arithmetic on undefined (a missing or misspelt "
            f"field) or on a non-number; {fields}."
        )
    if "undefined" in slips or "NaN" in slips:
        word = "undefined" if "undefined" in slips else "NaN"
        return f"The output shows `{word}`: if a value was expected there, {fields}."
    if "Object" in slips:
        return (
            "An object was turned into text (`[object Object]`): use JSON.stringify(x), or "
            "return the object itself."
        )
    return None


#: properties of JavaScript's own values, never taken for a misspelt field
_JS_MEMBERS = frozenset(
    "length map filter reduce forEach find findIndex some every includes indexOf join "
    "slice splice push pop shift unshift concat sort reverse flat flatMap keys values "
    "entries toFixed toString toLowerCase toUpperCase trim split replace startsWith "
    "endsWith padStart padEnd then catch finally size get set has add delete all "
    "allSettled race resolve reject stringify parse assign fromEntries from of max min "
    "round floor ceil abs log warn error info debug".split()
)
_MEMBER = re.compile(r"(?<![\w$])(?:[A-Za-z_$][\w$]*|[)\]])\s*\??\.\s*([A-Za-z_$][\w$]*)")


def _misspelt_field(code: str | None, tools: Sequence[_Tool]) -> str | None:
    """The first field the script reads that the declared results of the tools it calls
    do not have, but have one close to, said with its line (``.line_totl`` on line 2:
    the result of tools.get_order has no field ``line_totl``; it declares
    ``line_total``), or None."""
    if not code or not tools:
        return None
    called = set(_tools_called(code))
    fields: dict[str, str] = {}
    for tool in tools:
        ref = f"tools.{tool.name}"
        if ref in called and tool.result_schema:
            for field in _schema_fields(tool.result_schema):
                fields.setdefault(field, ref)
    if not fields:
        return None
    for m in _MEMBER.finditer(code):
        name = m.group(1)
        if name in fields or name in _JS_MEMBERS:
            continue
        close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.8)
        if close:
            line = len(js_lines(code[: m.start(1)]))
            return (
                f"`.{name}` on line {line}: the result of {fields[close[0]]} has no field "
                f"`{name}` (it declares `{close[0]}`)"
            )
    return None


def _schema_fields(schema: Mapping[str, Any], budget: int = 5_000) -> list[str]:
    """Every property name declared anywhere in a JSON Schema (its $defs included)."""
    found: dict[str, None] = {}
    todo: list[Any] = [schema]
    while todo and budget > 0:
        budget -= 1
        node = todo.pop()
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                found.update((k, None) for k in props if isinstance(k, str))
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return list(found)


def _tools_called(code: str | None) -> list[str]:
    """``tools.x`` for each tool the script calls, in order of first call."""
    if not code:
        return []
    seen: dict[str, None] = {}
    for m in _TOOL_CALL.finditer(code):
        name = m.group(1) or m.group(3)
        if name and not name.startswith("$"):
            seen[f"tools.{name}" if m.group(1) else f"tools[{m.group(2)}{name}{m.group(2)}]"] = None
    return list(seen)


def _unawaited_call(code: str | None) -> str | None:
    """``tools.x(...) on line 2 is assigned without await`` for the first tool call whose
    Promise goes into a variable that is never awaited, or None."""
    if not code:
        return None
    for m in _ASSIGNED_CALL.finditer(code):
        var, call = m.group(1), re.sub(r"\s+", "", m.group(2))
        rest = code[m.end() :]
        if re.search(rf"\bawait\s+(?:\(\s*)?{re.escape(var)}\b", rest):
            continue  # const p = tools.x(); ...; await p
        if re.search(rf"Promise\.\w+\s*\(\s*\[[^\]]*\b{re.escape(var)}\b", rest):
            continue  # Promise.all([p, q])
        if re.search(rf"\b{re.escape(var)}\s*\.\s*then\s*\(", rest):
            continue
        line = len(js_lines(code[: m.start(2)]))
        return f"`{var} = {call}(...)` on line {line} needs `await {call}(...)`"
    return None


def _nan_path(value: Any, budget: int = 10_000) -> str | None:
    """Where the first NaN in `value` is (``$``, ``$.a[2].b``), or None; looks at no more
    than `budget` items."""
    todo: list[tuple[str, Any]] = [("$", value)]
    while todo and budget > 0:
        budget -= 1
        path, v = todo.pop()
        if isinstance(v, float) and math.isnan(v):
            return path
        if isinstance(v, dict):
            todo.extend(
                (f"{path}.{k}" if isinstance(k, str) and k.isidentifier() else f"{path}[{k!r}]", x)
                for k, x in reversed(list(v.items()))
            )
        elif isinstance(v, (list, tuple)):
            todo.extend((f"{path}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return None


def _slips(value: Any, texts: Sequence[str], budget: int = 2_000) -> set[str]:
    """The slips seen in the console output (`texts`) and in the strings of `value` (up
    to `budget` of them, each up to 1,000 characters): ``undefined``, ``NaN``,
    ``Promise`` (``[object Promise]``) and ``Object`` (``[object Object]``). A string
    of the value that is only ``undefined`` or ``NaN`` does not count (``typeof x``)."""
    found: set[str] = set()
    strings: list[str] = [t[:4000] for t in texts[:200]]
    todo: list[Any] = [value]
    while todo and budget > 0:
        budget -= 1
        v = todo.pop()
        if isinstance(v, str):
            if v not in ("undefined", "NaN"):
                strings.append(v[:1000])
        elif isinstance(v, dict):
            todo.extend(v.values())
        elif isinstance(v, (list, tuple)):
            todo.extend(v)
    for s in strings:
        for m in _WORDS_OF_A_SLIP.finditer(s):
            found.add(m.group(1) or m.group(2))
    return found


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
