"""Validation of a tool call's JSON arguments against a JSON Schema (the subset tools use).

Bindings made from a raw JSON Schema (an MCP tool's ``inputSchema``, a framework
tool's schema) are validated here before their function runs, as strictly as a
pydantic-typed binding: wrong types, missing required fields and (unless the schema
allows them) unknown fields are refused with one message naming each problem.

Checked: ``type`` (``integer`` is a whole number, booleans are never numbers),
``enum``, ``const``, ``properties``/``required``/``additionalProperties``, ``items``
and ``prefixItems``, ``anyOf``/``oneOf``/``allOf``, ``$ref`` into ``$defs`` or
``definitions``, numeric bounds and string/array lengths. Not checked (the tool
itself still may): ``pattern``, ``format`` and other keywords. A schema's
``additionalProperties`` defaults to *refusing* unknown fields on a top-level object
that declares its properties, as a native binding does; a top-level object with no
properties takes any (it is declared ``Record<string, unknown>``); nested objects follow
their schema.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: nesting followed before giving up (a recursive $ref with recursive data)
_MAX_DEPTH = 64
#: problems reported in one message
_MAX_PROBLEMS = 8


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if expected == "integer":
        return isinstance(value, int) or (math.isfinite(value) and value == int(value))
    return expected == "number"


def _js_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class _Checker:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(f"{path or '(arguments)'}: {message}")

    def resolve(self, ref: str) -> dict[str, Any] | None:
        node = resolve_ref(self.root, ref)
        return node if isinstance(node, dict) else None

    def valid(self, schema: Any, value: Any, depth: int) -> bool:
        """Whether `value` fits `schema`, without recording anything."""
        probe = _Checker(self.root)
        probe.check(schema, value, "", depth)
        return not probe.problems

    def check(self, schema: Any, value: Any, path: str, depth: int) -> None:
        if schema is True or schema is None or schema == {}:
            return
        if schema is False:
            self.add(path, "no value is allowed here")
            return
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return
        if "$ref" in schema:
            target = self.resolve(str(schema["$ref"]))
            if target is not None:
                self.check(target, value, path, depth + 1)
        problem = _value_problem(schema, value)
        if problem is not None:
            self.add(path, problem)
            return
        if not self.check_combinators(schema, value, path, depth):
            return
        if isinstance(value, dict):
            self.check_object(schema, value, path, depth)
        elif isinstance(value, list):
            self.check_array(schema, value, path, depth)
        elif isinstance(value, str):
            self.check_bounds(schema, len(value), path, "minLength", "maxLength", "characters")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.check_number(schema, value, path)

    def check_combinators(self, schema: dict[str, Any], value: Any, path: str, depth: int) -> bool:
        """anyOf/oneOf (one must fit) and allOf (each must); False if one refused."""
        for key in ("anyOf", "oneOf"):
            subs = schema.get(key)
            if isinstance(subs, list) and subs:
                if not any(self.valid(s, value, depth + 1) for s in subs):
                    self.add(path, "does not match any of the allowed shapes")
                    return False
        subs = schema.get("allOf")
        if isinstance(subs, list):
            for s in subs:
                self.check(s, value, path, depth + 1)
        return True

    def check_object(
        self, schema: dict[str, Any], value: dict[str, Any], path: str, depth: int
    ) -> None:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        for name in required if isinstance(required, list) else ():
            if name not in value:
                self.add(_join(path, name), "Field required")
        # the arguments object of a tool that declares its fields is closed unless it
        # says otherwise; one that declares none (`{"type": "object"}`) takes any
        extra = schema.get("additionalProperties", not (depth == 0 and props))
        for name, item in value.items():
            if name in props:
                self.check(props[name], item, _join(path, name), depth + 1)
            elif extra is False:
                self.add(_join(path, name), "Extra inputs are not permitted")
            elif isinstance(extra, dict):
                self.check(extra, item, _join(path, name), depth + 1)

    def check_array(self, schema: dict[str, Any], value: list[Any], path: str, depth: int) -> None:
        self.check_bounds(schema, len(value), path, "minItems", "maxItems", "items")
        prefix = schema.get("prefixItems")
        start = 0
        if isinstance(prefix, list):
            for i, (sub, item) in enumerate(zip(prefix, value, strict=False)):
                self.check(sub, item, f"{path}.{i}" if path else str(i), depth + 1)
            start = len(prefix)
        items = schema.get("items")
        if isinstance(items, dict):
            for i in range(start, len(value)):
                self.check(items, value[i], f"{path}.{i}" if path else str(i), depth + 1)

    def check_bounds(
        self, schema: dict[str, Any], n: int, path: str, lo_key: str, hi_key: str, unit: str
    ) -> None:
        lo, hi = schema.get(lo_key), schema.get(hi_key)
        if isinstance(lo, int) and n < lo:
            self.add(path, f"must have at least {lo} {unit}")
        if isinstance(hi, int) and n > hi:
            self.add(path, f"must have at most {hi} {unit}")

    def check_number(self, schema: dict[str, Any], value: float, path: str) -> None:
        for key, word in (
            ("minimum", ">="),
            ("maximum", "<="),
            ("exclusiveMinimum", ">"),
            ("exclusiveMaximum", "<"),
        ):
            bound = schema.get(key)
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                continue
            ok = {
                ">=": value >= bound,
                "<=": value <= bound,
                ">": value > bound,
                "<": value < bound,
            }[word]
            if not ok:
                self.add(path, f"must be {word} {bound}")


def _value_problem(schema: dict[str, Any], value: Any) -> str | None:
    """What `const`, `enum` or `type` says is wrong with `value`, or None."""
    if "const" in schema and value != schema["const"]:
        return f"must be {json.dumps(schema['const'])}"
    enum = schema.get("enum")
    if isinstance(enum, list) and not any(
        value == v and isinstance(value, bool) == isinstance(v, bool) for v in enum
    ):
        return "must be one of " + ", ".join(json.dumps(v) for v in enum[:10])
    types = schema.get("type")
    if isinstance(types, str):
        types = [types]
    if isinstance(types, list) and types:
        if not any(_type_ok(t, value) for t in types if isinstance(t, str)):
            return f"must be {' or '.join(str(t) for t in types)}, not {_js_name(value)}"
    return None


def resolve_ref(root: Any, ref: str) -> Any:
    """What a local JSON pointer (``#/$defs/Order``) points at in `root`, or None."""
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def problems(schema: dict[str, Any], value: Any) -> list[str]:
    """What is wrong with `value` under `schema`, as ``path: message`` lines (at most
    eight); empty when it fits. Never raises."""
    checker = _Checker(schema)
    checker.check(schema, value, "", 0)
    return checker.problems
