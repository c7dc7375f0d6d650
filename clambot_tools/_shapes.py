"""Result shapes learned from what tools really return (opt-in).

Most framework tools are annotated ``-> dict`` or not at all, so the declaration can
only say their results are ``unknown``, and a misspelt field in a script is a silent
``undefined``. A `ResultShapes` given to a Sandbox watches each successful call's JSON
result and keeps its *shape* per tool: which fields objects have (a field seen in every
result is required, one seen in some is optional), which JSON types values have, what
arrays hold. Never a value: strings, numbers and booleans are kept as their type only,
and objects whose keys look like data (more than ``max_keys`` of them, or keys that are
not identifier-like: ids, emails, dates) are kept as records of their value type.

Bounded per tool (depth, keys per object, array items sampled, union variants, nodes)
and in tools; results larger than ``max_bytes`` are not read. The declaration uses an
observed shape only for a tool whose result type is otherwise unknown, and marks it as
observed.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

_IDENT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ORDER = ("boolean", "number", "string", "array", "object", "record", "null")

# A shape is a dict from JSON kind to what is known of values of that kind:
#   "null" / "boolean" / "number" / "string": True
#   "array": the shape of the items, or None while every array seen was empty
#   "object": (fields: dict[name, shape], required: frozenset[name])
#   "record": the shape of the values, or None for empty records
Shape = dict[str, Any]


class ResultShapes:
    """Shapes of tool results observed at run time, per tool name; thread-safe.

    Give one to ``Sandbox(result_shapes=...)`` (or pass ``result_shapes=True`` for a
    Sandbox's own); share one between Sandboxes to learn across them.

    Args:
        max_tools: tools remembered (later tools are not learned).
        max_depth: nesting kept; deeper values are ``unknown``.
        max_keys: an object with more keys is kept as a record.
        max_items: array items (and record values) sampled per result.
        max_variants: distinct JSON kinds one value may have before it is ``unknown``.
        max_nodes: size of one tool's shape; past it the shape stops growing.
        max_bytes: results larger than this (as JSON) are not read.
        on_change: called with the tool's name when its shape changed (from the
            thread that ran the call; exceptions are swallowed). More listeners can
            be added with `listen`.
    """

    def __init__(
        self,
        *,
        max_tools: int = 256,
        max_depth: int = 6,
        max_keys: int = 40,
        max_items: int = 20,
        max_variants: int = 4,
        max_nodes: int = 400,
        max_bytes: int = 256 * 1024,
        on_change: Callable[[str], object] | None = None,
    ) -> None:
        self.max_tools = max_tools
        self.max_depth = max_depth
        self.max_keys = max_keys
        self.max_items = max_items
        self.max_variants = max_variants
        self.max_nodes = max_nodes
        self.max_bytes = max_bytes
        self._listeners: list[Callable[[str], object]] = [on_change] if on_change else []
        self._shapes: dict[str, Shape] = {}
        self._calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._version = 0

    @property
    def version(self) -> int:
        """Grows each time a shape changes (to know when to rebuild a declaration)."""
        return self._version

    def calls(self, name: str) -> int:
        """How many results of tool `name` were observed."""
        with self._lock:
            return self._calls.get(name, 0)

    def observe(self, name: str, result_json: bytes) -> None:
        """Learn from one successful result of tool `name` (its JSON bytes, as the
        script gets it). Never raises."""
        if len(result_json) > self.max_bytes:
            return
        try:
            value = json.loads(result_json)
        except (ValueError, RecursionError):
            return
        seen = self._shape(value, 0)
        changed = False
        with self._lock:
            old = self._shapes.get(name)
            if old is None and len(self._shapes) >= self.max_tools:
                return
            self._calls[name] = self._calls.get(name, 0) + 1
            merged = seen if old is None else self._merge(old, seen, 0)
            if old is not None and _size(merged) > self.max_nodes:
                return
            if merged != old:
                self._shapes[name] = merged
                self._version += 1
                changed = True
        if changed:
            for listener in list(self._listeners):
                try:
                    listener(name)
                except Exception:  # noqa: BLE001 - a listener's failure must not fail the call
                    pass

    def listen(self, callback: Callable[[str], object]) -> None:
        """Also call `callback` with a tool's name whenever its shape changes."""
        with self._lock:
            self._listeners.append(callback)

    def schema(self, name: str) -> dict[str, Any] | None:
        """The JSON Schema of the results of tool `name` seen so far (None if none)."""
        with self._lock:
            shape = self._shapes.get(name)
        return None if shape is None else _to_schema(shape)

    def clear(self) -> None:
        """Forget every shape."""
        with self._lock:
            self._shapes.clear()
            self._calls.clear()
            self._version += 1

    # -- shapes

    def _shape(self, value: Any, depth: int) -> Shape:
        if depth > self.max_depth:
            return {}
        if value is None:
            return {"null": True}
        if isinstance(value, bool):
            return {"boolean": True}
        if isinstance(value, (int, float)):
            return {"number": True}
        if isinstance(value, str):
            return {"string": True}
        if isinstance(value, list):
            items: Shape | None = None
            for x in value[: self.max_items]:
                s = self._shape(x, depth + 1)
                items = s if items is None else self._merge(items, s, depth + 1)
            return {"array": items}
        if isinstance(value, dict):
            keys = list(value)
            if len(keys) > self.max_keys or not all(_IDENT_KEY.match(k) for k in keys):
                vals: Shape | None = None
                for x in list(value.values())[: self.max_items]:
                    s = self._shape(x, depth + 1)
                    vals = s if vals is None else self._merge(vals, s, depth + 1)
                return {"record": vals}
            fields = {k: self._shape(v, depth + 1) for k, v in value.items()}
            return {"object": (fields, frozenset(fields))}
        return {}

    def _merge(self, a: Shape, b: Shape, depth: int) -> Shape:
        if not a or not b:
            return {}  # unknown absorbs everything
        out = dict(a)
        for kind, detail in b.items():
            if kind not in out:
                out[kind] = detail
                continue
            mine = out[kind]
            if kind in ("array", "record"):
                if mine is None or detail is None:
                    out[kind] = mine if detail is None else detail
                else:
                    out[kind] = self._merge(mine, detail, depth + 1)
            elif kind == "object":
                fa, ra = mine
                fb, rb = detail
                fields = dict(fa)
                for k, s in fb.items():
                    fields[k] = s if k not in fields else self._merge(fields[k], s, depth + 1)
                if len(fields) > self.max_keys:  # too many distinct keys: a record
                    vals: Shape | None = None
                    for s in fields.values():
                        vals = s if vals is None else self._merge(vals, s, depth + 1)
                    del out["object"]
                    prev = out.get("record")
                    out["record"] = (
                        vals if prev is None or vals is None else self._merge(prev, vals, depth)
                    )
                    continue
                out[kind] = (fields, ra & rb)
        if "object" in out and "record" in out:  # an object seen as a record: one record
            fields, _ = out.pop("object")
            vals = out["record"]
            for s in fields.values():
                vals = s if vals is None else self._merge(vals, s, depth + 1)
            out["record"] = vals
        if len(out) > self.max_variants:
            return {}
        return out


def _size(shape: Shape | None) -> int:
    if not shape:
        return 1
    n = 0
    for kind, detail in shape.items():
        n += 1
        if kind in ("array", "record"):
            n += _size(detail)
        elif kind == "object":
            n += sum(_size(s) for s in detail[0].values())
    return n


def _to_schema(shape: Shape | None) -> dict[str, Any]:
    if not shape:
        return {}
    parts: list[dict[str, Any]] = []
    for kind in _ORDER:
        if kind not in shape:
            continue
        detail = shape[kind]
        if kind == "array":
            parts.append({"type": "array", "items": _to_schema(detail)})
        elif kind == "record":
            parts.append({"type": "object", "additionalProperties": _to_schema(detail)})
        elif kind == "object":
            fields, required = detail
            parts.append(
                {
                    "type": "object",
                    "properties": {k: _to_schema(s) for k, s in fields.items()},
                    "required": [k for k in fields if k in required],
                }
            )
        else:
            parts.append({"type": kind})
    return parts[0] if len(parts) == 1 else {"anyOf": parts}
