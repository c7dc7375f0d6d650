"""The model's view of the API: a TypeScript-style declaration of `tools`.

Built from each binding's pydantic schema and description, so an agent framework can
put it in the tool description and a model calls bindings right the first time.
Handles `$ref`/`$defs`, unions (`anyOf`/`oneOf`), enums and consts, nullable fields,
arrays, tuples, records and nested objects; field descriptions become doc comments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ._bindings import Binding, type_hints

_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_RESERVED = frozenset(
    "break case catch class const continue debugger default delete do else enum export "
    "extends false finally for function if import in instanceof new null return super "
    "switch this throw true try typeof var void while with yield let static await".split()
)


def _key(name: str) -> str:
    """A property name as TypeScript accepts it: bare when it can be, else quoted."""
    return name if _IDENT.match(name) and name not in _RESERVED else json.dumps(name)


def _doc(text: str, indent: str) -> list[str]:
    text = text.strip().replace("*/", "*\\/")
    if not text:
        return []
    lines = text.splitlines()
    if len(lines) == 1:
        return [f"{indent}/** {lines[0]} */"]
    return [f"{indent}/**", *(f"{indent} * {ln}".rstrip() for ln in lines), f"{indent} */"]


class _Writer:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.resolving: set[str] = set()

    def type_of(self, schema: Any, indent: str) -> str:
        if not isinstance(schema, dict) or not schema:
            return "unknown"
        if "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            target = self.defs.get(name)
            if target is None or name in self.resolving:
                return "unknown"  # unknown or recursive: stay honest rather than loop
            self.resolving.add(name)
            try:
                return self.type_of(target, indent)
            finally:
                self.resolving.discard(name)
        if "const" in schema:
            return json.dumps(schema["const"])
        if "enum" in schema:
            return " | ".join(json.dumps(v) for v in schema["enum"]) or "never"
        for key in ("anyOf", "oneOf"):
            if key in schema:
                parts: list[str] = []
                for sub in schema[key]:
                    part = self.type_of(sub, indent)
                    if part not in parts:
                        parts.append(part)
                return " | ".join(parts) or "unknown"
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.type_of(schema["allOf"][0], indent)
        t = schema.get("type")
        if isinstance(t, list):
            return " | ".join(self.type_of({**schema, "type": x}, indent) for x in t)
        if t == "string":
            return "string"
        if t in ("integer", "number"):
            return "number"
        if t == "boolean":
            return "boolean"
        if t == "null":
            return "null"
        if t == "array":
            if "prefixItems" in schema:
                inner = ", ".join(self.type_of(s, indent) for s in schema["prefixItems"])
                return f"[{inner}]"
            item = self.type_of(schema.get("items", {}), indent)
            return f"Array<{item}>" if " " in item else f"{item}[]"
        if t == "object" or "properties" in schema:
            return self.object_of(schema, indent)
        return "unknown"

    def object_of(self, schema: dict[str, Any], indent: str) -> str:
        props: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        if not props:
            if isinstance(extra, dict):
                return f"Record<string, {self.type_of(extra, indent)}>"
            return "Record<string, unknown>"
        required = set(schema.get("required", []))
        inner = indent + "  "
        lines = ["{"]
        for name, sub in props.items():
            desc = sub.get("description", "") if isinstance(sub, dict) else ""
            if isinstance(sub, dict) and "default" in sub:
                default = json.dumps(sub["default"])
                desc = f"{desc} (default: {default})".strip()
            lines += _doc(desc, inner)
            opt = "" if name in required else "?"
            lines.append(f"{inner}{_key(name)}{opt}: {self.type_of(sub, inner)};")
        if isinstance(extra, dict):
            lines.append(f"{inner}[key: string]: {self.type_of(extra, inner)};")
        lines.append(f"{indent}}}")
        return "\n".join(lines)


def _return_type(b: Binding) -> str:
    if b.result_schema is not None:
        return _Writer(b.result_schema.get("$defs", {})).type_of(b.result_schema, "  ")
    hints = type_hints(b.func)
    if "return" not in hints:
        return "unknown"
    ann = hints["return"]
    if ann is None or ann is type(None):
        return "null"
    try:
        from pydantic import TypeAdapter

        schema = TypeAdapter(ann).json_schema()
    except Exception:  # noqa: BLE001 - any type pydantic cannot describe stays unknown
        return "unknown"
    return _Writer(schema.get("$defs", {})).type_of(schema, "  ")


def describe(bindings: Sequence[Binding]) -> str:
    """The TypeScript declaration of `tools` for these bindings (see module doc)."""
    lines = [
        "/** Tools this script can call. Every call is async: `await tools.name({...})`. */",
        "declare const tools: {",
    ]
    for b in bindings:
        schema = b.arguments_schema()
        w = _Writer(schema.get("$defs", {}))
        args = w.object_of(schema, "  ") if schema.get("properties") else "{}"
        optional = "?" if not schema.get("required") else ""
        doc = b.description
        if b.effects != ("read",):
            doc = f"{doc}\n(effects: {', '.join(b.effects)})".strip()
        lines += _doc(doc, "  ")
        lines.append(f"  {_key(b.name)}(args{optional}: {args}): Promise<{_return_type(b)}>;")
    lines.append("};")
    return "\n".join(lines)
