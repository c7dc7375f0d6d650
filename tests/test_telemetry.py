"""OpenTelemetry: each run is a `clambot.run` span under the caller's span, each tool
call an `execute_tool` span under it, and a binding's own spans nest under its call,
wherever the call runs (a pool thread, inline, the caller's loop, the private loop).
Metrics count runs and calls. Nothing is done when nothing is configured."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from otel_capture import Capture, otel_capture

from clambot_tools import Approval, Limits, Policy, Sandbox, TransientError, binding


@pytest.fixture
def otel() -> Iterator[Capture]:
    with otel_capture() as capture:
        yield capture


def _thread() -> str:
    return threading.current_thread().name


class Shop:
    """Bindings that make spans of their own and note where they ran."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.ran_on: list[str] = []

    def bindings(self) -> list[Any]:
        tracer = self.tracer

        def price(sku: str) -> float:
            with tracer.start_as_current_span("db.query"):
                self.ran_on.append(_thread())
                return 9.5

        async def stock(sku: str) -> int:
            with tracer.start_as_current_span("http.request"):
                self.ran_on.append(_thread())
                await asyncio.sleep(0)
                return 3

        return [price, stock]


SCRIPT = """const p = await tools.price({sku: "A1"});
const [s, p2] = await Promise.all([tools.stock({sku: "A1"}), tools.price({sku: "B2"})]);
p + s + p2"""


def _assert_nested(otel: Capture, outer_name: str, calls: int) -> None:
    """One trace: outer > clambot.run > execute_tool x calls > the binding's own span."""
    outer = otel.one(outer_name)
    run = otel.one("clambot.run")
    assert otel.parent_of(run) is outer, otel.tree()
    tool_spans = [s for s in otel.spans if s.name.startswith("execute_tool ")]
    assert len(tool_spans) == calls, otel.tree()
    for call in tool_spans:
        assert otel.parent_of(call) is run, otel.tree()
        inner = otel.children(call)
        assert [s.name for s in inner] == [
            "db.query" if call.name == "execute_tool price" else "http.request"
        ], otel.tree()
    assert len(otel.trace_ids()) == 1, otel.tree()


def test_run_nests_under_the_callers_span_and_calls_under_the_run(otel: Capture) -> None:
    """Sync `run`: sync bindings on the call pool, async ones on the private loop."""
    shop = Shop(otel.tracer)
    sb = Sandbox(bindings=shop.bindings())
    with otel.tracer.start_as_current_span("request"):
        res = sb.run(SCRIPT)
    assert res.value == 22.0, res.error
    _assert_nested(otel, "request", 3)
    assert any(t.startswith("clambot-call") for t in shop.ran_on)
    assert "clambot-async" in shop.ran_on


def test_arun_nests_under_the_callers_span_and_calls_under_the_run(otel: Capture) -> None:
    """`arun`: async bindings on the caller's own loop, sync ones on the call pool."""
    shop = Shop(otel.tracer)
    sb = Sandbox(bindings=shop.bindings())

    async def main() -> Any:
        with otel.tracer.start_as_current_span("handler"):
            return await sb.arun(SCRIPT)

    assert asyncio.run(main()).value == 22.0
    _assert_nested(otel, "handler", 3)
    assert "MainThread" in shop.ran_on  # the async binding ran on the caller's loop


def test_a_fast_binding_run_inline_nests_under_its_call(otel: Capture) -> None:
    shop = Shop(otel.tracer)
    sb = Sandbox(bindings=shop.bindings())
    # a sync binding measured under 100 us runs inline, on the run's own thread; the
    # measurements live in the Sandbox: say this one is fast (a busy machine may not)
    sb._setup.timing["price"] = 0.0
    with otel.tracer.start_as_current_span("request"):
        res = sb.run('await tools.price({sku: "A1"}) + await tools.price({sku: "B2"})')
    assert res.value == 19.0
    assert shop.ran_on and all(t.startswith("clambot-run") for t in shop.ran_on), shop.ran_on
    outer, run = otel.one("request"), otel.one("clambot.run")
    assert otel.parent_of(run) is outer
    calls = otel.named("execute_tool price")
    assert len(calls) == 2
    for call in calls:
        assert otel.parent_of(call) is run
        assert [s.name for s in otel.children(call)] == ["db.query"]


