"""LangChain tools and ClamBot bindings as the bindings of one run.

ClamBot calls bindings (and the approver) on worker threads or on an event loop that do
not carry the context of the LangChain run that started the script. Each run therefore
gets its own small Sandbox whose bindings close over a `RunState`: the run's
RunnableConfig (so nested tool runs are children of the script's run, with its
callbacks, tags and LangGraph configuration), a copy of its context variables (so an
approver or a binding can call LangGraph's ``interrupt()``), and the LangGraph
"bubble-up" exception (an interrupt) raised by one of them, which ClamBot would
otherwise turn into a plain failed call. Building a Sandbox costs about 0.1 ms.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import hashlib
import inspect
import sys
import threading
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from clambot_tools import Binding, ConfigError, Effect, TransientError, binding
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from ._ledger import Outcome, TaskRun, canonical_json, task_run_of
from ._tracing import with_current_span


@functools.lru_cache(maxsize=1)
def bubble_up_types() -> tuple[type[BaseException], ...]:
    """LangGraph's control-flow exceptions (``GraphBubbleUp``: interrupts, parent
    commands), or none when LangGraph is not installed. Never raises."""
    try:
        from langgraph.errors import GraphBubbleUp
    except ImportError:
        return ()
    return (GraphBubbleUp,)


class RunPaused(Exception):
    """A tool call made after the run was paused for a human (the call is not made)."""


class RunState:
    """What the bindings and the approver of one run share.

    Attributes:
        context: a copy of the context variables of the tool's run (LangGraph's
            runnable config among them); each use runs in a fresh copy of it.
        config: the RunnableConfig nested LangChain tools are invoked with.
        task: the run of the LangGraph task this run is part of, shared by the tool
            calls of that task (a private one outside LangGraph): its approval
            questions and answers, and the writes it completed.
        call_id: the model's tool call id ("" when unknown).
        scope: what tells this run's writes from another tool call's in one task (the
            tool call id, else the script's digest).
        session_scope: what an ``ALLOW_SESSION`` answer covers: the LangGraph
            ``"thread"`` (a session tool keeps it in the graph state), or the rest of
            this ``"script"``.
        grants: bindings allowed for the session (no question is asked for them).
        new_grants: those of them allowed during this run.
        pending: the LangGraph interrupt raised during the run, re-raised when the run
            ends (the script's result is then discarded: LangGraph re-runs it).
        invalid: a resume value that was not an answer, re-raised when the run ends
            (LangGraph then fails the resume, and the question can be answered again).
        notes: sentences for the model about calls the run refused on its own.
    """

    def __init__(
        self,
        config: RunnableConfig | None,
        *,
        call_id: str | None = None,
        code: str = "",
        grants: Iterable[str] = (),
        thread_grants: bool = False,
    ) -> None:
        self.context = contextvars.copy_context()
        self.config = config
        conf = (config or {}).get("configurable") or {}
        self.task: TaskRun = task_run_of(conf) or TaskRun(None)
        self.call_id = call_id or ""
        code_sha256 = hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()
        self.scope = self.call_id or code_sha256
        self.session_scope: Literal["thread", "script"] = "thread" if thread_grants else "script"
        self.grants: set[str] = set(grants)
        self.new_grants: set[str] = set()
        self.pending: BaseException | None = None
        self.invalid: BaseException | None = None
        self.notes: list[str] = []
        #: completed tool calls by binding name (the model is told of them on failure)
        self.done: dict[str, int] = {}
        self.approval_lock = threading.Lock()
        self._lock = threading.Lock()
        self._occurrences: dict[tuple[str, str], set[int]] = {}

    @property
    def stopped(self) -> bool:
        """Whether the run waits for a human or failed its resume (no more calls): its
        own question, or one another tool call of its task asked (the task pauses
        with it)."""
        if self.pending is None and self.invalid is None and self.task.open is not None:
            self._stop_with(self.task.open)
        return self.pending is not None or self.invalid is not None

    def _stop_with(self, exc: BaseException) -> None:
        """Stop the run with the task's interrupt (or invalid resume value)."""
        if is_invalid_resume(exc):
            self.fail(exc)
        else:
            self.pause(copy_interrupt(exc))

    def call_done(self, name: str) -> None:
        """Count a tool call that returned (its effects happened)."""
        with self._lock:
            self.done[name] = self.done.get(name, 0) + 1

    def grant(self, name: str) -> None:
        """Allow `name` for the session (see `session_scope`)."""
        with self._lock:
            if name not in self.grants:
                self.grants.add(name)
                self.new_grants.add(name)

    def granted(self, name: str) -> bool:
        """Whether `name` is allowed for the session."""
        with self._lock:
            return name in self.grants

    def note(self, text: str) -> None:
        """Add a sentence for the model (once)."""
        with self._lock:
            if text not in self.notes:
                self.notes.append(text)

    def pause(self, exc: BaseException) -> None:
        """Keep the first interrupt of the run; later calls are refused (those of the
        task's other tool calls too: the task pauses with it)."""
        with self._lock:
            if self.pending is None:
                self.pending = exc
        if self.task.open is None:
            self.task.open = exc

    def fail(self, exc: BaseException) -> None:
        """Keep an invalid resume value's error; later calls are refused."""
        with self._lock:
            if self.invalid is None:
                self.invalid = exc

    def check_open(self, name: str) -> None:
        """Raise RunPaused if the run (or its task) waits for a human: no more calls
        are made."""
        if self.stopped:
            raise RunPaused(f"tools.{name} was not called: the run is paused for a human")

    def write_key(self, name: str, kwargs: Mapping[str, Any]) -> tuple[str, Callable[[], None]]:
        """The identity of a call to the write binding `name` (see TaskRun.write_key),
        identical calls of one script told apart by their count; and a function that
        gives the count back, for a call that did not happen (it was refused, or will
        be tried again: a retry is the same call)."""
        args = canonical_json(kwargs)
        with self._lock:
            used = self._occurrences.setdefault((name, args), set())
            n = 0
            while n in used:
                n += 1
            used.add(n)

        def release() -> None:
            with self._lock:
                used.discard(n)

        return TaskRun.write_key(self.scope, name, args, n), release

    def run_sync(self, func: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
        """Call `func(**kwargs)` in a copy of the run's context; an interrupt it raises
        pauses the run and the script sees RunPaused. Other exceptions propagate."""
        try:
            return with_current_span(self.context.copy()).run(func, **kwargs)
        except bubble_up_types() as exc:
            self.pause(exc)
            raise RunPaused("the run is paused for a human") from None

    async def in_context(self, awaitable: Awaitable[Any]) -> Any:
        """Await `awaitable`, as a task in a copy of the run's context when it is a
        coroutine (on Python 3.11+; before, in the awaiting task's context). Raises
        whatever it raises."""
        if sys.version_info >= (3, 11) and asyncio.iscoroutine(awaitable):
            loop = asyncio.get_running_loop()
            context = with_current_span(self.context.copy())
            return await loop.create_task(awaitable, context=context)
        return await awaitable

    async def run_async(self, awaitable: Awaitable[Any]) -> Any:
        """Await `awaitable` with `in_context`; an interrupt it raises pauses the run
        and the script sees RunPaused. Other exceptions propagate."""
        try:
            return await self.in_context(awaitable)
        except bubble_up_types() as exc:
            self.pause(exc)
            raise RunPaused("the run is paused for a human") from None


def is_invalid_resume(exc: BaseException) -> bool:
    """Whether `exc` is LangGraph's error for a resume value that its interrupt's
    ``response_schema`` refused. Never raises."""
    try:
        from langgraph.errors import is_invalid_resume as check
    except ImportError:  # pragma: no cover - langgraph before 1.2, or not installed
        return False
    return isinstance(exc, ValidationError) and check(exc)


def stops_the_task(exc: BaseException) -> bool:
    """Whether `exc`, raised by the tool, ends its LangGraph task for now (an interrupt,
    or a resume value that was not an answer)."""
    return isinstance(exc, bubble_up_types()) or is_invalid_resume(exc)


def copy_interrupt(exc: BaseException) -> BaseException:
    """A copy of a task's interrupt for one more tool call to raise (the tool calls of a
    ToolNode raise in threads or tasks of their own)."""
    try:
        return type(exc)(*exc.args)
    except Exception:  # noqa: BLE001 - an exception type with another signature
        return exc


def to_json_data(value: Any, name: str, depth: int = 0) -> Any:
    """A LangChain tool's output as JSON data for the script: messages become their
    content, pydantic models (documents too) their JSON dump, and other values what
    pydantic's JSON mode makes of them (dates as ISO strings, sets and tuples as lists,
    dataclasses as objects...); anything it cannot encode becomes its ``str()``.

    Raises TypeError for a LangGraph ``Command``, which a script cannot apply.
    """
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if depth > 200:
        return str(value)
    if isinstance(value, BaseMessage):
        return to_json_data(value.content, name, depth + 1)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): to_json_data(v, name, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_data(v, name, depth + 1) for v in value]
    cls = type(value)
    if cls.__name__ == "Command" and cls.__module__.startswith("langgraph"):
        raise TypeError(
            f"tools.{name} returned a LangGraph Command, which a script cannot "
            "apply; call this tool directly instead"
        )
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json_data(dataclasses.asdict(value), name, depth + 1)
    try:
        return to_jsonable_python(value)
    except (PydanticSerializationError, ValueError):
        return str(value)


def _validation_message(name: str, exc: ValidationError) -> str:
    """One line naming each field a tool's schema refused, as ClamBot words it."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        parts.append(f"{loc}: {err['msg']}")
    return f"invalid arguments for tools.{name}: " + "; ".join(parts)


def _return_hint(func: Any) -> Any:
    """The return annotation of `func`, evaluated, or inspect's empty marker."""
    target = func if inspect.isroutine(func) else type(func).__call__
    try:
        return typing.get_type_hints(target, include_extras=True).get(
            "return", inspect.Parameter.empty
        )
    except Exception:  # noqa: BLE001 - unresolvable annotations: the type stays unknown
        return inspect.Parameter.empty


def _call_schema(tool: BaseTool) -> dict[str, Any]:
    """The JSON Schema of the arguments the model (and so a script) gives `tool`."""
    schema_src = tool.tool_call_schema
    if isinstance(schema_src, dict):
        return {k: v for k, v in schema_src.items() if k != "description"}
    if issubclass(schema_src, BaseModel):
        return schema_src.model_json_schema()
    return dict(schema_src.schema())  # a pydantic.v1 model


def _injected(tool: BaseTool, schema: dict[str, Any]) -> list[str]:
    """Parameters of `tool` that LangGraph injects (``ToolRuntime``, ``InjectedState``,
    ``InjectedStore``, ``InjectedToolCallId``, ``InjectedToolArg``) and that have no
    default: in the tool's input schema but left out of the schema the model sees."""
    if isinstance(tool.args_schema, dict):
        return []  # a JSON Schema: nothing is injected
    try:
        full = tool.get_input_schema()
    except Exception:  # noqa: BLE001 - a schema LangChain cannot build: nothing to compare
        return []
    fields = getattr(full, "model_fields", None)
    if not isinstance(fields, dict):
        return []
    seen = set(schema.get("properties") or {})
    return [n for n, f in fields.items() if n not in seen and f.is_required()]


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    """A LangChain tool made ready, once, to be granted to runs as a binding.

    Arguments from a script are checked against the tool's call schema (the one the
    model sees) by ClamBot's JSON Schema validator before the tool runs, as strictly as
    a native binding: ``"1042"`` is not a number and unknown keys are refused, where the
    tool's own pydantic validation would coerce the one and drop the other. The tool's
    ``invoke`` then validates as it always does (and converts, e.g. ISO dates).

    Attributes:
        tool: the tool to invoke (a copy with its error handlers off when the original
            turns errors into output, so a failure reaches the script as an error).
        effects: the binding's effects (``read`` unless the caller said otherwise).
        returns: the return annotation of the tool's function, if it has one.
        async_only: the tool has no sync implementation.
        shape: the binding as ``describe_tools`` shows it: name, description,
            argument schema, effects and result type (its function is never called).
    """

    tool: BaseTool
    effects: tuple[Effect, ...]
    returns: Any
    async_only: bool
    shape: Binding

    @classmethod
    def of(cls, tool: BaseTool, effects: Sequence[Effect]) -> ToolSpec:
        """Prepare `tool`.

        Raises ConfigError if it is not a LangChain BaseTool, or if it takes an
        argument LangGraph injects (a ``ToolRuntime``, ``InjectedState``...) with no
        default: a script cannot supply one.
        """
        if not isinstance(tool, BaseTool):
            raise ConfigError(
                f"tools= takes LangChain tools (BaseTool, @tool functions), got "
                f"{type(tool).__name__}; grant plain Python callables with bindings="
            )
        schema = _call_schema(tool)
        injected = _injected(tool, schema)
        if injected:
            raise ConfigError(
                f"tool {tool.name!r} takes {', '.join(map(repr, injected))}, which LangGraph "
                "injects (ToolRuntime, InjectedState, InjectedStore, InjectedToolCallId or "
                "InjectedToolArg) when the model calls the tool itself; a script cannot "
                "supply it, so it cannot be granted to a script. Give this tool to the "
                "agent directly (beside the sandbox tool), or grant a version that gets "
                "what it needs another way (a closure, a default)"
            )
        target = tool
        if tool.handle_tool_error or tool.handle_validation_error:
            target = tool.model_copy(
                update={"handle_tool_error": False, "handle_validation_error": False}
            )
        func = getattr(tool, "func", None)
        coro = getattr(tool, "coroutine", None)
        returns: Any = inspect.Parameter.empty
        if tool.response_format == "content" and (func or coro) is not None:
            returns = _return_hint(func or coro)
        # a StructuredTool made from a coroutine only cannot be invoked synchronously
        async_only = func is None and coro is not None

        def never_called(**kwargs: Any) -> Any:
            raise NotImplementedError  # pragma: no cover - describe only

        if returns is not inspect.Parameter.empty:
            never_called.__annotations__ = {"return": returns}
        shape = binding(
            never_called,
            name=tool.name,
            description=tool.description,
            json_schema=schema,
            effects=tuple(effects),
        )
        return cls(target, tuple(effects), returns, async_only, shape)

    @property
    def name(self) -> str:
        """The tool's name, which is the binding's name."""
        return self.tool.name

    def template(self) -> Binding:
        """The binding as ``describe_tools`` shows it (never called)."""
        return self.shape

    def bind(self, state: RunState, *, use_async: bool) -> Binding:
        """The binding for one run: it invokes the tool with the run's config.

        In the script, a ToolException (or any exception) the tool raises becomes an
        Error with its message; arguments the tool's schema refuses become an Error
        naming each bad field.
        """
        tool, name = self.tool, self.name

        def call(**kwargs: Any) -> Any:
            state.check_open(name)
            try:
                out = state.run_sync(tool.invoke, {"input": kwargs, "config": state.config})
            except ValidationError as exc:
                raise ValueError(_validation_message(name, exc)) from None
            state.call_done(name)
            return to_json_data(out, name)

        async def acall(**kwargs: Any) -> Any:
            state.check_open(name)
            try:
                out = await state.run_async(tool.ainvoke(kwargs, config=state.config))
            except ValidationError as exc:
                raise ValueError(_validation_message(name, exc)) from None
            state.call_done(name)
            return to_json_data(out, name)

        is_async = use_async or self.async_only
        # the shape's result_schema (from the tool's return annotation) stays with it
        return dataclasses.replace(self.shape, func=acall if is_async else call, is_async=is_async)


def guard_binding(b: Binding, state: RunState) -> Binding:
    """`b` for one run: refused once the run is paused, run in a copy of the run's
    context (so the function may use LangGraph's ``interrupt()`` or ``get_config()``)."""
    func = b.func
    if b.is_async:

        async def acall(**kwargs: Any) -> Any:
            state.check_open(b.name)
            out = await state.run_async(func(**kwargs))
            state.call_done(b.name)
            return out

        return dataclasses.replace(b, func=acall)

    def call(**kwargs: Any) -> Any:
        state.check_open(b.name)
        out = state.run_sync(func, kwargs)
        state.call_done(b.name)
        return out

    return dataclasses.replace(b, func=call)


def _recorded(value: Any, name: str) -> Any:
    """`value` as the JSON data a completed write is recorded with (and replayed as)."""
    try:
        return to_json_data(value, name)
    except TypeError:
        return str(value)


def _replay(outcome: Outcome) -> Any:
    """What a write that completed in an earlier run of the task returned (or raise its
    error again): it is not made a second time."""
    if outcome.ok:
        return outcome.value
    raise RuntimeError(outcome.error or "the tool failed")


# Failures after which the call did not happen, or will be tried again by the run.
_NOT_DONE: tuple[type[BaseException], ...] = (RunPaused, TransientError)


def once_per_step(b: Binding, state: RunState) -> Binding:
    """`b` (a write, or a binding that needs approval) for one run: made at most once
    per step of the graph.

    LangGraph runs a paused task again from its start when it is resumed (and a
    ToolNode task holds all the scripts of one AIMessage). A call that completed in an
    earlier run of the task, identified by the tool call, the binding, its arguments
    and how many identical calls the script made before it, is not made again: the
    script gets the recorded result (or error). How each call ended is recorded in
    the step's checkpoint (see `_ledger`), so this holds on any worker.
    """
    func, name = b.func, b.name
    task = state.task
    if b.is_async:

        async def acall(**kwargs: Any) -> Any:
            key, release = state.write_key(name, kwargs)
            await task.aload()
            prior = task.outcome(key)
            if prior is not None:
                state.call_done(name)
                return _replay(prior)
            try:
                out = await func(**kwargs)
            except _NOT_DONE:
                release()
                raise
            except Exception as exc:
                await task.arecord_done(key, Outcome(False, error=str(exc)))
                raise
            await task.arecord_done(key, Outcome(True, _recorded(out, name)))
            return out

        return dataclasses.replace(b, func=acall)

    def call(**kwargs: Any) -> Any:
        key, release = state.write_key(name, kwargs)
        task.load()
        prior = task.outcome(key)
        if prior is not None:
            state.call_done(name)
            return _replay(prior)
        try:
            out = func(**kwargs)
        except _NOT_DONE:
            release()
            raise
        except Exception as exc:
            task.record_done(key, Outcome(False, error=str(exc)))
            raise
        task.record_done(key, Outcome(True, _recorded(out, name)))
        return out

    return dataclasses.replace(b, func=call)
