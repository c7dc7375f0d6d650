"""Text a person or a model reads, made safe: the one place that neutralises script-made
text and makes it encode.

Anything a script produces (values, log messages, error names and messages, binding
names that came from elsewhere) may hold terminal escape sequences (ANSI colours, OSC
title or hyperlink sequences, a C1 ``CSI``), bidi overrides, invisible characters or lone
surrogates that no encoder accepts. Everything that shows such text (``render``, the
notebook display, the ``clambot`` command and its report) goes through this module:

* `visible` replaces every character that could act on a terminal or hide text with a
  printable escape (``\\x1b``, ``\\u202e``, ``\\ud800``), so the text shown is inert,
  always encodes, and says what was there;
* `json_text` writes JSON that is valid and encodes to UTF-8 whatever the data: lone
  surrogates become U+FFFD (counted, so the caller can say so) or, for text a model or
  a person reads, ``\\ud800`` escapes (as JavaScript's ``JSON.stringify`` writes them);
  invisible characters become ``\\uXXXX`` escapes inside their strings (the parsed value
  is unchanged); and any depth of nesting is written (iteratively);
* `encodable` gives JSON-like data whose strings and keys all encode (lone surrogates
  become U+FFFD), for serialisers that refuse them (pydantic's JSON, msgpack).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Characters never shown raw: C0/C1 controls (but tab and newline), DEL, bidi embeddings,
# overrides and isolates ("Trojan Source"), zero-width marks, line/paragraph separators,
# the BOM, interlinear annotations, tag characters (invisible "ASCII smuggling") and
# lone surrogates (which could not even be encoded to UTF-8).
INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
    "\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e007f]"
)
SURROGATE = re.compile("[\ud800-\udfff]")
#: in JSON text, the characters to escape: those of INVISIBLE that json leaves raw
_JSON_RAW = re.compile(
    "[\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)
_NON_ASCII = re.compile("[^\x00-\x7f]")
#: nesting deeper than this is not indented further (indenting every level would make
#: the text grow with the square of the depth)
MAX_INDENT_DEPTH = 64


def _escape(m: re.Match[str]) -> str:
    cp = ord(m.group())
    if cp < 0x100:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def visible(text: str, *, keep_newlines: bool = True) -> str:
    """`text` with control, invisible and bidi characters and lone surrogates replaced
    by printable escapes (``\\x1b``, ``\\u202e``, ``\\ud800``); newlines kept unless
    `keep_newlines` is false (then ``\\n``). The result always encodes to UTF-8."""
    out = INVISIBLE.sub(_escape, text)
    if not keep_newlines:
        out = out.replace("\n", "\\n")
    return out


def _json_escape(m: re.Match[str]) -> str:
    """A character as the JSON escape(s) of its UTF-16 code units."""
    cp = ord(m.group())
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def json_text(
    value: Any,
    *,
    indent: int | None = 2,
    ascii_only: bool = False,
    compact: bool = False,
    js_numbers: bool = False,
    escape_surrogates: bool = False,
) -> tuple[str, int]:
    """`value` as JSON that is valid, encodes to UTF-8 and shows no control character.

    Returns the text and the number of lone surrogates found. They become U+FFFD, or
    with `escape_surrogates` ``\\udXXX`` escapes (what ``JSON.stringify`` writes: the
    same string for a JavaScript or Python reader, but some strict parsers refuse it,
    so JSON meant for other programs keeps the default). NaN and the infinities become
    ``null`` (as ``JSON.stringify`` writes them), or with `js_numbers` ``NaN``,
    ``Infinity`` and ``-Infinity`` (for a reader, not a parser). Keys that are not
    strings become strings; values JSON has no type for become their ``str()``; ints
    too long for ``str()`` become a string saying so. `compact` leaves out the spaces
    after ``,`` and ``:`` (with ``indent=None``). With `ascii_only`, every non-ASCII
    character is a ``\\uXXXX`` escape (for an output that cannot encode UTF-8). Never
    raises for any nesting depth (past MAX_INDENT_DEPTH levels, lines are indented no
    further).
    """
    separators = (",", ":") if compact else None
    try:
        text = json.dumps(
            value,
            ensure_ascii=False,
            indent=indent,
            allow_nan=js_numbers,
            separators=separators if indent is None else None,
        )
    except (ValueError, TypeError, RecursionError):
        text = _IterativeEncoder(indent, compact=compact, js_numbers=js_numbers).encode(value)
    replaced = 0
    if SURROGATE.search(text):
        if escape_surrogates:
            text, replaced = SURROGATE.subn(_json_escape, text)
        else:
            text, replaced = SURROGATE.subn("\ufffd", text)
    # These characters only occur inside strings, where an escape keeps the same value.
    text = _JSON_RAW.sub(_json_escape, text)
    if ascii_only:
        text = _NON_ASCII.sub(_json_escape, text)
    return text, replaced


def encodable(value: Any) -> tuple[Any, int]:
    """`value` (JSON-like data: dicts, lists, tuples, strings, numbers...) with every lone
    surrogate in its strings and keys replaced by U+FFFD, and how many were replaced.
    Returns `value` itself when there are none; otherwise new containers (tuples become
    lists), any depth. Values of other types are kept as they are."""
    try:
        probe = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (ValueError, TypeError, RecursionError):
        pass  # deep, or not JSON data: look at every string
    else:
        if not SURROGATE.search(probe):
            return value, 0
    count = 0
    root: list[Any] = [None]
    # (container to fill, its key or index, the value to put there)
    todo: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while todo:
        parent, key, v = todo.pop()
        if isinstance(v, str):
            parent[key], n = SURROGATE.subn("\ufffd", v)
            count += n
        elif isinstance(v, dict):
            d: dict[Any, Any] = {}
            parent[key] = d
            for k, x in v.items():
                if isinstance(k, str):
                    k, n = SURROGATE.subn("\ufffd", k)
                    count += n
                d[k] = None  # keeps the order; filled below
                todo.append((d, k, x))
        elif isinstance(v, (list, tuple)):
            items: list[Any] = [None] * len(v)
            parent[key] = items
            todo.extend((items, i, x) for i, x in enumerate(v))
        else:
            parent[key] = v
    return root[0], count


class _IterativeEncoder:
    """json.dumps's layout without recursion, for data json.dumps refuses: nesting past
    the interpreter's recursion limit, NaN, or objects JSON has no type for."""

    def __init__(
        self, indent: int | None, *, compact: bool = False, js_numbers: bool = False
    ) -> None:
        self.indent = indent
        self.compact = compact and indent is None
        self.js_numbers = js_numbers

    def _scalar(self, v: Any) -> str:
        if v is None or v is True or v is False:
            return "null" if v is None else ("true" if v else "false")
        if isinstance(v, int):
            try:
                return str(int(v))
            except ValueError:  # beyond sys.get_int_max_str_digits()
                return json.dumps(f"<an integer of {v.bit_length()} bits>")
        if isinstance(v, float):
            if math.isfinite(v):
                return repr(v)
            if not self.js_numbers:
                return "null"
            return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        try:
            return json.dumps(str(v), ensure_ascii=False)
        except Exception:  # noqa: BLE001 - a str() that raises: the type's name will do
            return json.dumps(f"<{type(v).__name__}>")

    def encode(self, value: Any) -> str:
        out: list[str] = []
        nl = self.indent is not None
        pad = " " * (self.indent or 0)
        item_sep = "," if nl or self.compact else ", "
        key_sep = ":" if self.compact else ": "
        # per open container: an iterator of (key or None, value), its closing bracket
        # and its depth
        stack: list[tuple[Any, str, int]] = []

        def open_container(v: Any, depth: int) -> bool:
            if isinstance(v, dict):
                items = iter(v.items())
                if not v:
                    out.append("{}")
                    return False
                out.append("{")
                stack.append((items, "}", depth + 1))
                return True
            if isinstance(v, (list, tuple)):
                if not v:
                    out.append("[]")
                    return False
                out.append("[")
                stack.append((iter((None, x) for x in v), "]", depth + 1))
                return True
            out.append(self._scalar(v))
            return False

        open_container(value, 0)
        first = True
        while stack:
            items, close, depth = stack[-1]
            nxt: tuple[Any, Any] | None = next(items, None)
            if nxt is None:
                stack.pop()
                if nl:
                    out.append("\n" + pad * min(depth - 1, MAX_INDENT_DEPTH))
                out.append(close)
                first = False
                continue
            if not first:
                out.append(item_sep)
            if nl:
                out.append("\n" + pad * min(depth, MAX_INDENT_DEPTH))
            key, v = nxt
            if close == "}":
                k = key if isinstance(key, str) else self._scalar(key).strip('"')
                out.append(json.dumps(k, ensure_ascii=False) + key_sep)
            first = open_container(v, depth)
        return "".join(out)