def test_session_runs_carry_the_session_and_sandbox_ids(otel: Capture) -> None:
    sb = Sandbox()
    with sb.session() as s1, sb.session() as s2:
        s1.run("let x = 1")
        s1.run("x + 1")
        s2.run("2")
    sb.run("3")
    runs = otel.named("clambot.run")
    assert len(runs) == 4
    sandbox_ids = {r.attributes["clambot.sandbox.id"] for r in runs}
    assert len(sandbox_ids) == 1
    sessions = [r.attributes.get("clambot.session.id") for r in runs]
    assert sessions[0] == sessions[1] != sessions[2]
    assert sessions[3] is None
    assert len({r.attributes["clambot.run.id"] for r in runs}) == 4


def test_a_run_refused_by_a_closed_session_still_ends_its_span(otel: Capture) -> None:
    from clambot_tools import SessionClosedError

    s = Sandbox().session()
    s.close()
    with pytest.raises(SessionClosedError):
        s.run("1")
    (run,) = otel.named("clambot.run")
    assert run.attributes["clambot.run.outcome"] == "refused"


SECRET = "s3cr3t-7f1c"


def test_spans_say_what_happened_never_what_was_said(otel: Capture) -> None:
    """Outcome, duration, memory, calls, the code's sha256, ids: never the code, the
    arguments, the results, the logs or the error messages."""

    @binding(description="Look up a customer")
    def lookup(token: str) -> dict[str, str]:
        return {"echo": token}

    @binding
    def fail(token: str) -> None:
        raise ValueError(f"bad token {token}")

    code = f"""const t = "{SECRET}";
console.log(t);
const r = await tools.lookup({{token: t}});
try {{ await tools.fail({{token: t}}) }} catch (e) {{}}
throw new Error(r.echo)"""
    res = Sandbox(bindings=[lookup, fail]).run(code)
    assert res.error is not None and res.error.kind == "runtime"

    run = otel.one("clambot.run")
    attrs = dict(run.attributes or {})
    assert attrs["clambot.run.outcome"] == "runtime"
    assert attrs["error.type"] == "runtime"
    assert attrs["clambot.run.binding_calls"] == 2
    assert attrs["clambot.code.sha256"] == hashlib.sha256(code.encode()).hexdigest()
    assert attrs["clambot.run.memory_bytes"] == res.stats.memory_bytes
    duration = attrs["clambot.run.duration_ms"]
    assert isinstance(duration, float) and 0 < duration <= res.stats.duration_ms + 1
    assert run.status.status_code == trace.StatusCode.ERROR

    ok = otel.one("execute_tool lookup")
    assert dict(ok.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "lookup",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.description": "Look up a customer",
        "gen_ai.tool.call.id": ok.attributes["gen_ai.tool.call.id"],
        "clambot.run.id": attrs["clambot.run.id"],
        "clambot.call.decision": "allowed",
        "clambot.call.outcome": "ok",
        "clambot.call.attempts": 1,
        "clambot.call.duration_ms": ok.attributes["clambot.call.duration_ms"],
    }
    failed = otel.one("execute_tool fail")
    assert failed.attributes["clambot.call.outcome"] == "failed"
    assert failed.attributes["error.type"] == "failed"
    assert failed.status.status_code == trace.StatusCode.ERROR

    for span in otel.spans:
        text = repr(dict(span.attributes or {})) + repr(span.status.description)
        text += repr([(e.name, dict(e.attributes or {})) for e in span.events])
        assert SECRET not in text, span.name
        assert "console.log" not in text


