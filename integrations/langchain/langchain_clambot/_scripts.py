"""Saved scripts as LangChain tools, and a tool that lets the model save one.

    js = SandboxedJSTool(tools=[search_orders, refund], policy=Policy(approve=...))
    library = ScriptLibrary("scripts")
    tools = [js, save_script_tool(js, library), *saved_script_tools(js, library)]

Each saved script becomes a tool of its own (its name, description and argument
schema), run by ``Sandbox.run_saved`` with the SandboxedJSTool's tools, limits, policy
(approver included: LangGraph interrupts work as in `run_js_sandboxed`) and audit.
``save_script`` lets the model promote a script that worked; saving is a write, so the
policy's approver is asked first (without one, saving is refused).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from clambot_tools import (
    ClamBotError,
    ConfigError,
    RunResult,
    SavedScript,
    ScriptArgumentsError,
    ScriptLibrary,
)
from clambot_tools.render import model_text, strip_code_fences
from clambot_tools.scripts import failure_text
from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, PrivateAttr

from ._adapt import RunState, stops_the_task
from ._ledger import task_run_of
from ._tool import _TOOL_CALL_ID, SandboxedJSTool, SandboxToolError

#: argument names LangChain passes to a tool's own function: a schema may not use them
_RESERVED = frozenset({"config", "run_manager", "callbacks"})


class _RunsInTask(BaseTool):
    """A tool whose runs are approved as `run_js_sandboxed`'s are: it keeps the tool
    call id for its run, and when an approval stops its LangGraph task (an interrupt)
    it waits for the task's other tool calls first (as SandboxedJSTool.run does)."""

    _js: SandboxedJSTool = PrivateAttr()

    def _state(self, config: RunnableConfig, run_manager: Any, code: str) -> RunState:
        return self._js._state(config, run_manager, code, None, None)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """BaseTool.run, with the call id kept and the task's other calls awaited."""
        task = task_run_of(((kwargs.get("config") or {}).get("configurable")) or {})
        running = task.enter() if task is not None else None
        token = _TOOL_CALL_ID.set(kwargs.get("tool_call_id"))
        try:
            return super().run(*args, **kwargs)
        except BaseException as exc:
            if task is not None and running is not None and stops_the_task(exc):
                task.wait_others(running, self._js._wait_timeout())
            raise
        finally:
            _TOOL_CALL_ID.reset(token)
            if task is not None and running is not None:
                task.leave(running)

    async def arun(self, *args: Any, **kwargs: Any) -> Any:
        """BaseTool.arun, as `run` does."""
        task = task_run_of(((kwargs.get("config") or {}).get("configurable")) or {})
        running = task.enter() if task is not None else None
        token = _TOOL_CALL_ID.set(kwargs.get("tool_call_id"))
        try:
            return await super().arun(*args, **kwargs)
        except BaseException as exc:
            if task is not None and running is not None and stops_the_task(exc):
                await task.await_others(running, self._js._wait_timeout())
            raise
        finally:
            _TOOL_CALL_ID.reset(token)
            if task is not None and running is not None:
                task.leave(running)


def _stopped(state: RunState) -> None:
    """Raise what stopped the run for a human: an invalid resume value, or the
    LangGraph interrupt of an approval."""
    if state.invalid is not None:
        raise state.invalid
    if state.pending is not None:
        raise state.pending


