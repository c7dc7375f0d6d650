"""OpenTelemetry for runs and tool calls, when the application configured it.

Each run is a span, ``clambot.run``, child of the caller's current span; each tool call
a child of it, ``execute_tool <binding>`` (the GenAI semantic conventions for tool
execution), and the binding runs with that span current, so spans it makes nest under
it. Metrics: runs by outcome, their duration and memory, tool calls by decision and
outcome, and how long approvals were waited for. Attributes carry ids, names, hashes,
decisions, outcomes, counts and durations: never the code, arguments, results or error
messages (which may carry secrets).

The hooks hang off the points where the audit records are written (`_run`, `_calls`).
They cost almost nothing when nothing is configured: this module never imports
OpenTelemetry itself, so without ``opentelemetry-api`` imported by the application, or
with it imported but no tracer or meter provider set, `start_run` returns None and
every other hook is skipped.
"""

from __future__ import annotations

import contextvars
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._result import RunResult

#: the instrumentation scope's name
SCOPE = "clambot_tools"
RUN_SPAN = "clambot.run"

# OpenTelemetry reads these when asked for the global provider; the public getters look
# them up in os.environ (0.7 us each): read them once, and read the globals directly
_ENV_TRACER = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
_ENV_METER = "OTEL_PYTHON_METER_PROVIDER" in os.environ
_UNKNOWN = object()


