"""JSON in and out of the guest at any nesting depth, whatever the caller's stack.

The C parser and encoder in ``json`` recurse once per nesting level and raise
RecursionError when the nesting plus the caller's own depth passes the interpreter's
limit: a 990-deep array (the guest allows 1000 levels) fails from a caller that is 200
frames deep. Both functions here take the fast C path and, only if it runs out of
stack, redo the work with loops that use no stack per level.
"""

from __future__ import annotations

import json
import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_CONSTANTS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}


def loads(text: str) -> Any:
    """Parse JSON (with ``NaN`` and ``Infinity``, as ``json.loads`` reads them) at any depth.

    Raises ValueError if `text` is not JSON.
    """
    try:
        return json.loads(text)
    except RecursionError:
        return _loads_flat(text)


def _ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _expect(text: str, i: int, char: str) -> int:
    if text[i : i + 1] != char:
        raise ValueError(f"expected {char!r} at {i}")
    return i + 1


def _key(text: str, i: int) -> tuple[str, int]:
    """A member's key and the position after its colon."""
    i = _expect(text, i, '"')
    key, i = scanstring(text, i)
    i = _expect(text, _ws(text, i), ":")
    return key, _ws(text, i)


def _scalar(text: str, i: int) -> tuple[Any, int]:
    for word, value in _CONSTANTS.items():
        if text.startswith(word, i):
            return value, i + len(word)
    m = _NUMBER.match(text, i)
    if m is None or m.end() == i:
        raise ValueError(f"no JSON value at {i}")
    if m.group(1) or m.group(2):
        return float(m.group(0)), m.end()
    return int(m.group(0)), m.end()


def _loads_flat(text: str) -> Any:
    """`loads` with an explicit stack instead of recursion."""
    # each frame: [container, key of the value being parsed (for objects)]
    stack: list[list[Any]] = []
    i = _ws(text, 0)
    while True:
        c = text[i : i + 1]
        value: Any
        if c == "{":
            i = _ws(text, i + 1)
            if text[i : i + 1] == "}":
                value, i = {}, i + 1
            else:
                key, i = _key(text, i)
                stack.append([{}, key])
                continue
        elif c == "[":
            i = _ws(text, i + 1)
            if text[i : i + 1] == "]":
                value, i = [], i + 1
            else:
                stack.append([[], None])
                continue
        elif c == '"':
            value, i = scanstring(text, i + 1)
        else:
            value, i = _scalar(text, i)
        # attach the value, closing every container the text closes after it
        while True:
            if not stack:
                if _ws(text, i) != len(text):
                    raise ValueError(f"extra data at {i}")
                return value
            frame = stack[-1]
            container = frame[0]
            if isinstance(container, dict):
                container[frame[1]] = value
            else:
                container.append(value)
            i = _ws(text, i)
            c = text[i : i + 1]
            if c == ",":
                i = _ws(text, i + 1)
                if isinstance(container, dict):
                    frame[1], i = _key(text, i)
                break
            if c == ("}" if isinstance(container, dict) else "]"):
                stack.pop()
                value, i = container, i + 1
                continue
            raise ValueError(f"expected ',' or a closing bracket at {i}")


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class TooDeep(ValueError):
    """A value nested deeper than `dumps` writes."""


#: deepest nesting `dumps` writes (the guest reads a tool result back with QuickJS's
#: recursive parser, which runs out of native stack some way past 20,000 levels)
MAX_DEPTH = 10_000


def dumps(value: Any) -> str:
    """Compact JSON of `value` (dicts with str keys, lists, str, int, float, bool, None)
    at any depth up to MAX_DEPTH; NaN and infinities are refused as by
    ``json.dumps(allow_nan=False)``.

    Raises TypeError or ValueError for anything JSON cannot hold, or nested deeper.
    """
    try:
        return _ENCODER.encode(value)
    except RecursionError:
        if _deeper_than(value, MAX_DEPTH):
            raise TooDeep(f"it is nested more than {MAX_DEPTH} levels deep") from None
        return _dumps_flat(value)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests lists/dicts more than `limit` levels deep (no recursion)."""
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            todo.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, (list, tuple)):
            todo.extend((v, depth + 1) for v in item if isinstance(v, (dict, list, tuple)))
    return False


class _Text:
    """A piece of JSON text to emit as is (and, at a container's end, the id of the
    container it closes)."""

    __slots__ = ("closes", "text")

    def __init__(self, text: str, closes: int | None = None) -> None:
        self.text = text
        self.closes = closes


def _dumps_flat(value: Any) -> str:
    out: list[str] = []
    todo: list[Any] = [value]  # values still to write, and _Text pieces
    open_ids: set[int] = set()  # containers being written: meeting one again is a cycle
    while todo:
        item = todo.pop()
        if isinstance(item, _Text):
            out.append(item.text)
            if item.closes is not None:
                open_ids.discard(item.closes)
            continue
        if isinstance(item, (dict, list, tuple)):
            if id(item) in open_ids:
                raise ValueError("Circular reference detected")
            open_ids.add(id(item))
            parts: list[Any] = []
            if isinstance(item, dict):
                out.append("{")
                for n, (k, v) in enumerate(item.items()):
                    if not isinstance(k, str):
                        raise TypeError(f"keys must be str, not {type(k).__name__}")
                    parts.append(_Text(("," if n else "") + _ENCODER.encode(k) + ":"))
                    parts.append(v)
                parts.append(_Text("}", id(item)))
            else:
                out.append("[")
                for n, v in enumerate(item):
                    if n:
                        parts.append(_Text(","))
                    parts.append(v)
                parts.append(_Text("]", id(item)))
            todo.extend(reversed(parts))
        else:
            out.append(_ENCODER.encode(item))
    return "".join(out)
