"""The ClamBot tool spec: a `run_js_sandboxed` tool for LlamaIndex agents.

The agent writes JavaScript; it runs in a ClamBot Tools sandbox (QuickJS-NG in
WebAssembly, no ambient authority) whose only ways out are the bindings granted here,
LlamaIndex tools among them, called from the script as ``await tools.<name>({...})``.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import inspect
import logging
import os
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from clambot_tools import (
    AuditLog,
    Binding,
    ConfigError,
    Effect,
    Limits,
    Policy,
    ResultShapes,
    RunResult,
    Sandbox,
    binding,
)
from clambot_tools.render import strip_code_fences, tool_description
from llama_index.core.schema import BaseNode
from llama_index.core.tools import BaseTool, FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.tool_spec.base import SPEC_FUNCTION_TYPE, BaseToolSpec
from llama_index.core.tools.types import AsyncBaseTool, DefaultToolFnSchema
from llama_index.core.workflow import Context
from pydantic import BaseModel, Field

from .formatting import DEFAULT_MAX_CHARS, format_run_result
from .tracing import acall_tool, call_tool, script_run

#: the name of the tool `ClamBotToolSpec.to_tool_list` returns
TOOL_NAME = "run_js_sandboxed"
#: the longest tool description OpenAI's function calling takes, which LlamaIndex's
#: ``ToolMetadata.to_openai_tool()`` enforces: the default description fits in it
DESCRIPTION_LIMIT = 1024
#: values the core encodes as pydantic's JSON mode does (see ``clambot_tools.binding``)
_ENCODED_LEAVES: tuple[type, ...] = (
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    uuid.UUID,
    enum.Enum,
)
_SPEC_FUNCTIONS: tuple[str, str] = ("run_js_sandboxed", "arun_js_sandboxed")

Grantable = BaseTool | Binding | Callable[..., Any]
#: what `audit=` takes, as ``Sandbox`` does: an AuditLog, a path, a Logger or a callable
AuditTarget = AuditLog | str | os.PathLike[str] | logging.Logger | Callable[[dict[str, Any]], None]


class RunJsSandboxedArgs(BaseModel):
    """The arguments of `run_js_sandboxed`."""

    code: str = Field(
        description=(
            "The JavaScript program to run (JavaScript, not Python). The value of its last "
            "expression is the result; top-level await works."
        )
    )


class ToolCallError(Exception):
    """Raised inside a binding when the granted LlamaIndex tool returned an error output;
    the script sees a JS Error with the output's text as its message."""


# -- LlamaIndex tools as bindings


def _plain(value: Any) -> Any:
    """Validated arguments as the JSON-like values an agent would pass to the tool."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _is_json_data(value: Any, depth: int = 0) -> bool:
    """Whether `value` reaches a script as itself: JSON data, or values the sandbox
    encodes as pydantic's JSON mode does (models other than nodes, dataclasses, dates,
    decimals, UUIDs, enums, sets)."""
    if depth > 100:
        return False
    if value is None or isinstance(value, (bool, int, float, str, *_ENCODED_LEAVES)):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_is_json_data(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_data(v, depth + 1) for k, v in value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(
            _is_json_data(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)
        )
    return isinstance(value, BaseModel) and not isinstance(value, BaseNode)


def _script_value(output: ToolOutput) -> Any:
    """What the script gets from a tool's output: its raw output when that is JSON data
    (pydantic models included), else its text content. Raises ToolCallError for an
    error output."""
    if output.is_error:
        raise ToolCallError(output.content or "the tool failed")
    raw = output.raw_output
    if _is_json_data(raw):
        return raw.model_dump(mode="json") if isinstance(raw, BaseModel) else raw
    return output.content


_JSON_LEAVES: tuple[Any, ...] = (None, type(None), bool, int, float, str, Any, *_ENCODED_LEAVES)
_JSON_ORIGINS: frozenset[Any] = frozenset(
    {
        list,
        tuple,
        set,
        frozenset,
        dict,
        typing.Union,
        types.UnionType,
        typing.Literal,
        typing.Annotated,
        Sequence,
        Mapping,
    }
)


def _json_typed(ann: Any, depth: int = 0) -> bool:
    """Whether values of annotation `ann` reach a script as they are (see _script_value),
    so it may describe the binding's result type."""
    if depth > 20:
        return False
    if any(ann is leaf for leaf in _JSON_LEAVES):
        return True
    origin = typing.get_origin(ann)
    if origin is not None:
        if origin not in _JSON_ORIGINS:
            return False
        if origin is typing.Literal:
            return True
        args = typing.get_args(ann)
        if origin is typing.Annotated:
            args = args[:1]
        return all(a is Ellipsis or _json_typed(a, depth + 1) for a in args)
    if isinstance(ann, type):
        if issubclass(ann, BaseModel):
            return not issubclass(ann, BaseNode)
        if issubclass(ann, _ENCODED_LEAVES) or dataclasses.is_dataclass(ann):
            return True
        return _is_typeddict(ann) or ann in (list, dict, tuple, set, frozenset)
    return False


