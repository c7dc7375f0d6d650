"""SandboxedJSTool: a LangChain tool that runs model-written JavaScript in ClamBot."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from clambot_tools import (
    AuditLog,
    Binding,
    ConfigError,
    Effect,
    Limits,
    Policy,
    RunResult,
    Sandbox,
    binding,
)
from langchain_core.callbacks import (
    AsyncCallbackManagerForToolRun,
    CallbackManagerForToolRun,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool, ToolException
from langchain_core.tools.base import ToolExceptionHandlerOutput
from pydantic import BaseModel, Field, PrivateAttr

from ._adapt import RunState, ToolSpec, guard_binding
from ._approval import SessionApprovals, run_approver
from ._fences import strip_code_fences
from ._render import render_error, render_success

logger = logging.getLogger("langchain_clambot")

DEFAULT_NAME = "run_js_sandboxed"


class SandboxedJSInput(BaseModel):
    """The arguments of SandboxedJSTool: one JavaScript program."""

    code: str = Field(
        description=(
            "A JavaScript program (plain JavaScript: not Python, not TypeScript). "
            "Top-level await is allowed. The value of the last expression is the result "
            "(no top-level return). Call the granted tools as "
            "`await tools.name({...})`."
        )
    )


class SandboxToolError(ToolException):
    """A run that failed, as LangChain's tool error.

    Its message (``args[0]`` and ``content``) is the compact text the model reads: the
    error's kind, name and message, the line with a short code frame, the logs. With
    ``handle_tool_error=True`` (the default) LangChain turns it into a ToolMessage with
    ``status="error"`` and that text as content, and the agent loop goes on.

    Attributes:
        content: the text for the model.
        result: the RunResult of the failed run (None if the sandbox itself failed).
    """

    def __init__(self, content: str, result: RunResult | None) -> None:
        super().__init__(content)
        self.content = content
        self.result = result


_ABOUT = (
    "Run a JavaScript program in a secure sandbox and get back the value of its last "
    "expression (as JSON) and its console output.\n"
    "Write plain JavaScript (ES2023): not Python, not TypeScript (no type annotations), "
    "no import or require, no top-level `return`. Top-level `await` works. The value of "
    "the last expression is the result, e.g. end the program with `({{count, items}})` "
    "or `total`. Each run starts fresh: nothing is kept between runs. There is no "
    "network, file system or environment{outside}.\n"
    "Limits per run: {timeout:g} s (tool calls included) and {memory} MiB of memory."
)
_TOOLS = (
    "The only way to reach the outside is the global `tools` object: call "
    "`await tools.name({{...}})` with one object of named arguments, and run independent "
    "calls at once with `await Promise.all([tools.a({{...}}), tools.b({{...}})])`. A "
    "failed call throws an Error you can catch. `tools` is declared below in TypeScript "
    "notation only to show the types; write plain JavaScript.\n\n{declaration}"
)


class SandboxedJSTool(BaseTool):
    """Runs the JavaScript a model writes in ClamBot's sandbox (QuickJS-NG in
    WebAssembly: no files, network or environment), with LangChain tools and ClamBot
    bindings granted as ``await tools.<name>({...})``.

    The tool's input is ``{"code": "<JavaScript>"}`` (markdown fences around it are
    stripped). Its output is ``(content, artifact)``: a compact text for the model
    (the value as JSON, capped, and the console output) and the ``RunResult``. Every
    failure of the script (syntax, exception, time or memory limit, a refused or
    failed tool call) raises ``SandboxToolError`` (a ``ToolException``) whose message
    says what failed and where; with ``handle_tool_error=True`` (the default) the model
    gets it as a ToolMessage with ``status="error"`` and the agent loop continues.

    Args:
        tools: LangChain tools (``BaseTool``, ``@tool`` functions, toolkit tools)
            granted to scripts under their own names, descriptions and argument schemas.
            A call from the script goes through the tool's ``invoke``/``ainvoke`` with
            the run's callbacks and config; an error it raises (a ``ToolException``
            or any other) becomes a JS Error with its message.
        bindings: ClamBot bindings (``binding(...)`` objects, plain callables, the
            ``clambot_tools.stdlib`` ones) granted as they are.
        effects: effects of LangChain tools by name, e.g. ``{"refund": ["write"]}``
            (default ``("read",)``), for ``Policy.deny_effects`` and approvals.
        limits: limits of each run (default ``Limits()``: 5 s, 64 MiB).
        policy: which calls are allowed; its ``approve`` may be
            ``langgraph_interrupt_approver()`` to ask a human through LangGraph.
        audit: an ``AuditLog`` getting one record per run and per tool call.
        max_value_chars: longest JSON of the value shown to the model (default 4000).
        max_log_chars: longest console output shown to the model (default 2000).
        **kwargs: any other BaseTool field (name, description, callbacks, tags,
            metadata, handle_tool_error...).

    Raises:
        ConfigError: a tool is not a LangChain tool, two tools or bindings share a
            name, ``effects`` names a tool that is not granted, or a limit or policy is
            invalid.
        GuestUnavailableError: ClamBot's compiled guest is missing.
    """

    name: str = DEFAULT_NAME
    description: str = ""
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: (
        bool | str | Callable[[ToolException], ToolExceptionHandlerOutput] | None
    ) = True
    max_value_chars: int = Field(default=4000, ge=100)
    max_log_chars: int = Field(default=2000, ge=100)

    _limits: Limits = PrivateAttr()
    _policy: Policy = PrivateAttr()
    _audit: AuditLog | None = PrivateAttr(default=None)
    _specs: tuple[ToolSpec, ...] = PrivateAttr(default=())
    _bindings: tuple[Binding, ...] = PrivateAttr(default=())
    _session: SessionApprovals = PrivateAttr(default_factory=SessionApprovals)
    _declaration: str = PrivateAttr(default="")

    def __init__(
        self,
        *,
        tools: Sequence[BaseTool] = (),
        bindings: Iterable[Binding | Callable[..., Any]] = (),
        effects: Mapping[str, Sequence[Effect]] | None = None,
        limits: Limits | None = None,
        policy: Policy | None = None,
        audit: AuditLog | None = None,
        **kwargs: Any,
    ) -> None:
        limits = limits if limits is not None else Limits()
        policy = policy if policy is not None else Policy()
        if not isinstance(limits, Limits):
            raise ConfigError("limits must be a clambot_tools.Limits")
        if not isinstance(policy, Policy):
            raise ConfigError("policy must be a clambot_tools.Policy")
        if audit is not None and not isinstance(audit, AuditLog):
            raise ConfigError("audit must be a clambot_tools.AuditLog")
        effects = dict(effects or {})
        tool_list = list(tools)
        unknown = sorted(set(effects) - {getattr(t, "name", None) for t in tool_list})
        if unknown:
            raise ConfigError(f"effects= names tools that are not granted: {unknown}")
        specs = tuple(
            ToolSpec.of(t, effects.get(t.name, ("read",)) if isinstance(t, BaseTool) else ())
            for t in tool_list
        )
        plain = tuple(binding(b) for b in bindings)
        # The template sandbox checks names, effects and the guest, and describes `tools`.
        template = Sandbox(limits=limits, policy=policy,
                           bindings=[s.template() for s in specs] + list(plain))
        declaration = template.describe_tools() if template.bindings else ""
        if "description" not in kwargs:
            kwargs["description"] = _description(limits, declaration)
        kwargs.setdefault("args_schema", SandboxedJSInput)
        super().__init__(**kwargs)
        self._limits = limits
        self._policy = policy
        self._audit = audit
        self._specs = specs
        self._bindings = plain
        self._declaration = declaration

    @property
    def limits(self) -> Limits:
        """The limits of each run."""
        return self._limits

    @property
    def policy(self) -> Policy:
        """The policy deciding each tool call."""
        return self._policy

    def describe_tools(self) -> str:
        """The TypeScript declaration of the ``tools`` scripts can call ("" for none)."""
        return self._declaration

    # -- one run

    def _sandbox(self, state: RunState, *, use_async: bool) -> Sandbox:
        """A Sandbox for one run, its bindings and approver bound to `state`."""
        bindings = [s.bind(state, use_async=use_async) for s in self._specs]
        bindings += [guard_binding(b, state) for b in self._bindings]
        policy = self._policy
        if policy.approve is not None:
            policy = dataclasses.replace(
                policy, approve=run_approver(policy.approve, state, self._session))
        return Sandbox(limits=self._limits, bindings=bindings, policy=policy,
                       audit=self._audit)

    def _respond(self, state: RunState, script: str, result: RunResult) -> tuple[str, RunResult]:
        """(content, artifact) for a run that succeeded.

        Raises the LangGraph interrupt raised during the run, if any (the graph pauses
        and re-runs the script on resume), else SandboxToolError if the run failed.
        """
        if state.pending is not None:
            raise state.pending
        notes = "".join(f"\nNote: {n}" for n in state.notes)
        if result.ok:
            content = render_success(result, max_value_chars=self.max_value_chars,
                                     max_log_chars=self.max_log_chars)
            return content + notes, result
        content = render_error(result, script, max_log_chars=self.max_log_chars,
                               tool_name=self.name, calls_done=state.done)
        raise SandboxToolError(content + notes, result)

    def _internal(self, exc: Exception) -> SandboxToolError:
        """Log a failure of the sandbox itself and word it as a tool error."""
        logger.exception("%s: the sandbox failed", self.name, exc_info=exc)
        return SandboxToolError(
            f"Error (internal): the sandbox could not run the script: {exc}", None)

    def _run(
        self,
        code: str,
        run_manager: CallbackManagerForToolRun | None = None,
        *,
        config: RunnableConfig,
    ) -> tuple[str, RunResult]:
        """Run `code` (fences stripped) and return (content, RunResult).

        Raises SandboxToolError (a ToolException) if the run failed, or LangGraph's
        GraphInterrupt when an approval or a tool paused the graph for a human.
        """
        script = strip_code_fences(code)
        child = patch_config(config, callbacks=run_manager.get_child()) if run_manager \
            else config
        state = RunState(child)
        try:
            result = self._sandbox(state, use_async=False).run(script)
        except Exception as exc:
            raise self._internal(exc) from exc
        return self._respond(state, script, result)

    async def _arun(
        self,
        code: str,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        *,
        config: RunnableConfig,
    ) -> tuple[str, RunResult]:
        """The async twin of `_run`: the script runs with ``Sandbox.arun`` and granted
        LangChain tools are called with ``ainvoke`` on the caller's event loop.

        Raises SandboxToolError or GraphInterrupt as `_run` does.
        """
        script = strip_code_fences(code)
        child = patch_config(config, callbacks=run_manager.get_child()) if run_manager \
            else config
        state = RunState(child)
        try:
            result = await self._sandbox(state, use_async=True).arun(script)
        except Exception as exc:
            raise self._internal(exc) from exc
        return self._respond(state, script, result)


def _description(limits: Limits, declaration: str) -> str:
    """The tool's description: what the language is, how results and tools work, the
    limits, then the TypeScript declaration of `tools` when any are granted."""
    outside = " except the tools below" if declaration else ""
    text = _ABOUT.format(outside=outside, timeout=limits.timeout_s, memory=limits.memory_mb)
    if declaration:
        text += "\n" + _TOOLS.format(declaration=declaration)
    return text
