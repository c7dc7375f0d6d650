"""Hints: one sentence on what a model should do next, fitted to how its run ended
(``clambot_tools.render.hint``). They read the error's kind and the core's wording of it
(``_wording``), the script and the granted tools' declared results; they never raise."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ._source import js_lines

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