class SavedScriptTool(_RunsInTask):
    """One saved script as a LangChain tool: its name, description and JSON Schema;
    calling it runs that version with the given arguments in the SandboxedJSTool's
    sandbox. Its output is ``(content, RunResult)``; a failed run (or arguments the
    schema refuses) raises ``SandboxToolError``, which the model reads as an error
    ToolMessage."""

    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True

    _library: ScriptLibrary = PrivateAttr()
    _script: SavedScript = PrivateAttr()

    def __init__(self, js: SandboxedJSTool, library: ScriptLibrary, script: SavedScript) -> None:
        clash = sorted(_RESERVED & set(script.args_schema.get("properties") or {}))
        if clash:
            raise ConfigError(
                f"script {script.name}: LangChain reserves the argument name(s) {clash}"
            )
        super().__init__(
            name=script.name, description=script.description, args_schema=script.args_schema
        )
        self._js, self._library, self._script = js, library, script

    @property
    def script(self) -> SavedScript:
        """The version this tool runs."""
        return self._script

    def _finish(self, state: RunState, result: RunResult) -> tuple[str, RunResult]:
        _stopped(state)
        notes = "".join(f"\nNote: {n}" for n in state.notes)
        js = self._js
        if result.ok:
            text = model_text(
                result, None, max_value_chars=js.max_value_chars, max_log_chars=js.max_log_chars
            )
            # the artifact goes into the graph's checkpoint: it must encode
            return text + notes, result.encodable()
        text = failure_text(self.name, result, max_log_chars=js.max_log_chars)
        raise SandboxToolError(text + notes, result)

    def _run(
        self,
        run_manager: CallbackManagerForToolRun | None = None,
        *,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> tuple[str, RunResult]:
        """Run the script with `kwargs` as its ``args``. Raises SandboxToolError if the
        arguments are refused or the run failed; a LangGraph interrupt if an approval
        paused it."""
        state = self._state(config, run_manager, self._script.source)
        sandbox = self._js._sandbox(state, use_async=False, scripts=self._library)
        try:
            result = sandbox.run_saved(self.name, kwargs, version=self._script.number)
        except ClamBotError as exc:
            raise _refused(exc) from None
        return self._finish(state, result)

    async def _arun(
        self,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        *,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> tuple[str, RunResult]:
        """The async twin of `_run` (``Sandbox.arun_saved``). Raises as `_run` does."""
        state = self._state(config, run_manager, self._script.source)
        sandbox = self._js._sandbox(state, use_async=True, scripts=self._library)
        try:
            result = await sandbox.arun_saved(self.name, kwargs, version=self._script.number)
        except ClamBotError as exc:
            raise _refused(exc) from None
        return self._finish(state, result)


def _refused(exc: ClamBotError) -> SandboxToolError:
    if isinstance(exc, ScriptArgumentsError):
        return SandboxToolError(f"Error (arguments): {exc}. Call it again with valid ones.", None)
    return SandboxToolError(f"Error: {exc}", None)


def saved_script_tools(
    js: SandboxedJSTool, library: ScriptLibrary, names: Iterable[str] | None = None
) -> list[SavedScriptTool]:
    """The saved scripts of `library` as LangChain tools that run in `js`'s sandbox:
    every script's latest version, or those named (``"name"`` or ``"name@3"``).

    Raises ScriptError for an unknown name or a script changed after it was saved,
    ConfigError for a schema using an argument name LangChain reserves."""
    wanted = list(names) if names is not None else library.names()
    return [SavedScriptTool(js, library, library.get(ref)) for ref in wanted]


class SaveScriptInput(BaseModel):
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


_TOOL_REF = re.compile(r"""tools\s*(?:\.\s*([A-Za-z_$][\w$]*)|\[\s*(["'])(.+?)\2\s*\])""")


def tools_named_in(code: str, granted: Iterable[str]) -> list[str]:
    """The granted tools `code` names (``tools.x`` or ``tools["x"]``), sorted."""
    known = set(granted)
    found = {m.group(1) or m.group(3) for m in _TOOL_REF.finditer(code)}
    return sorted(found & known)


class SaveScriptTool(_RunsInTask):
    """``save_script``: the model saves a script that worked as a named, versioned tool
    in a ScriptLibrary. Saving is a write: the SandboxedJSTool's policy decides it (its
    approver is asked, with the whole script to review; LangGraph interrupts work),
    and it is audited. The output says the name and version saved; a refusal or an
    invalid script raises SandboxToolError (an error ToolMessage)."""

    name: str = "save_script"
    description: str = (
        "Save a JavaScript program that worked as a reusable tool (a human may have to "
        "approve). Write it to take its input from the global `args` object and give "
        "`args_schema` for it; it will then run by name with new arguments."
    )
    args_schema: type[BaseModel] = SaveScriptInput
    handle_tool_error: bool = True

    _library: ScriptLibrary = PrivateAttr()

    def __init__(self, js: SandboxedJSTool, library: ScriptLibrary, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._js, self._library = js, library

    def _granted(self) -> list[str]:
        template = self._js._template
        return [b.name for b in template.bindings] if template is not None else []

    def _text(self, saved: SavedScript) -> str:
        tools = ", ".join(saved.bindings) or "none"
        return (
            f"Saved {saved.ref} (sha256 {saved.version[:12]}; tools: {tools}). It runs by "
            f"name as {saved.name} with its arguments."
        )

    def _args(
        self, name: str, description: str, code: str, args_schema: Any, tools: Any
    ) -> dict[str, Any]:
        source = strip_code_fences(code)
        used = tools if tools is not None else tools_named_in(source, self._granted())
        return {
            "name": name,
            "source": source,
            "description": description,
            "args_schema": args_schema,
            "bindings": used,
        }

    def _run(
        self,
        name: str,
        description: str,
        code: str,
        args_schema: dict[str, Any] | None = None,
        tools: list[str] | None = None,
        run_manager: CallbackManagerForToolRun | None = None,
        *,
        config: RunnableConfig,
    ) -> str:
        """Save the script; raises SandboxToolError if refused, or the LangGraph
        interrupt of an approval that paused the graph."""
        args = self._args(name, description, code, args_schema, tools)
        state = self._state(config, run_manager, args["source"])
        sandbox = self._js._sandbox(state, use_async=False, scripts=self._library)
        try:
            saved = sandbox.save_script(**args)
        except ClamBotError as exc:
            _stopped(state)
            raise SandboxToolError(f"Error: {exc}", None) from None
        return self._text(saved)

    async def _arun(
        self,
        name: str,
        description: str,
        code: str,
        args_schema: dict[str, Any] | None = None,
        tools: list[str] | None = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        *,
        config: RunnableConfig,
    ) -> str:
        """The async twin of `_run`. Raises as `_run` does."""
        args = self._args(name, description, code, args_schema, tools)
        state = self._state(config, run_manager, args["source"])
        sandbox = self._js._sandbox(state, use_async=True, scripts=self._library)
        try:
            saved = await sandbox.asave_script(**args)
        except ClamBotError as exc:
            _stopped(state)
            raise SandboxToolError(f"Error: {exc}", None) from None
        return self._text(saved)


def save_script_tool(js: SandboxedJSTool, library: ScriptLibrary, **kwargs: Any) -> SaveScriptTool:
    """A ``save_script`` tool saving into `library` under `js`'s policy and audit log
    (`kwargs`: other BaseTool fields, e.g. ``name``)."""
    return SaveScriptTool(js, library, **kwargs)
