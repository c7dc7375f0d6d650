"""Bindings: the Python callables a script may reach as ``await tools.<name>(args)``."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from . import _jsonsafe
from ._errors import ConfigError

#: what a binding may do, declared by it; the policy can deny or ask approval for each
Effect = Literal["read", "write", "network"]
EFFECTS: tuple[Effect, ...] = ("read", "write", "network")
_NAME = re.compile(r"^[^\x00]{1,128}$")


class BindingArgumentError(Exception):
    """The script passed arguments the binding's schema refuses (a JS TypeError)."""


@dataclass(frozen=True)
class Binding:
    """A Python callable granted to scripts, with its schema and declared effects.

    Attributes:
        name: the property of ``tools`` it appears as in JS.
        func: the callable (sync or async); called with keyword arguments.
        description: what it does, for the model.
        effects: what it may do to the world: ``read``, ``write``, ``network``.
        args_model: the pydantic model that validates the arguments (a model with
            no fields when ``json_schema`` is given).
        is_async: whether ``func`` returns an awaitable.
        var_keyword: ``func`` takes ``**kwargs`` (extra arguments are passed on).
        json_schema: the JSON Schema of the arguments object, when the binding was
            made from one; arguments are then validated against it.
        result_schema: the JSON Schema of what ``func`` returns: given to
            ``binding()`` (an MCP tool's ``outputSchema``, say), else read there from
            its return annotation; None when unknown. It stays with the binding when
            ``dataclasses.replace`` swaps its function for a wrapper.
        origin: where the binding comes from and how it is configured, as JSON data
            (a standard binding's factory and options, an MCP server and tool); binding
            manifests record it, so a change of configuration is caught like one of code.
            Set it with ``dataclasses.replace(b, origin={...})``.
    """

    name: str
    func: Callable[..., Any]
    description: str
    effects: tuple[Effect, ...]
    args_model: type[BaseModel]
    is_async: bool
    var_keyword: bool = False
    json_schema: dict[str, Any] | None = None
    result_schema: dict[str, Any] | None = None
    origin: dict[str, Any] | None = None

    def arguments_schema(self) -> dict[str, Any]:
        """The JSON Schema of the arguments object (for declarations and manifests)."""
        if self.json_schema is not None:
            return self.json_schema
        return self.args_model.model_json_schema()

    def validate(self, args: Any) -> dict[str, Any]:
        """Turn the JSON arguments of a call into keyword arguments.

        Raises BindingArgumentError with a message fit for the script.
        """
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise BindingArgumentError(
                f"tools.{self.name} takes one object of named arguments, not {_js_type(args)}"
            )
        if self.json_schema is not None:
            from ._jsonschema import problems

            found = problems(self.json_schema, args)
            if found:
                raise BindingArgumentError(
                    f"invalid arguments for tools.{self.name}: " + "; ".join(found)
                )
            return args
        if self.var_keyword and not self.args_model.model_fields:
            return args  # `def f(**kwargs)`: any object will do, nothing to check
        try:
            model = self.args_model.model_validate(args)
        except ValidationError as exc:
            parts = []
            for err in exc.errors(include_url=False):
                loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
                parts.append(f"{loc}: {err['msg']}")
            raise BindingArgumentError(
                f"invalid arguments for tools.{self.name}: " + "; ".join(parts)
            ) from None
        kwargs = {k: getattr(model, k) for k in type(model).model_fields}
        if self.var_keyword and model.model_extra:
            kwargs.update(model.model_extra)
        return kwargs


def _js_type(v: Any) -> str:
    if isinstance(v, list):
        return "an array"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return type(v).__name__


def type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The function's annotations, evaluated (string annotations included) where possible."""
    import typing

    target = func if inspect.isroutine(func) else type(func).__call__
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable names: fall back to the raw annotations
        return {}


def _model_from_signature(func: Callable[..., Any], name: str) -> tuple[type[BaseModel], bool]:
    sig = inspect.signature(func)
    hints = type_hints(func)
    fields: dict[str, Any] = {}
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            raise ConfigError(
                f"binding {name!r}: parameter {p.name!r} cannot be passed by name; "
                "bindings are called with keyword arguments"
            )
        ann = hints.get(p.name, Any if p.annotation is inspect.Parameter.empty else p.annotation)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (ann, default)
    config = ConfigDict(
        extra="allow" if var_kw else "forbid", strict=True, arbitrary_types_allowed=True
    )
    model = create_model(f"{_camel(name)}Args", __config__=config, **fields)
    return model, var_kw


