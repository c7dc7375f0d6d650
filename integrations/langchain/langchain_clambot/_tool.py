"""SandboxedJSTool: a LangChain tool that runs model-written JavaScript in ClamBot."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from clambot_tools import (
    Approver,
    AuditLog,
    Binding,
    ConfigError,
    Effect,
    Limits,
    Policy,
    ResultShapes,
    RunResult,
    Sandbox,
    SnapshotError,
    binding,
    local_snapshot_key,
)
from clambot_tools.render import model_text, strip_code_fences, tool_description
from langchain_core.callbacks import (
    AsyncCallbackManagerForToolRun,
    CallbackManagerForToolRun,
)
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool, InjectedToolCallId, ToolException
from langchain_core.tools.base import ToolExceptionHandlerOutput
from pydantic import BaseModel, Field, PrivateAttr

from ._adapt import RunState, ToolSpec, guard_binding, once_per_step, stops_the_task
from ._approval import run_approver
from ._ledger import task_run_of
from ._sessions import (
    APPROVALS_KEY,
    RESTORED_KINDS,
    SESSION_KEY,
    LiveSession,
    Relay,
    SessionCache,
    Where,
    acquire,
)
from ._tracing import tool_span_current

logger = logging.getLogger("langchain_clambot")

DEFAULT_NAME = "run_js_sandboxed"

#: the tool call id of the call being run (LangChain gives it to ``run`` only)
_TOOL_CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "clambot_tool_call_id", default=None
)


class SandboxedJSInput(BaseModel):
    """The arguments of SandboxedJSTool: one JavaScript program."""

    code: str = Field(description="The JavaScript program; its last expression is the result.")


@functools.lru_cache(maxsize=1)
def session_input() -> type[SandboxedJSInput]:
    """The args schema of a session tool: `code`, plus what LangGraph's ToolNode
    injects (the state's ``js_session`` and ``js_approvals``, and the tool call id),
    which the model never sees. Raises ImportError if LangGraph is not installed."""
    from langgraph.prebuilt import InjectedState

    class SandboxedJSSessionInput(SandboxedJSInput):
        """`code`, and the injected session state and tool call id."""

        stored_session: Annotated[Any, InjectedState(SESSION_KEY)] = None
        stored_approvals: Annotated[Any, InjectedState(APPROVALS_KEY)] = None
        tool_call_id: Annotated[str | None, InjectedToolCallId] = None

    return SandboxedJSSessionInput


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
        mcp: MCP servers whose tools are granted under their own names (needs
            ``clambot-tools[mcp]``): ``clambot_tools.mcp.MCPConnection`` objects, or
            configs (``{"command": ..., "args": [...]}``, ``{"url": ..., "headers":
            {...}}``, or a mapping of names to them, as MCP clients list servers).
            Effects come from each tool's annotations (see ``clambot_tools.mcp``).
        effects: effects of LangChain tools by name, e.g. ``{"refund": ["write"]}``
            (default ``("read",)``), for ``Policy.deny_effects`` and approvals.
        limits: limits of each run (default ``Limits()``: 5 s, 64 MiB).
        policy: which calls are allowed; its ``approve`` may be
            ``langgraph_interrupt_approver()`` to ask a human through LangGraph.
        audit: an ``AuditLog`` getting one record per run and per tool call.
        result_shapes: learn the shapes of the granted tools' results (never their
            values) from real calls: True, or a ``ResultShapes`` to share. A tool whose
            result type is unknown (``-> dict``, no annotation) is then declared with
            the fields seen so far, and the default description is updated, so the
            model's next script sees what the last one got back.
        max_value_chars: longest JSON of the value shown to the model (default 4000).
        max_log_chars: longest console output shown to the model (default 2000).
        sessions: keep one JavaScript session per LangGraph thread: what a script
            declares is there for the next script of the thread. The session is kept
            in the graph state's ``js_session`` key (declare it with
            ``JSSessionMiddleware()`` or ``JSSessionState``), so the checkpointer
            stores it and any worker can resume it. The tool then returns a LangGraph
            ``Command`` (the ToolMessage and the new snapshot) and must be called by a
            ToolNode (``create_agent`` uses one). A failed script changes nothing.
        max_live_sessions: live sessions kept in this process (one per thread, least
            recently used closed first; a thread without one restores it from the
            state). Default 64.
        on_unreadable_session: what to do when the state's session cannot be restored
            (damaged, or made by another guest build or with other bindings):
            ``"error"`` (the default) fails the call with a tool error saying so;
            ``"reset"`` runs the script in a new, empty session and tells the model
            that earlier definitions are gone.
        snapshot_key: the HMAC-SHA256 key (bytes, or a str as UTF-8; at least 16
            bytes) the sessions' snapshots in the graph state are signed with; a
            snapshot without its signature (one edited in the checkpoint store, say) is
            refused before it is read. Every
            worker resuming the same threads needs the same key. Default: this user's
            ``clambot_tools.local_snapshot_key()`` (the same for every process of the
            user on this machine).
        **kwargs: any other BaseTool field (name, description, callbacks, tags,
            metadata, handle_tool_error...).

    Raises:
        ConfigError: a tool is not a LangChain tool, two tools or bindings share a
            name, ``effects`` names a tool that is not granted, or a limit or policy is
            invalid, or ``sessions=True`` with ``response_format="content_and_artifact"``,
            or ``snapshot_key`` is too short.
        MCPConnectionError: an MCP server in `mcp` cannot be reached.
        GuestUnavailableError: ClamBot's compiled guest is missing.
        ImportError: ``sessions=True`` without LangGraph installed.
    """

    name: str = DEFAULT_NAME
    description: str = ""
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool | str | Callable[[ToolException], ToolExceptionHandlerOutput] | None = (
        True
    )
    max_value_chars: int = Field(default=4000, ge=100)
    max_log_chars: int = Field(default=2000, ge=100)
    sessions: bool = False
    max_live_sessions: int = Field(default=64, ge=1)
    on_unreadable_session: Literal["error", "reset"] = "error"

    _limits: Limits = PrivateAttr()
    _policy: Policy = PrivateAttr()
    _audit: AuditLog | None = PrivateAttr(default=None)
    _specs: tuple[ToolSpec, ...] = PrivateAttr(default=())
    _bindings: tuple[Binding, ...] = PrivateAttr(default=())
    _declaration: str = PrivateAttr(default="")
    _shapes: ResultShapes | None = PrivateAttr(default=None)
    _template: Sandbox | None = PrivateAttr(default=None)
    _cache: SessionCache | None = PrivateAttr(default=None)
    _snapshot_key: bytes | str | None = PrivateAttr(default=None)

    def __init__(
        self,
        *,
        tools: Sequence[BaseTool] = (),
        bindings: Iterable[Binding | Callable[..., Any]] = (),
        effects: Mapping[str, Sequence[Effect]] | None = None,
        limits: Limits | None = None,
        policy: Policy | None = None,
        audit: AuditLog | None = None,
        result_shapes: ResultShapes | bool = False,
        snapshot_key: bytes | str | None = None,
        mcp: Sequence[Any] | Mapping[str, Any] = (),
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
        if mcp:
            from clambot_tools.mcp import mcp_bindings

            plain += tuple(mcp_bindings(mcp, limits=limits))
        shapes = ResultShapes() if result_shapes is True else result_shapes or None
        # The template sandbox checks names, effects and the guest, and describes `tools`.
        template = Sandbox(
            limits=limits,
            policy=policy,
            bindings=[s.template() for s in specs] + list(plain),
            result_shapes=shapes or False,
            snapshot_key=snapshot_key,
        )
        declaration = template.describe_tools() if template.bindings else ""
        sessions = bool(kwargs.get("sessions", False))
        own_description = "description" in kwargs
        if not own_description:
            kwargs["description"] = tool_description(template, sessions=sessions)
        if sessions:
            if kwargs.get("response_format", "content") != "content":
                raise ConfigError(
                    "a session tool returns a LangGraph Command (whose "
                    "ToolMessage carries the RunResult as its artifact): "
                    'leave response_format unset or "content"'
                )
            kwargs["response_format"] = "content"
            kwargs.setdefault("args_schema", session_input())
        kwargs.setdefault("args_schema", SandboxedJSInput)
        super().__init__(**kwargs)
        self._limits = limits
        self._policy = policy
        self._audit = audit
        self._specs = specs
        self._bindings = plain
        self._declaration = declaration
        self._shapes, self._template = shapes, template
        if shapes is not None:
            shapes.listen(lambda _name: self._redescribe(own_description))
        if self.sessions:
            self._snapshot_key = snapshot_key if snapshot_key is not None else _local_key()
            self._cache = SessionCache(self.max_live_sessions, self._new_live_session)

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

    def _redescribe(self, own_description: bool) -> None:
        """Declare `tools` again (a result shape was learned), and update the default
        description, which the agent reads again at its next model call."""
        assert self._template is not None
        self._declaration = self._template.describe_tools() if self._template.bindings else ""
        if not own_description:
            self.description = tool_description(self._template, sessions=self.sessions)

    # -- one run

    def _run_bindings(
        self, state: RunState, *, use_async: bool
    ) -> tuple[list[Binding], Approver | None]:
        """The bindings and the approver of one run, bound to `state`. Writes (and
        calls that need approval) are made once per graph step (`once_per_step`)."""
        bindings = [s.bind(state, use_async=use_async) for s in self._specs]
        bindings += [guard_binding(b, state) for b in self._bindings]
        bindings = [
            once_per_step(b, state) if "write" in b.effects or self._policy.needs_approval(b) else b
            for b in bindings
        ]
        approve = self._policy.approve
        if approve is not None:
            approve = run_approver(approve, state)
        return bindings, approve

    def _state(
        self,
        config: RunnableConfig,
        run_manager: CallbackManagerForToolRun | AsyncCallbackManagerForToolRun | None,
        script: str,
        tool_call_id: str | None,
        stored_approvals: Any,
    ) -> RunState:
        """The RunState of one run: its config (a child of the tool's run), tool call,
        script, and (for a session tool) the bindings the thread allowed for the
        session."""
        child = patch_config(config, callbacks=run_manager.get_child()) if run_manager else config
        grants: list[str] = []
        if self.sessions and isinstance(stored_approvals, Mapping):
            mine = stored_approvals.get(self.name)
            if isinstance(mine, list):
                grants = [g for g in mine if isinstance(g, str)]
        return RunState(
            child,
            call_id=tool_call_id or _TOOL_CALL_ID.get(),
            code=script,
            grants=grants,
            thread_grants=self.sessions,
        )

    def _wait_timeout(self) -> float:
        """How long a call that stops its task waits for the task's other calls: they
        stop at their next tool call, or at their time limit."""
        return self._limits.timeout_s + 10.0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """BaseTool.run, with the tool call id kept for the run (approvals and writes
        are told apart by it when a ToolNode runs several calls in one task), and,
        when the run stops its LangGraph task (an interrupt), only once the task's
        other tool calls have ended (see TaskRun.wait_others)."""
        task = task_run_of(((kwargs.get("config") or {}).get("configurable")) or {})
        running = task.enter() if task is not None else None
        token = _TOOL_CALL_ID.set(kwargs.get("tool_call_id"))
        try:
            return super().run(*args, **kwargs)
        except BaseException as exc:
            if task is not None and running is not None and stops_the_task(exc):
                if not task.wait_others(running, self._wait_timeout()):
                    logger.warning("%s: other calls of the task are still running", self.name)
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
                if not await task.await_others(running, self._wait_timeout()):
                    logger.warning("%s: other calls of the task are still running", self.name)
            raise
        finally:
            _TOOL_CALL_ID.reset(token)
            if task is not None and running is not None:
                task.leave(running)

    def _sandbox(self, state: RunState, *, use_async: bool, **extra: Any) -> Sandbox:
        """A Sandbox for one run, its bindings and approver bound to `state` (`extra`:
        more Sandbox arguments, e.g. ``scripts``)."""
        bindings, approve = self._run_bindings(state, use_async=use_async)
        policy = self._policy
        if approve is not None:
            policy = dataclasses.replace(policy, approve=approve)
        return Sandbox(
            limits=self._limits,
            bindings=bindings,
            policy=policy,
            audit=self._audit,
            result_shapes=self._shapes or False,
            **extra,
        )

    def _respond(self, state: RunState, script: str, result: RunResult) -> tuple[str, RunResult]:
        """(content, artifact) for a run that succeeded.

        Raises the error of a resume value that was not an answer (LangGraph fails the
        resume: answer again), or the LangGraph interrupt raised during the run, if any
        (the graph pauses and re-runs the script on resume), else SandboxToolError if
        the run failed.
        """
        if state.invalid is not None:
            raise state.invalid
        if state.pending is not None:
            raise state.pending
        notes = "".join(f"\nNote: {n}" for n in state.notes)
        content = model_text(
            result,
            script,
            max_value_chars=self.max_value_chars,
            max_log_chars=self.max_log_chars,
            calls_done=None if result.ok else state.done,
            tools=self._template.bindings if self._template is not None else (),
        )
        if result.ok:
            # the artifact goes into the graph's checkpoint: it must encode (U+FFFD for
            # lone surrogates; the text says what they were)
            return content + notes, result.encodable()
        raise SandboxToolError(content + notes, result)

    def _internal(self, exc: Exception) -> SandboxToolError:
        """Log a failure of the sandbox itself and word it as a tool error."""
        logger.exception("%s: the sandbox failed", self.name, exc_info=exc)
        return SandboxToolError(
            f"Error (internal): the sandbox could not run the script: {exc}", None
        )

    def _run(
        self,
        code: str,
        run_manager: CallbackManagerForToolRun | None = None,
        *,
        config: RunnableConfig,
        stored_session: Any = None,
        stored_approvals: Any = None,
        tool_call_id: str | None = None,
    ) -> Any:
        """Run `code` (fences stripped) and return (content, RunResult), or with
        ``sessions=True`` a LangGraph Command carrying the ToolMessage and the session.

        Raises SandboxToolError (a ToolException) if the run failed, or LangGraph's
        GraphInterrupt when an approval or a tool paused the graph for a human, or a
        pydantic ValidationError when the graph was resumed with a value that is not
        an answer to the approval question, or ConfigError for a session tool whose
        graph state has no ``js_session`` key.
        """
        script = strip_code_fences(code)
        state = self._state(config, run_manager, script, tool_call_id, stored_approvals)
        with tool_span_current(run_manager):  # the run's span goes under this tool's
            if self.sessions:
                return self._run_session(script, state, config, stored_session, tool_call_id)
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
        stored_session: Any = None,
        stored_approvals: Any = None,
        tool_call_id: str | None = None,
    ) -> Any:
        """The async twin of `_run`: the script runs with ``Sandbox.arun`` and granted
        LangChain tools are called with ``ainvoke`` on the caller's event loop.

        Raises SandboxToolError, GraphInterrupt, ValidationError or ConfigError as
        `_run` does.
        """
        script = strip_code_fences(code)
        state = self._state(config, run_manager, script, tool_call_id, stored_approvals)
        with tool_span_current(run_manager):  # the run's span goes under this tool's
            if self.sessions:
                return await self._arun_session(script, state, config, stored_session, tool_call_id)
            try:
                result = await self._sandbox(state, use_async=True).arun(script)
            except Exception as exc:
                raise self._internal(exc) from exc
        return self._respond(state, script, result)

    # -- sessions (sessions=True)

    def close_sessions(self) -> None:
        """Close the live sessions this tool keeps in this process (those not running).
        Nothing is lost: the next call of each thread restores its session from the
        graph's state."""
        if self._cache is not None:
            self._cache.close()

    def _new_live_session(self) -> LiveSession:
        """An empty LiveSession: a Sandbox with relay bindings (and approver)."""
        relay = Relay()
        bindings = [relay.binding(s.template(), either=True) for s in self._specs]
        bindings += [relay.binding(b, either=False) for b in self._bindings]
        policy = self._policy
        if policy.approve is not None:
            policy = dataclasses.replace(policy, approve=relay.approve)
        sandbox = Sandbox(
            limits=self._limits,
            bindings=bindings,
            policy=policy,
            audit=self._audit,
            result_shapes=self._shapes or False,
            snapshot_key=self._snapshot_key,
        )
        return LiveSession(sandbox, relay)

    def _session_of(
        self, config: RunnableConfig, stored_session: Any, tool_call_id: str | None
    ) -> tuple[Any, Where, LiveSession]:
        """(this tool's stored record or None, where the call runs, its live session).

        Raises ConfigError when the graph's state has no ``js_session`` key.
        """
        if stored_session is None or tool_call_id is None:
            raise ConfigError(
                f"{self.name} keeps its JavaScript session in the graph state's "
                f"'{SESSION_KEY}' key, and this call had none: call it from a LangGraph "
                "ToolNode (create_agent uses one) whose state declares it: "
                "create_agent(..., middleware=[JSSessionMiddleware()]), or a state schema "
                "that mixes in JSSessionState"
            )
        stored = (
            stored_session.get(self.name) if isinstance(stored_session, Mapping) else stored_session
        )
        assert self._cache is not None
        where = Where.of(config, tool_call_id)
        return stored, where, self._cache.get(where.thread)

    def _sync_session(self, live: LiveSession, stored: Any, where: Where, state: RunState) -> None:
        """Make `live` hold the thread's session as the state has it.

        Raises SandboxToolError if it cannot be restored (and on_unreadable_session is
        "error").
        """
        try:
            reason = live.sync(stored, where, reset=self.on_unreadable_session == "reset")
        except SnapshotError as exc:
            raise SandboxToolError(
                "Error (session): the JavaScript session of this conversation could not "
                f"be restored, so the script did not run: {exc}.\nThis is not a mistake "
                "in the script: tell the user that the JavaScript state of this "
                "conversation cannot be read by this version of the tool.",
                None,
            ) from None
        if reason is not None:
            state.note(
                f"the JavaScript session of this conversation could not be restored "
                f"({reason}), so this script ran in a new, empty session: what "
                "earlier scripts defined is gone."
            )

    def _session_result(
        self,
        live: LiveSession,
        state: RunState,
        script: str,
        result: RunResult,
        stored: Any,
        where: Where,
        tool_call_id: str,
    ) -> Any:
        """The Command for a run in `live`: its ToolMessage and the session's new
        snapshot for the state. A run that failed or paused changes nothing: the
        session is put back as it was (and the error or interrupt raised), except
        that bindings a human allowed for the session during a failed run stay
        allowed (the Command then carries the error's ToolMessage)."""
        from langgraph.types import Command

        err = result.error
        if err is not None and err.message.startswith("redeclaration of"):
            state.note(
                "this conversation's session keeps what earlier scripts declared: "
                "assign to that name (without let, const or class), or pick "
                "another name."
            )
        try:
            content, result = self._respond(state, script, result)
        except BaseException as exc:
            if state.stopped or err is None or err.kind not in RESTORED_KINDS:
                live.rollback()
            if not isinstance(exc, SandboxToolError) or not state.new_grants:
                raise
            failed = ToolMessage(
                content=exc.content, tool_call_id=tool_call_id, name=self.name, status="error"
            )
            return Command(
                update={"messages": [failed], APPROVALS_KEY: {self.name: sorted(state.new_grants)}}
            )
        try:
            record = live.commit(stored, where)
        except Exception as exc:
            live.drop()
            raise self._internal(exc) from exc
        message = ToolMessage(
            content=content, artifact=result, tool_call_id=tool_call_id, name=self.name
        )
        update: dict[str, Any] = {"messages": [message], SESSION_KEY: {self.name: record}}
        if state.new_grants:
            update[APPROVALS_KEY] = {self.name: sorted(state.new_grants)}
        return Command(update=update)

    def _run_session(
        self,
        script: str,
        state: RunState,
        config: RunnableConfig,
        stored_session: Any,
        tool_call_id: str | None,
    ) -> Any:
        """`_run` in the thread's session. Raises as `_run` does."""
        stored, where, live = self._session_of(config, stored_session, tool_call_id)
        assert tool_call_id is not None
        with live.lock:
            self._sync_session(live, stored, where, state)
            live.relay.start(*self._run_bindings(state, use_async=False))
            assert live.session is not None
            try:
                result = live.session.run(script)
            except Exception as exc:
                live.drop()
                raise self._internal(exc) from exc
            finally:
                live.relay.end()
            return self._session_result(live, state, script, result, stored, where, tool_call_id)

    async def _arun_session(
        self,
        script: str,
        state: RunState,
        config: RunnableConfig,
        stored_session: Any,
        tool_call_id: str | None,
    ) -> Any:
        """`_arun` in the thread's session. Raises as `_run` does.

        Cancelled, it hands the session to a thread that closes it once the cancelled
        run has stopped; the thread's next call restores it from the state.
        """
        stored, where, live = self._session_of(config, stored_session, tool_call_id)
        assert tool_call_id is not None
        await acquire(live.lock)
        release = True
        try:
            self._sync_session(live, stored, where, state)
            live.relay.start(*self._run_bindings(state, use_async=True))
            assert live.session is not None
            try:
                result = await live.session.arun(script)
            except asyncio.CancelledError:
                release = False
                threading.Thread(
                    target=_drop_and_release,
                    args=(live,),
                    daemon=True,
                    name="clambot-session-close",
                ).start()
                raise
            except Exception as exc:
                live.drop()
                raise self._internal(exc) from exc
            return self._session_result(live, state, script, result, stored, where, tool_call_id)
        finally:
            if release:
                live.relay.end()
                live.lock.release()


def _drop_and_release(live: LiveSession) -> None:
    """Close `live`'s session (waiting for a cancelled run to stop), then unlock it."""
    try:
        live.drop()
    finally:
        live.relay.end()
        live.lock.release()


def _local_key() -> bytes:
    """This user's local snapshot key; without a private cache directory to keep it
    in, a key of this process only (its sessions then restore only here)."""
    try:
        return local_snapshot_key()
    except ConfigError as exc:
        logger.warning(
            "%s; session snapshots are signed with a key of this process only, so no "
            "other process can restore them: pass SandboxedJSTool(snapshot_key=...)",
            exc,
        )
        return os.urandom(32)