def _is_typeddict(ann: Any) -> bool:
    import typing_extensions

    return typing.is_typeddict(ann) or typing_extensions.is_typeddict(ann)


def _result_annotation(tool: BaseTool) -> Any:
    """The return annotation of a FunctionTool's function when it describes what the
    script will get, else Any."""
    if not isinstance(tool, FunctionTool):
        return Any
    fn = tool.real_fn
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: the result stays unknown
        return Any
    ann = hints.get("return", Any)
    return ann if _json_typed(ann) else Any


def _needs_context(tool: BaseTool) -> bool:
    """Whether a FunctionTool's function takes a workflow Context (FunctionTool misses a
    ``ctx: "Context"`` string annotation, as under ``from __future__ import annotations``)."""
    if not isinstance(tool, FunctionTool):
        return False
    if tool.requires_context:
        return True
    try:
        hints = typing.get_type_hints(tool.real_fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: trust FunctionTool
        return False
    return any(h is Context or typing.get_origin(h) is Context for h in hints.values())


def _without_signature(meta: ToolMetadata) -> str:
    """The tool's description without the Python signature ``FunctionTool.from_defaults``
    puts on its first line (``name(a: int) -> X``): the declaration says it in
    TypeScript."""
    text = meta.description
    first, sep, rest = text.partition("\n")
    if sep and meta.name and first.startswith(f"{meta.name}(") and ")" in first:
        return rest.strip()
    return text


def binding_from_tool(
    tool: BaseTool,
    *,
    name: str | None = None,
    description: str | None = None,
    effects: Sequence[Effect] = ("read",),
) -> Binding:
    """Grant a LlamaIndex tool to scripts: a Binding with the tool's name, description
    and argument schema (``metadata.fn_schema``), unless overridden here.

    A script's call ``await tools.<name>({...})`` is validated against the schema, then
    goes through the tool itself, so its callbacks and partial parameters apply: ``acall``
    for an async tool (on the event loop of ``Sandbox.arun``'s caller); ``call`` for a
    FunctionTool over a sync function, and ``__call__`` for a tool that is not an
    AsyncBaseTool (both on a worker thread). Nested pydantic arguments are passed as
    plain dicts, as an agent would pass them. The script gets the output's
    ``raw_output`` when that is JSON data (or a pydantic model, dumped), else its text
    content; an ``is_error`` output or an exception rejects the call with that message.
    `effects` feed the sandbox's Policy (say ``("write",)`` for a tool that changes
    things, so ``Policy.approve`` is consulted).

    Raises ConfigError if the tool has no name, or needs a workflow ``Context`` (which a
    script cannot supply), or the name or effects are invalid.
    """
    if not isinstance(tool, BaseTool):
        raise ConfigError(f"binding_from_tool needs a LlamaIndex BaseTool, got {type(tool)!r}")
    meta = tool.metadata
    bname = name if name is not None else meta.name
    if not bname:
        raise ConfigError("the tool has no name: pass name=...")
    if _needs_context(tool):
        raise ConfigError(f"tool {bname!r} takes a workflow Context, which a script cannot supply")
    schema = meta.fn_schema if meta.fn_schema is not None else DefaultToolFnSchema
    desc = description if description is not None else _without_signature(meta)
    func: Callable[..., Any]
    if isinstance(tool, FunctionTool) and not inspect.iscoroutinefunction(tool.real_fn):
        function_tool = tool

        def call_sync_tool(**kwargs: Any) -> Any:
            args = _plain(kwargs)
            return _script_value(call_tool(bname, args, lambda: function_tool.call(**args)))

        func = call_sync_tool
    elif isinstance(tool, AsyncBaseTool):
        async_tool = tool

        async def call_async_tool(**kwargs: Any) -> Any:
            args = _plain(kwargs)
            return _script_value(await acall_tool(bname, args, lambda: async_tool.acall(**args)))

        func = call_async_tool
    else:
        plain_tool = tool

        def call_plain_tool(**kwargs: Any) -> Any:
            args = _plain(kwargs)
            return _script_value(call_tool(bname, args, lambda: plain_tool(**args)))

        func = call_plain_tool
    func.__name__ = bname if bname.isidentifier() else "tool"
    func.__annotations__ = {"kwargs": Any, "return": _result_annotation(tool)}
    func.__module__ = __name__
    return binding(func, name=bname, description=desc, args_schema=schema, effects=effects)


def _as_binding(item: Grantable) -> Binding | Callable[..., Any]:
    return binding_from_tool(item) if isinstance(item, BaseTool) else item


# -- the tool


def _code_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The script from a tool call's arguments: ``code``, or a lone positional string, or
    a lone string under another name (``input``, ``script``...); None if there is none."""
    if "code" in kwargs:
        value = kwargs["code"]
    elif len(args) == 1 and not kwargs:
        value = args[0]
    elif not args and len(kwargs) == 1:
        value = next(iter(kwargs.values()))
    else:
        return None
    return value if isinstance(value, str) else None


class ClamBotTool(FunctionTool):
    """The `run_js_sandboxed` FunctionTool, sync (``call``) and async (``acall``).

    Its ToolOutput has the RunResult as ``raw_output``, the compact text of
    `format_run_result` as content, and ``is_error=True`` when the script failed (or the
    call had no ``code`` string), so an agent sees the error and can repair its script.
    """

    def __init__(
        self, spec: ClamBotToolSpec, metadata: ToolMetadata, *, own_description: bool = True
    ) -> None:
        """Build the tool over `spec`'s sandbox; `metadata` gives its name and description.
        With `own_description` False the description is the spec's `tool_description`,
        kept up to date as the sandbox learns result shapes."""
        super().__init__(
            fn=spec.run_js_sandboxed, async_fn=spec.arun_js_sandboxed, metadata=metadata
        )
        self.spec = spec
        self._follows_spec = not own_description
        shapes = spec.sandbox.result_shapes
        self._shapes_version = shapes.version if shapes is not None else 0

    @property
    def metadata(self) -> ToolMetadata:
        """The tool's metadata; its default description declares the result shapes
        learned so far (agents read it again at each model call)."""
        shapes = self.spec.sandbox.result_shapes
        if self._follows_spec and shapes is not None and shapes.version != self._shapes_version:
            self._shapes_version = shapes.version
            self._metadata = ToolMetadata(
                name=self._metadata.name,
                description=self.spec.tool_description,
                fn_schema=self._metadata.fn_schema,
                return_direct=self._metadata.return_direct,
            )
        return self._metadata

    def _bad_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolOutput:
        name = self.metadata.get_name()
        return ToolOutput(
            content=(
                f"{name} takes one argument, `code`: the JavaScript program as a string. "
                f'Call it again as {name}({{"code": "..."}}).'
            ),
            tool_name=name,
            raw_input={"args": args, "kwargs": kwargs},
            raw_output=None,
            is_error=True,
        )

    def _finish(self, output: ToolOutput, code: str) -> ToolOutput:
        result = output.raw_output
        if not isinstance(result, RunResult):  # a callback replaced the output: keep it
            return output
        return ToolOutput(
            content=self.spec.format_result(result, strip_code_fences(code)),
            tool_name=output.tool_name,
            raw_input=output.raw_input,
            raw_output=result,
            is_error=not result.ok,
        )

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Run the script in ``code`` and return its ToolOutput (see the class doc).

        Raises only what the sandbox raises outside a script (never for the script's own
        errors, which are ``is_error`` outputs).
        """
        code = _code_argument(args, kwargs)
        if code is None:
            return self._bad_call(args, kwargs)
        with script_run(self.metadata.get_name()):  # the tools it calls stream their events
            return self._finish(super().call(code=code), code)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """The async twin of `call`: the script runs with ``Sandbox.arun``, so async
        bindings run on the caller's event loop and cancelling stops the script."""
        code = _code_argument(args, kwargs)
        if code is None:
            return self._bad_call(args, kwargs)
        with script_run(self.metadata.get_name()):  # the tools it calls stream their events
            return self._finish(await super().acall(code=code), code)


class ClamBotToolSpec(BaseToolSpec):
    """Gives a LlamaIndex agent one tool, ``run_js_sandboxed``, that runs the JavaScript
    it writes in a ClamBot Tools sandbox.

    The sandbox has no ambient authority: no files, network, environment or modules. A
    script reaches only what is granted in `tools`: LlamaIndex tools (any ``BaseTool``,
    ``FunctionTool`` included, with its name, description and schema), ClamBot
    ``Binding`` objects (``clambot_tools.stdlib`` ones, say) and plain Python callables,
    called as ``await tools.<name>({...})``. The tool's description says it takes
    JavaScript and includes the TypeScript declaration of the granted tools.

    Args:
        tools: what scripts may call (see above). Use `binding_from_tool` to give a
            LlamaIndex tool other effects than ``("read",)`` or another name.
        limits: the sandbox's limits (default ``Limits()``: 5 s, 64 MiB...).
        policy: the sandbox's policy (allow-list, denied effects, approval...).
        audit: where the sandbox writes its audit records (see ``Sandbox``).
        sandbox: a ready ``Sandbox`` to use instead; then `tools`, `limits`, `policy`,
            `audit`, `result_shapes` and `mcp` must be left out.
        mcp: MCP servers whose tools are granted under their own names (needs
            ``clambot-tools[mcp]``): ``clambot_tools.mcp.MCPConnection`` objects, or
            configs (``{"command": ..., "args": [...]}``, ``{"url": ..., "headers":
            {...}}``, or a mapping of names to them, as MCP clients list servers).
            Effects come from each tool's annotations (see ``clambot_tools.mcp``).
        max_output_chars: about how long the text a run becomes may be.
        result_shapes: learn the shapes of the tools' results (never their values) from
            real calls (True, or a ``ResultShapes`` to share), for tools whose result
            type is unknown.

    Raises:
        ConfigError: `sandbox` given together with other sandbox settings; a tool that
            cannot be granted (see `binding_from_tool`); two tools sharing a name.
        GuestUnavailableError: the sandbox's compiled guest is missing or does not load.
        MCPConnectionError: an MCP server in `mcp` cannot be reached.
    """

    def __init__(
        self,
        tools: Iterable[Grantable] = (),
        *,
        limits: Limits | None = None,
        policy: Policy | None = None,
        audit: AuditTarget | None = None,
        sandbox: Sandbox | None = None,
        max_output_chars: int = DEFAULT_MAX_CHARS,
        result_shapes: ResultShapes | bool = False,
        mcp: Sequence[Any] | Mapping[str, Any] = (),
    ) -> None:
        """Build the sandbox (or take `sandbox`); see the class doc for the arguments."""
        granted = [_as_binding(t) for t in tools]
        if sandbox is not None:
            others = (limits, policy, audit)
            if granted or mcp or any(x is not None for x in others) or result_shapes is not False:
                raise ConfigError(
                    "pass either sandbox= or tools/mcp/limits/policy/audit/result_shapes, not both"
                )
            if not isinstance(sandbox, Sandbox):
                raise ConfigError("sandbox must be a clambot_tools.Sandbox")
            self._sandbox = sandbox
        else:
            if mcp:
                from clambot_tools.mcp import mcp_bindings

                granted += mcp_bindings(mcp, limits=limits)
            self._sandbox = Sandbox(
                bindings=granted,
                limits=limits,
                policy=policy,
                audit=audit,
                result_shapes=result_shapes,
            )
        self.max_output_chars = max_output_chars
        self.spec_functions: list[SPEC_FUNCTION_TYPE] = [_SPEC_FUNCTIONS]

    @property
    def sandbox(self) -> Sandbox:
        """The Sandbox scripts run in."""
        return self._sandbox

    def describe_tools(self) -> str:
        """The whole TypeScript declaration of the `tools` object scripts see (only the
        tools the policy lets them call)."""
        return self._sandbox.describe_tools(max_chars=None)

    @property
    def tool_description(self) -> str:
        """The description of `run_js_sandboxed`, at most 1,024 characters (OpenAI's
        limit, which ``ToolMetadata.to_openai_tool()`` enforces): what it runs
        (JavaScript), how results and tools work, the limits, and the declaration of
        `tools`: whole when it fits, else names and summaries (then names only), with
        ``tools.$describe``/``tools.$search`` for the rest. `system_prompt()` gives the
        whole declaration for a system prompt instead."""
        return tool_description(self._sandbox, max_chars=DESCRIPTION_LIMIT)

    def system_prompt(self) -> str:
        """A paragraph for an agent's system prompt: the whole declaration of the tools
        scripts can call (the tool description may carry only their names)."""
        return (
            f"Scripts you run with {TOOL_NAME} can call these tools (TypeScript notation; "
            "write JavaScript):\n" + self.describe_tools()
        )

    def format_result(self, result: RunResult, code: str | None = None) -> str:
        """The text `result` becomes for the model (see `format_run_result`); `code` is
        the script as it ran, for the error's code frame."""
        return format_run_result(
            result, code, max_chars=self.max_output_chars, tools=self._sandbox.bindings
        )

    def run_js_sandboxed(self, code: str) -> RunResult:
        """Run the JavaScript `code` (the code inside a markdown fence, if any) in the sandbox
        and return its RunResult; a script's failures are in ``RunResult.error``.

        Raises ConfigError if `code` is not a str.
        """
        if not isinstance(code, str):
            raise ConfigError(f"code must be a str, got {type(code).__name__}")
        return self._sandbox.run(strip_code_fences(code))

    async def arun_js_sandboxed(self, code: str) -> RunResult:
        """The async twin of `run_js_sandboxed`, on ``Sandbox.arun``: async tools run on the
        caller's event loop, and cancelling the call stops the script.

        Raises ConfigError if `code` is not a str.
        """
        if not isinstance(code, str):
            raise ConfigError(f"code must be a str, got {type(code).__name__}")
        return await self._sandbox.arun(strip_code_fences(code))

    def to_tool_list(
        self,
        spec_functions: list[SPEC_FUNCTION_TYPE] | None = None,
        func_to_metadata_mapping: dict[str, ToolMetadata] | None = None,
    ) -> list[FunctionTool]:
        """The `run_js_sandboxed` tool, as a one-item list of ClamBotTool (a FunctionTool
        with both ``call`` and ``acall``).

        `func_to_metadata_mapping` may replace its metadata (a different name or
        description) under the key ``"run_js_sandboxed"``.

        Raises ValueError if `spec_functions` names anything but this spec's functions.
        """
        for spec in spec_functions or self.spec_functions:
            names = (spec,) if isinstance(spec, str) else tuple(spec)
            if not set(names) <= set(_SPEC_FUNCTIONS):
                raise ValueError(f"ClamBotToolSpec has only {list(_SPEC_FUNCTIONS)}, not {spec!r}")
        mapping = func_to_metadata_mapping or {}
        given = mapping.get(TOOL_NAME) or mapping.get("arun_js_sandboxed")
        metadata = given or ToolMetadata(
            name=TOOL_NAME, description=self.tool_description, fn_schema=RunJsSandboxedArgs
        )
        return [ClamBotTool(self, metadata, own_description=given is not None)]