def _camel(name: str) -> str:
    parts = re.split(r"[^0-9A-Za-z]+", name)
    return "".join(p[:1].upper() + p[1:] for p in parts if p) or "Tool"


@overload
def binding(
    func: Callable[..., Any] | Binding,
    *,
    name: str | None = ...,
    description: str | None = ...,
    args_schema: type[BaseModel] | None = ...,
    json_schema: dict[str, Any] | None = ...,
    result_schema: dict[str, Any] | None = ...,
    effects: Sequence[Effect] = ...,
) -> Binding: ...


@overload
def binding(
    func: None = ...,
    *,
    name: str | None = ...,
    description: str | None = ...,
    args_schema: type[BaseModel] | None = ...,
    json_schema: dict[str, Any] | None = ...,
    result_schema: dict[str, Any] | None = ...,
    effects: Sequence[Effect] = ...,
) -> Callable[[Callable[..., Any]], Binding]: ...


def binding(
    func: Callable[..., Any] | Binding | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    args_schema: type[BaseModel] | None = None,
    json_schema: dict[str, Any] | None = None,
    result_schema: dict[str, Any] | None = None,
    effects: Sequence[Effect] = ("read",),
) -> Binding | Callable[[Callable[..., Any]], Binding]:
    """Turn a Python callable into a binding scripts can call as ``tools.<name>({...})``.

    Usable as ``binding(f, ...)`` or as a decorator ``@binding(...)`` / ``@binding``.
    The argument schema comes from ``args_schema`` (a pydantic model), or
    ``json_schema`` (a JSON Schema of the arguments object, e.g. an MCP tool's
    ``inputSchema``: the arguments are validated against it and passed to `func` as
    keyword arguments), or else from the signature (annotations are validated
    strictly; ``**kwargs`` accepts extra keys). ``result_schema`` (a JSON Schema)
    describes what `func` returns; without it, it is read from the return annotation
    (TypedDicts, dataclasses, pydantic models...) when that says.

    Raises ConfigError for an empty or NUL-containing name, an unknown effect, both
    ``args_schema`` and ``json_schema``, a ``json_schema`` that is not an object
    schema, or a signature whose parameters cannot be passed by name.
    """
    if func is None:

        def decorate(f: Callable[..., Any]) -> Binding:
            return binding(
                f,
                name=name,
                description=description,
                args_schema=args_schema,
                json_schema=json_schema,
                result_schema=result_schema,
                effects=effects,
            )

        return decorate
    if isinstance(func, Binding):
        return func
    if not callable(func):
        raise ConfigError(f"binding() needs a callable, got {type(func).__name__}")
    bname = name if name is not None else getattr(func, "__name__", None)
    if not isinstance(bname, str) or not _NAME.match(bname):
        raise ConfigError(f"invalid binding name {bname!r}: use 1-128 characters, no NUL")
    bad = [e for e in effects if e not in EFFECTS]
    if bad:
        raise ConfigError(f"binding {bname!r}: unknown effects {bad}; use {list(EFFECTS)}")
    if result_schema is not None and not isinstance(result_schema, dict):
        raise ConfigError(f"binding {bname!r}: result_schema must be a JSON Schema (a dict)")
    if json_schema is not None:
        if args_schema is not None:
            raise ConfigError(f"binding {bname!r}: give args_schema or json_schema, not both")
        if not isinstance(json_schema, dict) or json_schema.get("type", "object") != "object":
            raise ConfigError(
                f"binding {bname!r}: json_schema must be the JSON Schema of an object"
            )
        model, var_kw = _free_model(bname), True
    elif args_schema is not None:
        if not (isinstance(args_schema, type) and issubclass(args_schema, BaseModel)):
            raise ConfigError(f"binding {bname!r}: args_schema must be a pydantic model class")
        model, var_kw = args_schema, False
    else:
        model, var_kw = _model_from_signature(func, bname)
    if result_schema is None:
        from ._annotations import result_schema as schema_of
        from ._annotations import return_annotation

        result_schema = schema_of(return_annotation(func))
    desc = description if description is not None else inspect.getdoc(func) or ""
    call = type(func).__call__ if not inspect.isroutine(func) else func
    is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(call)
    return Binding(
        bname,
        func,
        desc.strip(),
        tuple(effects),
        model,
        is_async,
        var_kw,
        json_schema=dict(json_schema) if json_schema is not None else None,
        result_schema=dict(result_schema) if result_schema is not None else None,
    )


