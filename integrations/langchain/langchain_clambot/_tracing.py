"""OpenTelemetry for the sandbox tool: the run's span under the tool's, and the spans
of the tools a script calls under their call's.

LangChain tracers that make OpenTelemetry spans from callbacks (OpenInference, which
Phoenix and Langfuse use) keep each run's span in a table by run id and never make it
the current span, while ClamBot's ``clambot.run`` span takes the current span as its
parent. So while a script runs, the span such a handler made for the tool's run
(``get_span(run_id)``) is made the current one: the run is in the agent's trace,
under the tool. A granted tool then runs with ClamBot's ``execute_tool`` span of its
call current, so spans made from the current context (by the tool's own code or the
libraries it uses) nest under the call; the tool's own LangChain run is placed by the
callback tracer under its parent run, the sandbox tool's (one trace all the same).
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def tool_span_current(run_manager: Any) -> Iterator[None]:
    """While the block runs, the OpenTelemetry span a callback handler of
    `run_manager` made for its run is the current span (nothing changes when there is
    none, or OpenTelemetry was never imported)."""
    span = _span_of(run_manager)
    if span is None:
        yield
        return
    from opentelemetry import context, trace

    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)


def _span_of(run_manager: Any) -> Any:
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None or run_manager is None:
        return None
    for handler in getattr(run_manager, "handlers", ()):
        get_span = getattr(handler, "get_span", None)
        if not callable(get_span):
            continue
        try:
            span = get_span(run_manager.run_id)
        except Exception:  # noqa: BLE001 - a handler's own method: not our failure
            continue
        if isinstance(span, trace.Span) and span.get_span_context().is_valid:
            return span
    return None


def with_current_span(context: contextvars.Context) -> contextvars.Context:
    """`context` (a copy of a run's context), in which the span current here (a tool
    call's) is made current too, if there is one."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return context
    from opentelemetry import context as otel_context

    context.run(otel_context.attach, otel_context.get_current())
    return context
