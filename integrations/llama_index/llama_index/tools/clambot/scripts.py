"""Saved scripts as LlamaIndex tools, and a tool that lets the agent save one.

    spec = ClamBotToolSpec(tools=[get_order], policy=Policy(approve=ask_a_human))
    library = ScriptLibrary("scripts")
    tools = [*spec.to_tool_list(), save_script_tool(spec, library),
             *saved_script_tools(spec, library)]

Each saved script becomes a ``FunctionTool`` of its own (its name, description and
argument schema), run by ``Sandbox.run_saved`` / ``arun_saved`` in the spec's sandbox
setup (its tools, limits, policy and audit). ``save_script`` lets the agent promote a
script that worked; saving is a write, so the policy's approver is asked first (without
one, saving is refused).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from clambot_tools import (
    ClamBotError,
    ConfigError,
    RunResult,
    Sandbox,
    SavedScript,
    ScriptArgumentsError,
    ScriptLibrary,
)
from clambot_tools.scripts import failure_text
from llama_index.core.tools import FunctionTool, ToolMetadata, ToolOutput
from pydantic import BaseModel, ConfigDict, Field, create_model

from .base import ClamBotToolSpec
from .formatting import DEFAULT_MAX_CHARS, format_run_result, strip_code_fences

__all__ = ["SaveScriptArgs", "SavedScriptTool", "save_script_tool", "saved_script_tools"]


def _sandbox_with(spec: ClamBotToolSpec | Sandbox, library: ScriptLibrary | None) -> Sandbox:
    """A Sandbox like `spec`'s with `library` as its saved scripts.

    Raises ConfigError if neither has a library."""
    sandbox = spec.sandbox if isinstance(spec, ClamBotToolSpec) else spec
    if not isinstance(sandbox, Sandbox):
        raise ConfigError("give a ClamBotToolSpec or a clambot_tools.Sandbox")
    if library is None or library is sandbox.scripts:
        if sandbox.scripts is None:
            raise ConfigError("give a ScriptLibrary: the sandbox has none")
        return sandbox
    return Sandbox(
        bindings=sandbox.bindings,
        limits=sandbox.limits,
        policy=sandbox.policy,
        audit=sandbox.audit,
        result_shapes=sandbox.result_shapes or False,
        scripts=library,
    )


def _schema_model(script: SavedScript) -> type[BaseModel]:
    """A pydantic model whose JSON Schema is the script's own (LlamaIndex reads tool
    parameters from ``fn_schema.model_json_schema()``); the arguments are checked
    against the schema itself when the script runs."""
    schema = script.args_schema
    model = create_model(f"{script.name}_args", __config__=ConfigDict(extra="allow"))

    def model_json_schema(cls: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return copy.deepcopy(schema)

    model.model_json_schema = classmethod(model_json_schema)  # type: ignore[method-assign,assignment]
    return model


def _error_output(name: str, text: str, raw_input: dict[str, Any]) -> ToolOutput:
    return ToolOutput(
        content=text, tool_name=name, raw_input=raw_input, raw_output=None, is_error=True
    )


class SavedScriptTool(FunctionTool):
    """One saved script as a FunctionTool (sync ``call`` and async ``acall``).

    Its ToolOutput has the RunResult as ``raw_output`` and the compact text of
    `format_run_result` as content, with ``is_error=True`` when the run failed or the
    arguments do not fit the schema (the content then names each field)."""

    def __init__(
        self, sandbox: Sandbox, script: SavedScript, *, max_output_chars: int = DEFAULT_MAX_CHARS
    ) -> None:
        """Build the tool running `script` (that version) in `sandbox`."""
        metadata = ToolMetadata(
            name=script.name, description=script.description, fn_schema=_schema_model(script)
        )
        super().__init__(fn=self._run_sync, async_fn=self._run_async, metadata=metadata)
        self.sandbox = sandbox
        self.script = script
        self.max_output_chars = max_output_chars

    def _run_sync(self, **kwargs: Any) -> RunResult:
        return self.sandbox.run_saved(self.script.name, kwargs, version=self.script.number)

    async def _run_async(self, **kwargs: Any) -> RunResult:
        return await self.sandbox.arun_saved(self.script.name, kwargs, version=self.script.number)

    def _finish(self, output: ToolOutput) -> ToolOutput:
        result = output.raw_output
        if not isinstance(result, RunResult):  # a callback replaced the output: keep it
            return output
        if result.ok:
            text = format_run_result(result, None, max_chars=self.max_output_chars)
        else:
            text = failure_text(self.script.name, result, max_log_chars=self.max_output_chars // 2)
        return ToolOutput(
            content=text,
            tool_name=output.tool_name,
            raw_input=output.raw_input,
            raw_output=result,
            is_error=not result.ok,
        )

    def _refused(self, exc: ClamBotError, kwargs: dict[str, Any]) -> ToolOutput:
        what = "arguments" if isinstance(exc, ScriptArgumentsError) else "refused"
        return _error_output(self.script.name, f"error ({what}): {exc}", {"kwargs": kwargs})

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Run the script with `kwargs` as its ``args``; see the class doc."""
        try:
            return self._finish(super().call(**kwargs))
        except ClamBotError as exc:
            return self._refused(exc, kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """The async twin of `call` (``Sandbox.arun_saved``)."""
        try:
            return self._finish(await super().acall(**kwargs))
        except ClamBotError as exc:
            return self._refused(exc, kwargs)


def saved_script_tools(
    spec: ClamBotToolSpec | Sandbox,
    library: ScriptLibrary | None = None,
    names: Iterable[str] | None = None,
) -> list[SavedScriptTool]:
    """The saved scripts of `library` (default: the sandbox's own) as FunctionTools
    running in `spec`'s sandbox setup: every script's latest version, or those named
    (``"name"`` or ``"name@3"``).

    Raises ScriptError for an unknown name or a script changed after it was saved,
    ConfigError without a library."""
    sandbox = _sandbox_with(spec, library)
    lib = sandbox.scripts
    assert lib is not None
    wanted = list(names) if names is not None else lib.names()
    chars = spec.max_output_chars if isinstance(spec, ClamBotToolSpec) else DEFAULT_MAX_CHARS
    return [SavedScriptTool(sandbox, lib.get(ref), max_output_chars=chars) for ref in wanted]


class SaveScriptArgs(BaseModel):
    """The arguments of the save_script tool."""

    name: str = Field(
        description="Tool name to save it under: letters, digits and _, e.g. monthly_revenue."
    )
    description: str = Field(description="What it does and returns, for whoever calls it next.")
    code: str = Field(
        description="The JavaScript that worked. Its input is the global `args` (an object)."
    )
    args_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema of `args` (type object). Omit if it takes none."
    )
    tools: list[str] | None = Field(
        default=None, description="The tools it calls. Omit to take those its code names."
    )


