"""What LlamaIndex users see of the tools a script calls: one trace, and their events.

The sandbox calls granted tools on its own threads or on the agent's event loop, in a
copy of the context of the ``run_js_sandboxed`` call (ClamBot Tools carries it into
its threads and loops, as asyncio does into a task). There, each call of a granted
LlamaIndex tool is:

- a span of LlamaIndex's instrumentation, ``ScriptToolCall.<name>``, child of the
  ``run_js_sandboxed`` tool's span and parent of the tool's own, so span handlers see
  one tree. When OpenTelemetry is configured the call already has a span, ClamBot's
  ``execute_tool <name>`` (current here, under the run's ``clambot.run`` span):
  OpenTelemetry instrumentation of LlamaIndex (OpenInference, which Phoenix and
  Langfuse use) is kept from making a second span for it, so the tool's spans nest
  under ClamBot's and the trace is one tree: agent > run_js_sandboxed > clambot.run >
  execute_tool > the tool;
- a `ScriptToolCall` and a `ScriptToolCallResult` event (the agent's own ``ToolCall``
  and ``ToolCallResult``, with `script_tool` naming the tool whose script made the
  call) written to the workflow's event stream, so ``handler.stream_events()`` shows
  them as it shows the agent's own tool calls.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from llama_index.core.agent.workflow import ToolCall, ToolCallResult
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.tools import ToolOutput
from llama_index.core.workflow import Context
from llama_index_instrumentation.dispatcher import active_instrument_tags

dispatcher = get_dispatcher(__name__)


class ScriptToolCall(ToolCall):
    """A granted tool called by a script that `script_tool` ran (streamed as the agent's
    own tool calls are). Its `tool_id` is the one of the matching result."""

    script_tool: str


class ScriptToolCallResult(ToolCallResult):
    """The output of a granted tool called by a script that `script_tool` ran (an
    ``is_error`` output when the tool raised)."""

    script_tool: str


@dataclass
class _ScriptRun:
    """Where the events of one script's tool calls go."""

    ctx: Context
    loop: asyncio.AbstractEventLoop
    tool: str
    open: bool = True

    def emit(self, event: ToolCall | ToolCallResult) -> None:
        """Write `event` to the workflow's stream, from any thread (nothing once the
        script is over, or if the loop is gone)."""
        if not self.open:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is self.loop:
                self._emit_open(event)
            else:
                self.loop.call_soon_threadsafe(self._emit_open, event)
        except RuntimeError:  # the loop is closed
            self.open = False

    def _emit_open(self, event: ToolCall | ToolCallResult) -> None:
        if not self.open:
            return
        try:
            self.ctx.write_event_to_stream(event)
        except Exception:  # noqa: BLE001 - the workflow no longer streams: the call goes on
            self.open = False


_script_run: ContextVar[_ScriptRun | None] = ContextVar("clambot_script_run", default=None)


@contextmanager
def script_run(tool: str) -> Iterator[None]:
    """While a script of the sandbox tool `tool` runs here: when this is a workflow
    step (an agent calling the tool), its tools' calls are streamed to it."""
    run = _step_run(tool)
    if run is None:
        yield
        return
    token = _script_run.set(run)
    try:
        yield
    finally:
        run.open = False
        _script_run.reset(token)


def _step_run(tool: str) -> _ScriptRun | None:
    get_step_context = getattr(Context, "get_step_context", None)
    if get_step_context is None:
        return None
    try:
        ctx = get_step_context()
        loop = asyncio.get_running_loop()
    except Exception:  # noqa: BLE001 - not in a workflow step, or no loop: nothing to stream
        return None
    return _ScriptRun(ctx, loop, tool)


class _NestedCall:
    """One granted tool's call from a script: its LlamaIndex span and its events."""

    def __init__(self, name: str, kwargs: Mapping[str, Any]) -> None:
        self.name = name
        self.kwargs = dict(kwargs)
        self.run = _script_run.get()
        self.tool_id = f"clambot-{uuid.uuid4().hex[:16]}"
        self.span_id = f"ScriptToolCall.{name}-{uuid.uuid4()}"
        params = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in self.kwargs]
        self.bound_args = inspect.Signature(params).bind(**self.kwargs)

    def start(self) -> None:
        if self.run is not None:
            self.run.emit(
                ScriptToolCall(
                    tool_name=self.name,
                    tool_kwargs=self.kwargs,
                    tool_id=self.tool_id,
                    script_tool=self.run.tool,
                )
            )
        parent = active_span_id.get()
        self.token = active_span_id.set(self.span_id)
        with _no_second_otel_span(self.name):
            dispatcher.span_enter(
                id_=self.span_id,
                bound_args=self.bound_args,
                parent_id=parent,
                tags=active_instrument_tags.get(),
            )

    def done(self, output: ToolOutput) -> None:
        dispatcher.span_exit(id_=self.span_id, bound_args=self.bound_args, result=output)
        self._end(output)

    def failed(self, exc: BaseException) -> None:
        dispatcher.span_drop(id_=self.span_id, bound_args=self.bound_args, err=exc)
        output = ToolOutput(
            content=str(exc) or type(exc).__name__,
            tool_name=self.name,
            raw_input={"kwargs": self.kwargs},
            raw_output=None,
            is_error=True,
            exception=exc if isinstance(exc, Exception) else None,
        )
        self._end(output)

    def _end(self, output: ToolOutput) -> None:
        active_span_id.reset(self.token)
        if self.run is not None:
            self.run.emit(
                ScriptToolCallResult(
                    tool_name=self.name,
                    tool_kwargs=self.kwargs,
                    tool_id=self.tool_id,
                    tool_output=output,
                    return_direct=False,
                    script_tool=self.run.tool,
                )
            )


@contextmanager
def _no_second_otel_span(name: str) -> Iterator[None]:
    """Keep OpenTelemetry instrumentation of LlamaIndex from making a span for the call
    of tool `name` when it already has one: ClamBot's, current and recording."""
    trace = sys.modules.get("opentelemetry.trace")
    span = trace.get_current_span() if trace is not None else None
    attributes = getattr(span, "attributes", None) or {}
    if span is None or not span.is_recording() or attributes.get("gen_ai.tool.name") != name:
        yield
        return
    from opentelemetry import context

    key = getattr(context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
    if key is None:  # pragma: no cover - an OpenTelemetry without the shared key
        yield
        return
    token = context.attach(context.set_value(key, True))
    try:
        yield
    finally:
        context.detach(token)


def call_tool(name: str, kwargs: Mapping[str, Any], invoke: Callable[[], ToolOutput]) -> ToolOutput:
    """`invoke()` (a granted tool's sync call) as a script's call of tool `name` (see the
    module doc). Returns its output; raises what it raises."""
    call = _NestedCall(name, kwargs)
    call.start()
    try:
        output = invoke()
    except BaseException as exc:
        call.failed(exc)
        raise
    call.done(output)
    return output


async def acall_tool(
    name: str, kwargs: Mapping[str, Any], invoke: Callable[[], Awaitable[ToolOutput]]
) -> ToolOutput:
    """The async twin of `call_tool`."""
    call = _NestedCall(name, kwargs)
    call.start()
    try:
        output = await invoke()
    except BaseException as exc:
        call.failed(exc)
        raise
    call.done(output)
    return output
