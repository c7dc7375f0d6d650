"""Tracing a LlamaIndex agent: one FunctionAgent run is one trace, the script's tool
calls nest under the run that made them (agent > run_js_sandboxed > clambot.run >
execute_tool > the tool), as Phoenix and Langfuse see it through OpenInference; and
the tools a script calls reach `handler.stream_events()` as the agent's own do."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from li_scripted_llm import FunctionCalling, Script
from llama_index.core.agent.workflow import FunctionAgent, ToolCall, ToolCallResult
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.tools import FunctionTool
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor
from otel_capture import Capture, otel_capture

from llama_index.tools.clambot import (
    TOOL_NAME,
    ClamBotToolSpec,
    ScriptToolCall,
    ScriptToolCallResult,
)

SCRIPT = """const order = await tools.get_order({order_id: "A-17"});
const rate = await tools.eur_rate({currency: "USD"});
let missing = null;
try { await tools.get_order({order_id: "Z-0"}) } catch (e) { missing = e.message }
({usd: order.total_eur * rate, missing})"""


def _tools() -> list[FunctionTool]:
    def get_order(order_id: str) -> dict[str, Any]:
        """Look up an order by id."""
        if order_id != "A-17":
            raise KeyError(f"no order {order_id}")
        return {"id": order_id, "total_eur": 40.0}

    async def eur_rate(currency: str) -> float:
        """How many units of `currency` one euro buys."""
        return {"USD": 1.25}[currency]

    return [FunctionTool.from_defaults(get_order), FunctionTool.from_defaults(async_fn=eur_rate)]


def _agent() -> tuple[FunctionAgent, Script]:
    spec = ClamBotToolSpec(_tools())
    script = Script(
        lambda m: FunctionCalling.call(TOOL_NAME, code=SCRIPT),
        lambda m: FunctionCalling.answer(f"Done: {FunctionCalling.observation(m)}"),
    )
    return FunctionAgent(tools=[*spec.to_tool_list()], llm=script.llm()), script


def _run_agent() -> tuple[str, list[Any]]:
    agent, script = _agent()

    async def main() -> tuple[str, list[Any]]:
        handler = agent.run(user_msg="How much is order A-17 in dollars?")
        events = [ev async for ev in handler.stream_events()]
        result: Any = await handler
        return str(result.response.content), events

    answer, events = asyncio.run(main())
    assert script.done
    assert '"usd":50' in answer.replace(" ", ""), answer
    return answer, events


@pytest.fixture
def phoenix() -> Iterator[Capture]:
    """What a Phoenix or Langfuse user has: OpenInference's LlamaIndex instrumentation
    and an OpenTelemetry SDK (here with in-memory exporters, set as the global one)."""
    with otel_capture() as capture:
        instrumentor = LlamaIndexInstrumentor()
        instrumentor.instrument(tracer_provider=capture.tracer_provider)
        try:
            yield capture
        finally:
            instrumentor.uninstrument()


def test_one_function_agent_run_is_one_trace(phoenix: Capture) -> None:
    _run_agent()
    otel = phoenix
    assert len(otel.trace_ids()) == 1, otel.tree()  # was 3: one per granted tool call

    run = otel.one("clambot.run")
    sandbox_tool = otel.parent_of(run)
    assert sandbox_tool is not None and sandbox_tool.name == "ClamBotTool.acall", otel.tree()
    calls = {
        (s.name, s.attributes["clambot.call.outcome"]): s
        for s in otel.spans
        if s.name.startswith("execute_tool")
    }
    assert set(calls) == {
        ("execute_tool get_order", "ok"),
        ("execute_tool eur_rate", "ok"),
        ("execute_tool get_order", "failed"),
    }, otel.tree()
    for call in calls.values():
        assert otel.parent_of(call) is run, otel.tree()
    # each granted tool's own span (OpenInference's) nests under its call's span
    assert [s.name for s in otel.children(calls["execute_tool get_order", "ok"])] == [
        "FunctionTool.call"
    ], otel.tree()
    assert [s.name for s in otel.children(calls["execute_tool eur_rate", "ok"])] == [
        "FunctionTool.acall"
    ], otel.tree()
    # and the call is not traced twice
    assert not [s for s in otel.spans if s.name.startswith("ScriptToolCall")], otel.tree()
    agent_root = [s for s in otel.spans if otel.parent_of(s) is None]
    assert [s.name for s in agent_root] == ["FunctionAgent.run"], otel.tree()


def test_the_tools_a_script_calls_reach_stream_events() -> None:
    _, events = _run_agent()
    tool_events = [e for e in events if isinstance(e, (ToolCall, ToolCallResult))]
    names = [(type(e).__name__, e.tool_name) for e in tool_events]
    assert names == [
        ("ToolCall", TOOL_NAME),
        ("ScriptToolCall", "get_order"),
        ("ScriptToolCallResult", "get_order"),
        ("ScriptToolCall", "eur_rate"),
        ("ScriptToolCallResult", "eur_rate"),
        ("ScriptToolCall", "get_order"),
        ("ScriptToolCallResult", "get_order"),
        ("ToolCallResult", TOOL_NAME),
    ]
    nested = tool_events[1:-1]
    for call, result in zip(nested[::2], nested[1::2], strict=True):
        assert isinstance(call, ScriptToolCall) and isinstance(result, ScriptToolCallResult)
        assert call.tool_id == result.tool_id and call.script_tool == TOOL_NAME
        assert call.tool_kwargs == result.tool_kwargs
    ok_order, rate, missing = nested[1], nested[3], nested[5]
    assert ok_order.tool_kwargs == {"order_id": "A-17"}
    assert ok_order.tool_output.raw_output == {"id": "A-17", "total_eur": 40.0}
    assert rate.tool_output.raw_output == 1.25 and not rate.tool_output.is_error
    assert missing.tool_output.is_error and "no order Z-0" in missing.tool_output.content
    assert len({e.tool_id for e in nested}) == 3


def test_llamaindex_span_handlers_see_one_tree_without_opentelemetry() -> None:
    """LlamaIndex's own instrumentation: a script's tool calls are spans under the
    sandbox tool's span, and the tools' spans under them."""
    root = get_dispatcher()
    handler = SimpleSpanHandler()
    root.add_span_handler(handler)
    try:
        _run_agent()
    finally:
        root.span_handlers.remove(handler)
    spans = {s.id_: s for s in handler.completed_spans + handler.dropped_spans}

    def ancestors(span_id: str) -> list[str]:
        names = []
        parent = spans[span_id].parent_id
        while parent is not None and parent in spans:
            names.append(parent.partition("-")[0])
            parent = spans[parent].parent_id
        return names

    tools = {s.id_: s for s in spans.values() if s.id_.startswith("FunctionTool.")}
    assert len(tools) == 3
    for span_id in tools:
        chain = ancestors(span_id)
        assert chain[0].startswith("ScriptToolCall."), chain
        assert chain[1:3] == ["ClamBotTool.acall", "ClamBotTool.acall"], chain
        assert chain[-1] == "FunctionAgent.run", chain
