"""The JSON Schema of what a function returns, read from its return annotation.

A binding's result reaches the script as pydantic's JSON mode encodes it (see
``to_json_bytes``), so the schema here describes that JSON: dates, UUIDs, decimals and
bytes are strings, enums their values, sets and tuples arrays, and every field of a
dataclass, TypedDict-with-required-keys or pydantic model is present.

Read directly, without pydantic, for what users write most: ``typing.TypedDict``
(which pydantic refuses on Python 3.10/3.11), ``typing_extensions.TypedDict``,
dataclasses, named tuples, enums, ``Literal``, unions, containers; pydantic models
through their own serialisation schema. Classes become ``$defs`` entries named after
the class, so a declaration can name a shape that several tools share.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import inspect
import ipaddress
import pathlib
import types
import typing
import uuid
from collections import abc
from collections.abc import Callable
from typing import Any

import typing_extensions

#: annotations whose JSON form is a string
_STRINGS: tuple[type, ...] = (
    str,
    bytes,
    bytearray,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    uuid.UUID,
    pathlib.PurePath,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)
_ARRAYS = frozenset(
    {
        list,
        set,
        frozenset,
        abc.Sequence,
        abc.MutableSequence,
        abc.Set,
        abc.MutableSet,
        abc.Iterable,
        abc.Collection,
    }
)
_MAPPINGS = frozenset({dict, abc.Mapping, abc.MutableMapping})
_NESTING = 40


class _Unknown(Exception):
    """The annotation says nothing usable about the JSON (Any, an arbitrary class)."""


def _is_typeddict(tp: Any) -> bool:
    return typing.is_typeddict(tp) or typing_extensions.is_typeddict(tp)


def _says_nothing(ann: Any) -> bool:
    """Any, object, no annotation, a TypeVar, or one that could not be evaluated."""
    if ann is Any or ann is object or ann is inspect.Parameter.empty:
        return True
    return isinstance(ann, (typing.TypeVar, str, typing.ForwardRef))


class _Converter:
    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}
        self.names: dict[Any, str] = {}  # class -> its $defs name

    def ref(self, cls: type, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A $ref to `cls`'s definition, built once (recursive classes work)."""
        name = self.names.get(cls)
        if name is None:
            name = base = cls.__name__
            n = 2
            while name in self.defs:
                name, n = f"{base}{n}", n + 1
            self.names[cls] = name
            self.defs[name] = {}  # a placeholder while the class refers to itself
            self.defs[name] = build()
        return {"$ref": f"#/$defs/{name}"}

    def convert(self, ann: Any, depth: int = 0) -> dict[str, Any]:
        if depth > _NESTING or _says_nothing(ann):
            raise _Unknown
        if ann is None or ann is type(None):
            return {"type": "null"}
        origin = typing_extensions.get_origin(ann)
        args = typing_extensions.get_args(ann)
        if origin in (typing.Annotated, typing_extensions.Required, typing_extensions.NotRequired):
            return self.convert(args[0], depth + 1)
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin is typing.Union or origin is types.UnionType:
            return {"anyOf": [self.convert(a, depth + 1) for a in args]}
        if origin is tuple:
            return self.tuple_items(args, depth)
        if origin in _ARRAYS:
            return {"type": "array", "items": self.items(args[0] if args else Any, depth)}
        if origin in _MAPPINGS:
            return self.mapping(args, depth)
        if origin is not None:
            return self.convert(origin, depth + 1)  # a generic class: its bare form
        return self.convert_class(ann, depth)

    def tuple_items(self, args: tuple[Any, ...], depth: int) -> dict[str, Any]:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": self.items(args[0], depth)}
        if args == ((),):
            return {"type": "array", "maxItems": 0}
        if not args:
            return {"type": "array"}
        return {
            "type": "array",
            "prefixItems": [self.convert(a, depth + 1) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }

    def items(self, ann: Any, depth: int) -> dict[str, Any]:
        try:
            return self.convert(ann, depth + 1)
        except _Unknown:
            return {}

    def mapping(self, args: tuple[Any, ...], depth: int) -> dict[str, Any]:
        if len(args) != 2:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": self.items(args[1], depth)}

    def convert_class(self, ann: Any, depth: int) -> dict[str, Any]:
        if not isinstance(ann, type):
            raise _Unknown
        if ann is bool:
            return {"type": "boolean"}
        if issubclass(ann, enum.Enum):
            return self.ref(ann, lambda: {"enum": [m.value for m in ann]})
        if ann is int or (issubclass(ann, int) and not issubclass(ann, bool)):
            return {"type": "integer"}
        if ann is float:
            return {"type": "number"}
        if issubclass(ann, _STRINGS):
            return {"type": "string"}
        if ann in (list, tuple, set, frozenset):
            return {"type": "array"}
        if ann is dict:
            return {"type": "object"}
        if _is_typeddict(ann):
            return self.ref(ann, lambda: self.typeddict(ann, depth))
        if dataclasses.is_dataclass(ann):
            return self.ref(ann, lambda: self.dataclass(ann, depth))
        if issubclass(ann, tuple) and hasattr(ann, "_fields"):  # a NamedTuple: an array
            hints = _hints(ann)
            return {
                "type": "array",
                "prefixItems": [self.items(hints.get(f, Any), depth) for f in ann._fields],
            }
        from pydantic import BaseModel

        if issubclass(ann, BaseModel):
            return self.pydantic(ann)
        raise _Unknown

    def typeddict(self, cls: Any, depth: int) -> dict[str, Any]:
        hints = _hints(cls)
        required = [k for k in hints if k in getattr(cls, "__required_keys__", hints)]
        props = {k: self.items(v, depth) for k, v in hints.items()}
        return {"type": "object", "properties": props, "required": required}

    def dataclass(self, cls: Any, depth: int) -> dict[str, Any]:
        hints = _hints(cls)
        props = {f.name: self.items(hints.get(f.name, Any), depth) for f in dataclasses.fields(cls)}
        return {"type": "object", "properties": props, "required": list(props)}

    def pydantic(self, cls: Any) -> dict[str, Any]:
        known = self.names.get(cls)
        if known is not None:
            return {"$ref": f"#/$defs/{known}"}
        try:
            schema = cls.model_json_schema(mode="serialization", by_alias=False)
        except Exception as exc:  # a model pydantic cannot describe
            raise _Unknown from exc
        own = schema.pop("$defs", {})
        renames: dict[str, str] = {}
        for key in own:
            name, n = key, 2
            while name in self.defs or name in renames.values():
                name, n = f"{key}{n}", n + 1
            renames[key] = name
        for key, sub in own.items():
            self.defs[renames[key]] = _all_required(_rename_refs(sub, renames))
        if set(schema) == {"$ref"}:  # a recursive model: its own schema is in $defs
            ref: dict[str, Any] = _rename_refs(schema, renames)
            self.names[cls] = ref["$ref"].rsplit("/", 1)[-1]
            return ref
        top, n = cls.__name__, 2
        while top in self.defs:
            top, n = f"{cls.__name__}{n}", n + 1
        self.names[cls] = top
        self.defs[top] = _all_required(_rename_refs(schema, renames))
        return {"$ref": f"#/$defs/{top}"}


def _hints(cls: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=False)
    except Exception:  # noqa: BLE001 - unresolvable names: their fields stay unknown
        return {k: Any for k in getattr(cls, "__annotations__", {})}


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                name = v[len("#/$defs/") :]
                out[k] = f"#/$defs/{renames.get(name, name)}"
            else:
                out[k] = _rename_refs(v, renames)
        return out
    if isinstance(node, list):
        return [_rename_refs(v, renames) for v in node]
    return node


def _all_required(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON always carries every field (model_dump writes defaults too)."""
    if isinstance(schema.get("properties"), dict):
        return {**schema, "required": list(schema["properties"])}
    return schema


def result_schema(annotation: Any) -> dict[str, Any] | None:
    """The JSON Schema of the JSON a binding annotated ``-> annotation`` returns, or
    None when the annotation does not say (``Any``, a class that is not data, an
    unresolvable string). ``dict`` and ``list`` give loose schemas. Never raises."""
    conv = _Converter()
    try:
        schema = conv.convert(annotation)
    except _Unknown:
        return None
    except Exception:  # noqa: BLE001 - an exotic annotation: say nothing rather than fail
        return None
    if conv.defs:
        schema = {**schema, "$defs": conv.defs}
    return schema


def return_annotation(func: Callable[..., Any]) -> Any:
    """The evaluated return annotation of `func` (or of a callable object's
    ``__call__``), or ``inspect.Parameter.empty`` when it has none. Never raises."""
    target = func if inspect.isroutine(func) else type(func).__call__
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable names: fall back to the raw annotation
        hints = getattr(target, "__annotations__", {}) or {}
    return hints.get("return", inspect.Parameter.empty)