def test_call_spans_and_metrics_record_decisions_and_outcomes(otel: Capture) -> None:
    tries = {"n": 0}

    @binding(effects=("read",))
    def flaky() -> str:
        tries["n"] += 1
        if tries["n"] < 3:
            raise TransientError("busy")
        return "done"

    @binding(effects=("network",))
    def fetch(url: str) -> str:
        return url

    @binding(effects=("write",))
    def refund(order: str) -> str:
        return order

    @binding(effects=("write",))
    def delete(order: str) -> str:
        return order

    def approve(request: Any) -> Approval:
        time.sleep(0.05)  # the wait that the histogram measures
        return Approval.ALLOW_ONCE if request.binding == "refund" else Approval.DENY

    policy = Policy(deny_effects=["network"], approve=approve, retry_backoff_s=0.001)
    sb = Sandbox(bindings=[flaky, fetch, refund, delete], policy=policy)
    code = """const out = [await tools.flaky()];
for (const f of [() => tools.fetch({url: "x"}), () => tools.refund({order: 1}),
                 () => tools.refund({order: "A"}), () => tools.delete({order: "B"})]) {
  try { out.push(await f()) } catch (e) { out.push(e.name) }
}
out"""
    res = sb.run(code)
    assert res.value == ["done", "Error", "TypeError", "A", "Error"], res.error

    def call(name: str, outcome: str) -> dict[str, Any]:
        found = [
            dict(s.attributes or {})
            for s in otel.named(f"execute_tool {name}")
            if s.attributes["clambot.call.outcome"] == outcome
        ]
        assert len(found) == 1, otel.tree()
        return found[0]

    assert call("flaky", "ok")["clambot.call.attempts"] == 3
    assert call("fetch", "denied")["clambot.call.decision"] == "denied"
    assert call("refund", "invalid_args")["clambot.call.decision"] == "invalid_args"
    assert call("refund", "ok")["clambot.call.decision"] == "approved"
    assert call("delete", "denied")["clambot.call.decision"] == "approval_denied"
    run = otel.one("clambot.run")
    for s in otel.spans:
        if s.name.startswith("execute_tool"):
            assert otel.parent_of(s) is run

    calls = {
        (a["gen_ai.tool.name"], a["clambot.call.decision"], a["clambot.call.outcome"]): p.value
        for a, p in otel.points("clambot.binding.calls")
    }
    assert calls == {
        ("flaky", "allowed", "ok"): 1,
        ("fetch", "denied", "denied"): 1,
        ("refund", "invalid_args", "invalid_args"): 1,
        ("refund", "approved", "ok"): 1,
        ("delete", "approval_denied", "denied"): 1,
    }
    waits = {
        (a["gen_ai.tool.name"], a["clambot.call.decision"]): p
        for a, p in otel.points("clambot.approval.wait")
    }
    assert set(waits) == {("refund", "approved"), ("delete", "approval_denied")}
    for p in waits.values():
        assert p.count == 1
        assert 0.05 <= p.sum < 5


def test_metrics_count_runs_by_outcome_with_duration_and_memory(otel: Capture) -> None:
    sb = Sandbox(limits=Limits(timeout_s=0.3, memory_mb=16))
    assert sb.run("1 + 1").ok
    assert sb.run("2 + 2").ok
    assert sb.run("null.x").error.kind == "runtime"
    assert sb.run("for (;;) {}").error.kind == "timeout"
    assert sb.run("const a = []; for (;;) a.push('x'.repeat(1000))").error.kind == "memory"

    runs = {a["clambot.run.outcome"]: p.value for a, p in otel.points("clambot.runs")}
    assert runs == {"ok": 2, "runtime": 1, "timeout": 1, "memory": 1}
    durations = {a["clambot.run.outcome"]: p for a, p in otel.points("clambot.run.duration")}
    assert durations["ok"].count == 2
    assert 0.3 <= durations["timeout"].sum < 30  # seconds
    # the memory a run ended with, when the guest reported it (RunStats.memory_bytes)
    memory = {a["clambot.run.outcome"]: p for a, p in otel.points("clambot.run.memory")}
    assert memory["ok"].count == 2 and memory["runtime"].count == 1
    assert 100_000 < memory["ok"].max < 16 << 20
    outcomes = [str(s.attributes["clambot.run.outcome"]) for s in otel.named("clambot.run")]
    assert sorted(outcomes) == ["memory", "ok", "ok", "runtime", "timeout"]