SAVE_DESCRIPTION = (
    "Save a JavaScript program that worked as a reusable tool (a human may have to "
    "approve). Write it to take its input from the global `args` object and give "
    "`args_schema` for it; it will then run by name with new arguments."
)
_TOOL_REF = re.compile(r"""tools\s*(?:\.\s*([A-Za-z_$][\w$]*)|\[\s*(["'])(.+?)\2\s*\])""")


def _named_tools(code: str, granted: Iterable[str]) -> list[str]:
    found = {m.group(1) or m.group(3) for m in _TOOL_REF.finditer(code)}
    return sorted(found & set(granted))


def save_script_tool(
    spec: ClamBotToolSpec | Sandbox, library: ScriptLibrary | None = None
) -> FunctionTool:
    """A ``save_script`` FunctionTool: the agent saves a script that worked into
    `library` (default: the sandbox's own) as the next version of a name. Saving is a
    write decided by the sandbox's policy (its approver is asked, with the whole script
    to review) and audited. The output names the version saved; a refused or invalid
    save is an ``is_error`` output saying why.

    Raises ConfigError without a library."""
    sandbox = _sandbox_with(spec, library)
    granted = [b.name for b in sandbox.bindings]

    def arguments(
        name: str, description: str, code: str, args_schema: Any, tools: Any
    ) -> dict[str, Any]:
        source = strip_code_fences(code)
        used = tools if tools is not None else _named_tools(source, granted)
        return {
            "name": name,
            "source": source,
            "description": description,
            "args_schema": args_schema,
            "bindings": used,
        }

    def text(saved: SavedScript) -> str:
        return (
            f"saved {saved.ref} (sha256 {saved.version[:12]}; tools: "
            f"{', '.join(saved.bindings) or 'none'}); it runs by name as {saved.name}"
        )

    def save_script(
        name: str,
        description: str,
        code: str,
        args_schema: dict[str, Any] | None = None,
        tools: list[str] | None = None,
    ) -> ToolOutput:
        args = arguments(name, description, code, args_schema, tools)
        try:
            saved = sandbox.save_script(**args)
        except ClamBotError as exc:
            return _error_output("save_script", f"error: {exc}", args)
        return ToolOutput(
            content=text(saved), tool_name="save_script", raw_input=args, raw_output=saved
        )

    async def asave_script(
        name: str,
        description: str,
        code: str,
        args_schema: dict[str, Any] | None = None,
        tools: list[str] | None = None,
    ) -> ToolOutput:
        args = arguments(name, description, code, args_schema, tools)
        try:
            saved = await sandbox.asave_script(**args)
        except ClamBotError as exc:
            return _error_output("save_script", f"error: {exc}", args)
        return ToolOutput(
            content=text(saved), tool_name="save_script", raw_input=args, raw_output=saved
        )

    metadata = ToolMetadata(
        name="save_script", description=SAVE_DESCRIPTION, fn_schema=SaveScriptArgs
    )
    return _SaveScriptTool(fn=save_script, async_fn=asave_script, metadata=metadata)


class _SaveScriptTool(FunctionTool):
    """The save_script FunctionTool: its functions make the whole ToolOutput (with
    ``is_error`` for a refusal), which is returned as it is."""

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        out = super().call(*args, **kwargs)
        return out.raw_output if isinstance(out.raw_output, ToolOutput) else out

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        out = await super().acall(*args, **kwargs)
        return out.raw_output if isinstance(out.raw_output, ToolOutput) else out
