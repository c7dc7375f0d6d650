#!/usr/bin/env python3
"""What OpenTelemetry costs a run: nothing configured, and configured.

    .venv/bin/python bench/otel.py [--rounds 3] [--baseline DIR]

Each configuration runs in a fresh process (whether OpenTelemetry was ever imported
cannot be undone), the configurations interleaved over several rounds:

- ``nothing``: OpenTelemetry not imported at all (clambot never imports it itself);
- ``api``: ``opentelemetry-api`` imported, no tracer or meter provider set (the case
  the issue bounds: a no-op under 2 us a run);
- ``sdk``: the SDK's providers set, spans to a BatchSpanProcessor whose exporter
  drops them, metrics aggregated by an in-memory reader (what tracing really costs);
- ``baseline`` (with ``--baseline DIR``, a checkout of the core without telemetry and
  its guest): the code before this work, OpenTelemetry not imported.

For each: the median time of a fresh `1+1` run and of a run making three tool calls
(inline, as fast sync bindings do), and the cost of the telemetry hook a run makes when
nothing is configured (`_telemetry.start_run`, timed alone; per call the run adds one
`contextvars.copy_context()`). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit
from typing import Any

CALLS_SCRIPT = " + ".join(f"(await tools.add({{a: {i}, b: 1}}))" for i in range(3))


def _setup(config: str) -> None:
    if config == "api":
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    elif config == "sdk":
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def _median_run_us(sb: Any, code: str, runs: int, blocks: int = 5) -> float:
    for _ in range(200):
        sb.run(code)
    medians = []
    for _ in range(blocks):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sb.run(code)
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times))
    return statistics.median(medians) * 1e6


def worker(config: str, runs: int) -> dict[str, Any]:
    _setup(config)
    from clambot_tools import Sandbox

    def add(a: int, b: int) -> int:
        return a + b

    plain = Sandbox()
    with_calls = Sandbox(bindings=[add])
    out: dict[str, Any] = {
        "config": config,
        "run_1plus1_us": _median_run_us(plain, "1 + 1", runs),
        "run_3_calls_us": _median_run_us(with_calls, CALLS_SCRIPT, runs),
        "otel_imported": any(m.startswith("opentelemetry") for m in sys.modules),
    }
    try:
        from clambot_tools import _telemetry
    except ImportError:  # the baseline has no telemetry
        return out
    n = 200_000
    t = min(timeit.repeat(lambda: _telemetry.start_run("x"), number=n, repeat=5))
    out["start_run_ns"] = t / n * 1e9
    t = min(timeit.repeat(lambda: _telemetry.call_context(None), number=n, repeat=5))
    out["call_context_ns"] = t / n * 1e9
    return out


def _spawn(config: str, runs: int, pythonpath: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, __file__, "--worker", config, "--runs", str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", help="a checkout of the core before telemetry (with its guest)")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.runs)))
        return

    configs = ["nothing", "api", "sdk"] + (["baseline"] if args.baseline else [])
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for c in configs:
            path = args.baseline if c == "baseline" else None
            results[c].append(_spawn("nothing" if c == "baseline" else c, args.runs, path))

    def med(c: str, key: str) -> float | None:
        vals = [r[key] for r in results[c] if key in r]
        return statistics.median(vals) if vals else None

    load = os.getloadavg()[0]
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} | {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores | Python {platform.python_version()} | load {load:.2f} | "
        f"{args.rounds} rounds x {args.runs} runs x 5 blocks"
    )
    print()
    print(
        "| configuration | `1+1` run (us, median) | run with 3 tool calls (us) | "
        "`start_run` hook (ns) | per call `call_context` (ns) |"
    )
    print("|---|---|---|---|---|")
    names = {
        "nothing": "OpenTelemetry not imported",
        "api": "opentelemetry-api imported, nothing configured",
        "sdk": "SDK configured (spans batched and dropped, metrics in memory)",
        "baseline": "before this work (baseline), not imported",
    }
    for c in configs:
        hook = med(c, "start_run_ns")
        per_call = med(c, "call_context_ns")
        print(
            f"| {names[c]} | {med(c, 'run_1plus1_us'):.1f} | {med(c, 'run_3_calls_us'):.1f} | "
            f"{f'{hook:.0f}' if hook is not None else '-'} | "
            f"{f'{per_call:.0f}' if per_call is not None else '-'} |"
        )
    imported = {c: all(r["otel_imported"] for r in results[c]) for c in configs}
    print()
    print(f"- OpenTelemetry modules loaded after the runs: {imported}")


if __name__ == "__main__":
    main()