def test_a_cancelled_run_and_its_pending_calls_end_their_spans(otel: Capture) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()  # until cancelled

    sb = Sandbox(bindings=[slow])

    async def main() -> None:
        task = asyncio.create_task(sb.arun("await tools.slow()"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    run = otel.wait_for("clambot.run")[0]
    assert run.attributes["clambot.run.outcome"] == "cancelled"
    call = otel.one("execute_tool slow")
    assert call.attributes["clambot.call.outcome"] == "cancelled"
    assert otel.parent_of(call) is run


def test_a_call_still_running_after_its_run_ends_its_span_when_it_returns(
    otel: Capture,
) -> None:
    release = threading.Event()

    def stuck() -> str:
        release.wait(30)
        return "late"

    sb = Sandbox(bindings=[stuck], limits=Limits(timeout_s=0.3))
    assert sb.run("await tools.stuck()").error.kind == "timeout"
    assert otel.named("execute_tool stuck") == []  # still inside its function
    release.set()
    call = otel.wait_for("execute_tool stuck")[0]
    assert call.attributes["clambot.call.after_run"] is True
    assert otel.parent_of(call) is otel.one("clambot.run")


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_bindings_see_the_callers_context_variables_and_cannot_change_them() -> None:
    """As in an asyncio task: a copy of the caller's context, wherever the call runs."""
    seen: list[tuple[str, str]] = []

    def sync_one() -> str:
        seen.append(("sync", request_id.get()))
        request_id.set("changed by a binding")
        return request_id.get()

    async def async_one() -> str:
        seen.append(("async", request_id.get()))
        request_id.set("changed by a binding")
        return request_id.get()

    def fast() -> str:
        seen.append(("inline", request_id.get()))
        request_id.set("changed inline")
        return request_id.get()

    sb = Sandbox(bindings=[sync_one, async_one, fast])
    sb._setup.timing["fast"] = 0.0  # runs inline (see above)
    script = (
        "[await tools.sync_one(), await tools.async_one(), await tools.fast(), await tools.fast()]"
    )

    request_id.set("req-1")
    assert sb.run(script).value == ["changed by a binding"] * 2 + ["changed inline"] * 2
    assert request_id.get() == "req-1"

    async def main() -> Any:
        request_id.set("req-2")
        res = await sb.arun(script)
        assert request_id.get() == "req-2"
        return res

    assert asyncio.run(main()).ok
    assert seen == [
        ("sync", "req-1"),
        ("async", "req-1"),
        ("inline", "req-1"),
        ("inline", "req-1"),  # each call gets its own copy
        ("sync", "req-2"),
        ("async", "req-2"),
        ("inline", "req-2"),
        ("inline", "req-2"),
    ]


def _python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_without_opentelemetry_imported_nothing_of_it_is_loaded() -> None:
    out = _python(
        "import sys; from clambot_tools import Sandbox\n"
        "sb = Sandbox(bindings=[lambda: 1])\n"
        "assert sb.run('await tools[\"<lambda>\"]()').value == 1\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    assert out == "[]"


def test_with_opentelemetry_imported_but_no_provider_nothing_is_made() -> None:
    out = _python(
        "from opentelemetry import trace, metrics\n"
        "from clambot_tools import Sandbox, _telemetry\n"
        "sb = Sandbox()\n"
        "assert sb.run('1').ok\n"
        "print(_telemetry.start_run('x'), _telemetry._instruments)"
    )
    assert out == "None None"


def test_the_quick_provider_check_agrees_with_opentelemetrys_getters(otel: Capture) -> None:
    """`_telemetry` reads OpenTelemetry's globals directly (the getters cost 0.7 us
    each): it must see what the public getters see."""
    from opentelemetry import metrics

    from clambot_tools import _telemetry

    assert _telemetry._tracer_provider() is trace.get_tracer_provider() is otel.tracer_provider
    assert _telemetry._meter_provider() is metrics.get_meter_provider() is otel.meter_provider
    trace._TRACER_PROVIDER = None
    try:
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        assert _telemetry._tracer_provider() is None
    finally:
        trace._TRACER_PROVIDER = otel.tracer_provider