def _free_model(name: str) -> type[BaseModel]:
    """A model with no fields that takes any keys (the JSON Schema does the checking)."""
    return create_model(f"{_camel(name)}Args", __config__=ConfigDict(extra="allow"))


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
#: the largest integer a JavaScript number holds exactly (Number.MAX_SAFE_INTEGER)
MAX_SAFE_INTEGER = 2**53 - 1
#: a run of digits long enough to be an integer past MAX_SAFE_INTEGER (16+ digits)
_LONG_NUMBER = re.compile(r"\d{16}")


def to_json_bytes(value: Any) -> bytes:
    """A binding's return value as JSON for the guest.

    JSON data goes as it is (NaN and infinities become null, as JSON.stringify would).
    Other values are encoded as pydantic's JSON mode encodes them: datetimes, dates,
    times and timedeltas as ISO 8601 strings, Decimal and UUID as strings, an Enum as
    its value, bytes as UTF-8 text, sets, frozensets and tuples as arrays, dataclasses
    and pydantic models as objects, non-string dict keys as strings.

    Raises ValueError for an integer a JavaScript number cannot hold exactly (some past
    2^53: it would silently become another number in the script), naming where it is;
    TypeError/ValueError for anything else that has no JSON form.
    """
    try:
        try:
            text = _jsonsafe.dumps(value)  # plain JSON data, at any depth
        except _jsonsafe.TooDeep:
            raise
        except (TypeError, ValueError):  # not plain JSON data: pydantic's JSON mode, retry
            value = _finite(_jsonable(value))
            text = _jsonsafe.dumps(value)
    except RecursionError:
        raise ValueError("the result is nested too deeply") from None
    if _LONG_NUMBER.search(text):
        _check_safe_integers(value)
    return text.encode("utf-8", "surrogatepass")


def _jsonable(value: Any) -> Any:
    from pydantic_core import PydanticSerializationError, to_jsonable_python

    try:
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise TypeError(str(exc).strip()) from None
    except UnicodeDecodeError:
        raise ValueError(
            "it holds bytes that are not UTF-8 text (bytes go as UTF-8 text); return them "
            "base64-encoded instead"
        ) from None


def _finite(v: Any) -> Any:
    """`v` (JSON-able data) with NaN and infinities as null, walked without recursion."""
    root: list[Any] = [v]
    stack: list[tuple[Any, Any, int]] = [(root, 0, 0)]
    while stack:
        parent, key, depth = stack.pop()
        x = parent[key]
        if isinstance(x, float):
            if x != x or x in (float("inf"), float("-inf")):
                parent[key] = None
        elif isinstance(x, dict):
            if depth > 1000:
                raise ValueError("the result is nested too deeply")
            copy = {k if isinstance(k, str) else _key(k): y for k, y in x.items()}
            parent[key] = copy
            stack.extend((copy, k, depth + 1) for k in copy)
        elif isinstance(x, (list, tuple)):
            if depth > 1000:
                raise ValueError("the result is nested too deeply")
            items = list(x)
            parent[key] = items
            stack.extend((items, i, depth + 1) for i in range(len(items)))
    return root[0]


def _check_safe_integers(value: Any) -> None:
    """Raise ValueError if `value` holds an integer that a JavaScript number (a double)
    would change, saying where and into what. (2^60 stays itself; 2^53 + 1 does not.)"""
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        x, path = stack.pop()
        if isinstance(x, int) and not isinstance(x, bool):
            if abs(x) > MAX_SAFE_INTEGER and _as_double(x) != x:
                seen = _as_double(x)
                becomes = f"it would become {seen}" if seen is not None else "it is too large"
                raise ValueError(
                    f"{path} is {x}, which a JavaScript number cannot hold exactly ({becomes} "
                    "past 2^53); the tool should return it as a string"
                )
        elif isinstance(x, dict):
            stack.extend((y, f"{path}.{k}") for k, y in x.items())
        elif isinstance(x, (list, tuple)):
            stack.extend((y, f"{path}[{i}]") for i, y in enumerate(x))


def _as_double(x: int) -> int | None:
    """`x` as a JavaScript number holds and prints it (the shortest decimal that reads
    back as the same double, as JavaScript and Python both print numbers), or None past
    the largest double."""
    import decimal

    try:
        return int(decimal.Decimal(repr(float(x))))
    except OverflowError:
        return None


def _key(k: Any) -> str:
    if isinstance(k, (int, float, bool)) or k is None:
        return json.dumps(k)
    raise TypeError(f"dict keys must be strings, not {type(k).__name__}")
