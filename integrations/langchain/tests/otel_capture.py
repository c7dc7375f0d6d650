"""OpenTelemetry's SDK with in-memory exporters as the global providers, for one test.

The same file is in each test directory (the core's and both integrations'), which
are run on their own as well as together.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once


def _reset_globals() -> None:
    """Unset the global providers (OpenTelemetry sets them once per process; its own
    test utilities reset them the same way)."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None


class _Ended(SpanProcessor):
    """Wakes waiters when a span ends."""

    def __init__(self) -> None:
        self.cond = threading.Condition()

    def on_end(self, span: ReadableSpan) -> None:
        with self.cond:
            self.cond.notify_all()


class Capture:
    """What the SDK exported during the test."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self._ended = _Ended()
        self.tracer_provider.add_span_processor(self._ended)
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        #: a tracer of this provider (a module-level `trace.get_tracer` would stay bound
        #: to the first provider set in the process)
        self.tracer = self.tracer_provider.get_tracer("tests")

    @property
    def spans(self) -> list[ReadableSpan]:
        """The spans ended so far."""
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.tree()}"
        return found[0]

    def wait_for(self, name: str, count: int = 1, timeout: float = 30.0) -> list[ReadableSpan]:
        """The spans named `name` once `count` of them have ended (fails after `timeout`)."""
        with self._ended.cond:
            ok = self._ended.cond.wait_for(lambda: len(self.named(name)) >= count, timeout)
        assert ok, f"{name!r} did not end: {self.tree()}"
        return self.named(name)

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        for s in self.spans:
            if s.context is not None and s.context.span_id == span.parent.span_id:
                return s
        return None

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        assert span.context is not None
        return [s for s in self.spans if s.parent and s.parent.span_id == span.context.span_id]

    def trace_ids(self) -> set[int]:
        return {s.context.trace_id for s in self.spans if s.context is not None}

    def tree(self) -> str:
        """The spans as an indented tree (for failure messages)."""
        lines: list[str] = []

        def walk(nodes: Sequence[ReadableSpan], depth: int) -> None:
            for s in nodes:
                lines.append("  " * depth + s.name)
                walk(self.children(s), depth + 1)

        roots = [s for s in self.spans if self.parent_of(s) is None]
        walk(roots, 0)
        return "\n" + "\n".join(lines)

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of `metric` collected now."""
        data = self.reader.get_metrics_data()
        out: list[tuple[dict[str, Any], Any]] = []
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        out += [(dict(p.attributes or {}), p) for p in m.data.data_points]
        return out


@contextmanager
def otel_capture() -> Iterator[Capture]:
    """Install SDK tracer and meter providers with in-memory exporters as the global
    ones for the block, then unset them again."""
    capture = Capture()
    _reset_globals()
    trace.set_tracer_provider(capture.tracer_provider)
    metrics.set_meter_provider(capture.meter_provider)
    try:
        yield capture
    finally:
        _reset_globals()
        capture.tracer_provider.shutdown()
        capture.meter_provider.shutdown()