def _tracer_provider() -> Any:
    """The global tracer provider the application set, or None (none set, or a no-op
    one, or opentelemetry not imported by anyone)."""
    mod = sys.modules.get("opentelemetry.trace")
    if mod is None:
        return None
    provider = getattr(mod, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None and not _ENV_TRACER:
        return None
    if provider is _UNKNOWN or provider is None:  # other internals, or an env provider
        provider = mod.get_tracer_provider()
    if isinstance(provider, (mod.ProxyTracerProvider, mod.NoOpTracerProvider)):
        return None
    return provider


def _meter_provider() -> Any:
    """The global meter provider the application set, or None (see _tracer_provider)."""
    mod = sys.modules.get("opentelemetry.metrics._internal")
    if mod is None:
        return None
    provider = getattr(mod, "_METER_PROVIDER", _UNKNOWN)
    if provider is None and not _ENV_METER:
        return None
    if provider is _UNKNOWN or provider is None:
        provider = mod.get_meter_provider()
    if isinstance(provider, (mod._ProxyMeterProvider, mod.NoOpMeterProvider)):
        return None
    return provider


class _Instruments:
    """The tracer and the metric instruments of one pair of providers."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from opentelemetry import trace

        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.trace = trace
        self.tracer = tracer_provider.get_tracer(SCOPE) if tracer_provider is not None else None
        self.runs: Any = None
        if meter_provider is None:
            return
        meter = meter_provider.get_meter(SCOPE)
        self.runs = meter.create_counter(
            "clambot.runs", unit="{run}", description="Script runs, by outcome"
        )
        self.run_duration = meter.create_histogram(
            "clambot.run.duration", unit="s", description="How long runs took, by outcome"
        )
        self.run_memory = meter.create_histogram(
            "clambot.run.memory", unit="By", description="JavaScript memory a run ended with"
        )
        self.calls = meter.create_counter(
            "clambot.binding.calls",
            unit="{call}",
            description="Tool calls made by scripts, by binding, decision and outcome",
        )
        self.approval_wait = meter.create_histogram(
            "clambot.approval.wait",
            unit="s",
            description="How long tool calls waited for their approver, by binding and decision",
        )


_instruments: _Instruments | None = None


def _current_instruments() -> _Instruments | None:
    """The instruments for the providers set now (made again when they change)."""
    global _instruments
    tp = _tracer_provider()
    mp = _meter_provider()
    if tp is None and mp is None:
        return None
    cached = _instruments
    if cached is not None and cached.tracer_provider is tp and cached.meter_provider is mp:
        return cached
    cached = _Instruments(tp, mp)
    _instruments = cached
    return cached


def start_run(run_id: str) -> RunTrace | None:
    """A run starts (call on the caller's thread: its current span is the parent).
    None when OpenTelemetry is not configured."""
    inst = _current_instruments()
    if inst is None:
        return None
    return RunTrace(inst, run_id)


class CallTrace:
    """One tool call's span and approval times."""

    __slots__ = ("answered", "asked", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.asked = 0.0
        self.answered = 0.0


class RunTrace:
    """One run's span and metrics."""

    __slots__ = ("_inst", "_parent", "_span", "run_id")

    def __init__(self, inst: _Instruments, run_id: str) -> None:
        self._inst = inst
        self.run_id = run_id
        self._span: Any = None
        self._parent: Any = None
        if inst.tracer is not None:
            trace = inst.trace
            self._span = inst.tracer.start_span(
                RUN_SPAN, kind=trace.SpanKind.INTERNAL, attributes={"clambot.run.id": run_id}
            )
            self._parent = trace.set_span_in_context(self._span)

    def refused(self, reason: str) -> None:
        """The run never started (its session was closed): end the span, say why."""
        span, self._span = self._span, None
        if span is not None:
            if span.is_recording():
                span.set_attribute("clambot.run.outcome", "refused")
                span.set_status(self._inst.trace.StatusCode.ERROR, reason)
            span.end()

    def call(self, name: str, description: str, call_id: int) -> CallTrace:
        """A tool call the policy let through starts now (on the run's thread)."""
        span = None
        tracer = self._inst.tracer
        if tracer is not None:
            span = tracer.start_span(
                f"execute_tool {name}",
                context=self._parent,
                kind=self._inst.trace.SpanKind.INTERNAL,
                attributes=self._call_attributes(name, description, call_id),
            )
        return CallTrace(span)

    def _call_attributes(self, name: str, description: str, call_id: int) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": f"{self.run_id}-{call_id}",
            "clambot.run.id": self.run_id,
        }
        if description:
            attrs["gen_ai.tool.description"] = description
        return attrs

    def call_done(
        self,
        call: CallTrace | None,
        name: str | None,
        decision: str,
        outcome: str,
        duration_ms: float,
        attempts: int,
        after_run: bool,
    ) -> None:
        """A tool call's audit record is written: end its span (a refused call, which
        had none, gets one now) and count it."""
        inst = self._inst
        tool = name if name is not None else "(unknown)"
        if call is None:
            call = self.call(tool, "", -1)
        span = call.span
        if span is not None:
            if span.is_recording():
                span.set_attributes(
                    {
                        "clambot.call.decision": decision,
                        "clambot.call.outcome": outcome,
                        "clambot.call.attempts": attempts,
                        "clambot.call.duration_ms": round(duration_ms, 3),
                    }
                )
                if after_run:
                    span.set_attribute("clambot.call.after_run", True)
                if outcome != "ok":
                    span.set_attribute("error.type", outcome)
                    span.set_status(inst.trace.StatusCode.ERROR, outcome)
            span.end()
        if inst.runs is None:
            return
        labels = {
            "gen_ai.tool.name": tool,
            "clambot.call.decision": decision,
            "clambot.call.outcome": outcome,
        }
        inst.calls.add(1, labels)
        if call.asked:
            waited = (call.answered or time.monotonic()) - call.asked
            inst.approval_wait.record(
                waited, {"gen_ai.tool.name": tool, "clambot.call.decision": decision}
            )

    def end(
        self,
        result: RunResult,
        outcome: str,
        *,
        code_sha256: str,
        sandbox_id: str,
        session_id: str | None,
    ) -> None:
        """The run's audit record is written: end its span and count it."""
        inst = self._inst
        stats = result.stats
        span = self._span
        if span is not None:
            if span.is_recording():
                attrs: dict[str, Any] = {
                    "clambot.run.outcome": outcome,
                    "clambot.run.duration_ms": round(stats.duration_ms, 3),
                    "clambot.run.binding_calls": stats.binding_calls,
                    "clambot.code.sha256": code_sha256,
                    "clambot.sandbox.id": sandbox_id,
                }
                if stats.memory_bytes is not None:
                    attrs["clambot.run.memory_bytes"] = stats.memory_bytes
                if session_id is not None:
                    attrs["clambot.session.id"] = session_id
                span.set_attributes(attrs)
                if outcome != "ok":
                    span.set_attribute("error.type", outcome)
                    span.set_status(inst.trace.StatusCode.ERROR, outcome)
            span.end()
        if inst.runs is None:
            return
        labels = {"clambot.run.outcome": outcome}
        inst.runs.add(1, labels)
        inst.run_duration.record(stats.duration_ms / 1000, labels)
        if stats.memory_bytes is not None:
            inst.run_memory.record(stats.memory_bytes, labels)


def call_context(call: CallTrace | None) -> contextvars.Context:
    """Where a tool call runs: a copy of the current context (the run's, which is a
    copy of its caller's) in which `call`'s span, if any, is the current span."""
    context = contextvars.copy_context()
    if call is not None and call.span is not None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        context.run(otel_context.attach, trace.set_span_in_context(call.span))
    return context


def asking(call: CallTrace | None) -> None:
    """`call`'s approver is asked now."""
    if call is not None:
        call.asked = time.monotonic()


def answered(call: CallTrace | None) -> None:
    """`call`'s approver answered (or failed) now."""
    if call is not None:
        call.answered = time.monotonic()
