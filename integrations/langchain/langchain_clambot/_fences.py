"""Markdown code fences around a model's script, and JavaScript's own idea of lines."""

from __future__ import annotations

import re

#: the line terminators of JavaScript (ECMA-262 LineTerminatorSequence), so line N here
#: is line N in the engine's error positions
_JS_LINES = re.compile(r"\r\n|[\n\r\u2028\u2029]")
#: an opening fence alone on its line: ``` or ~~~ (3 or more), then an optional info
#: string such as `js` or `javascript`
_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[ \t]*$")


def js_lines(code: str) -> list[str]:
    """Split `code` into lines the way JavaScript counts them (``\\n``, ``\\r\\n``,
    ``\\r``, U+2028 and U+2029 end a line); never raises."""
    return _JS_LINES.split(code)


def strip_code_fences(code: str) -> str:
    """Return the script inside a markdown code fence, or `code` unchanged.

    A model sometimes sends ```` ```js\\n...\\n``` ```` instead of bare code. When the
    first non-blank line is an opening fence (backticks or tildes, with an optional
    language tag), the script is every line after it up to a matching closing fence on
    the last non-blank line (or to the end if the fence is never closed). Nothing else
    is touched: blank lines and indentation inside the fence stay, so the engine's
    line numbers are the lines of the fenced code, which is the script the model
    meant. Text that does not start with a fence is returned as is (a JavaScript
    program cannot usefully start with three backticks). Never raises.
    """
    lines = js_lines(code)
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        return code
    m = _OPEN.match(lines[first])
    if m is None:
        return code
    fence = m.group("fence")
    last = max(i for i, ln in enumerate(lines) if ln.strip())
    closing = lines[last].strip()
    end = len(lines)  # lines[first + 1 : end] are the script
    if last > first and len(closing) >= len(fence) and closing == fence[0] * len(closing):
        end = last
    if end <= first + 1:
        return ""
    # Slice the original text (its own line terminators kept: a U+2028 inside a string
    # literal must stay one), from the line after the fence to the end of line end-1.
    starts = [0] + [t.end() for t in _JS_LINES.finditer(code)]
    stop = starts[end] if end < len(lines) else len(code)
    script = code[starts[first + 1] : stop]
    if end < len(lines):  # drop the terminator that ended the last line of the script
        term = _JS_LINES.search(code, starts[end - 1])
        if term is not None and term.end() == stop:
            script = script[: len(script) - (term.end() - term.start())]
    return script
