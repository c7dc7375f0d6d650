"""The script's text, as a model sends it and as the engine reads it: the code inside a
markdown fence, and lines as QuickJS-NG numbers them (``clambot_tools.render``
re-exports both)."""

from __future__ import annotations

import re

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
    return _BreakScan(code).run()


class _BreakScan:
    """The scan of `_engine_breaks`: each step reads the character at an index in the
    current state and returns the index to read next."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.breaks: list[tuple[int, int]] = []
        self.state = ""  # "" code, a quote character, "`" a template, "//" or "/*" a comment
        self.depth = 0  # braces open in code
        self.resume: list[int] = []  # the depth at which each ${ ... } returns to its template

    def run(self) -> list[tuple[int, int]]:
        i, code = 0, self.code
        while i < len(code):
            c = code[i]
            if c == "\n" or c == "\r":
                i = self._line_break(i, c)
            elif c in "\u2028\u2029":
                i = self._separator(i)
            elif not self.state:
                i = self._in_code(i, c)
            elif self.state == "/*":
                i = self._in_block_comment(i)
            elif self.state != "//":
                i = self._in_string(i, c)
            else:
                i += 1
        return self.breaks

    def _in_block_comment(self, i: int) -> int:
        if self.code.startswith("*/", i):
            self.state = ""
            return i + 2
        return i + 1

    def _line_break(self, i: int, c: str) -> int:
        end = i + 2 if self.code.startswith("\r\n", i) else i + 1
        if c == "\n" or end == i + 2 or self.state != "/*":
            self.breaks.append((i, end))
        if self.state == "//":
            self.state = ""
        return end

    def _separator(self, i: int) -> int:
        if not self.state:
            self.breaks.append((i, i + 1))
        elif self.state == "//":
            self.state = ""
        return i + 1

    def _in_code(self, i: int, c: str) -> int:
        if c in "'\"`":
            self.state = c
        elif self.code.startswith("//", i) or self.code.startswith("/*", i):
            self.state = self.code[i : i + 2]
            return i + 2
        elif c == "{":
            self.depth += 1
        elif c == "}":
            if self.resume and self.resume[-1] == self.depth:
                self.resume.pop()
                self.state = "`"
            else:
                self.depth -= 1
        return i + 1

    def _in_string(self, i: int, c: str) -> int:
        """A step inside a string or a template literal."""
        code = self.code
        if c == "\\" and i + 1 < len(code) and code[i + 1] not in "\r\n\u2028\u2029":
            return i + 2  # an escaped character (a line continuation is counted above)
        if c == self.state:
            self.state = ""
        elif self.state == "`" and code.startswith("${", i):
            self.resume.append(self.depth)
            self.state = ""
            return i + 2
        return i + 1


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
