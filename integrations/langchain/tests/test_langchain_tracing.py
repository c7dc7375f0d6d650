"""Tracing a LangChain agent: one agent run is one trace. The sandbox tool's run is a
`clambot.run` span under the tool's span (as OpenInference, which Phoenix and Langfuse
use, makes it), each call of a granted tool an `execute_tool` span under the run, and
spans the tool makes from the current context nest under its call."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from clambot_tools import Limits
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from lc_helpers import js_call, scripted
from openinference.instrumentation.langchain import LangChainInstrumentor
from otel_capture import Capture, otel_capture

from langchain_clambot import SandboxedJSTool

SCRIPT = """const [w, p] = await Promise.all([
  tools.get_weather({city: 'Paris'}),
  tools.get_population({city: 'Paris'}),
]);
({temp_c: w.temp_c, people: p.people})"""


@pytest.fixture
def phoenix() -> Iterator[Capture]:
    """What a Phoenix or Langfuse user has: OpenInference's LangChain instrumentation
    and an OpenTelemetry SDK (here with in-memory exporters, set as the global one)."""
    with otel_capture() as capture:
        instrumentor = LangChainInstrumentor()
        instrumentor.instrument(tracer_provider=capture.tracer_provider)
        try:
            yield capture
        finally:
            instrumentor.uninstrument()


def _agent(otel: Capture) -> Any:
    tracer = otel.tracer

    @tool
    def get_weather(city: str) -> dict[str, Any]:
        """Current weather in a city."""
        with tracer.start_as_current_span("weather.api"):  # e.g. an instrumented HTTP client
            return {"city": city, "temp_c": 21.5}

    @tool
    async def get_population(city: str) -> dict[str, Any]:
        """Population of a city."""
        with tracer.start_as_current_span("census.db"):
            await asyncio.sleep(0)
            return {"city": city, "people": 2_100_000}

    js = SandboxedJSTool(tools=[get_weather, get_population], limits=Limits(timeout_s=5))
    model = scripted(js_call(SCRIPT, "call_1"), AIMessage(content="21.5 °C, 2.1 million."))
    return create_agent(model, [js])


def _check_one_tree(otel: Capture) -> None:
    assert len(otel.trace_ids()) == 1, otel.tree()
    run = otel.one("clambot.run")
    tool_span = otel.parent_of(run)
    assert tool_span is not None and tool_span.name == "run_js_sandboxed", otel.tree()
    weather = otel.one("execute_tool get_weather")
    population = otel.one("execute_tool get_population")
    assert otel.parent_of(weather) is run and otel.parent_of(population) is run, otel.tree()
    # what the tools do under their call
    assert otel.parent_of(otel.one("weather.api")) is weather, otel.tree()
    assert otel.parent_of(otel.one("census.db")) is population, otel.tree()
    # the tools' own LangChain runs: the callback tracer puts them under their parent
    # run, the sandbox tool's
    for name in ("get_weather", "get_population"):
        assert otel.parent_of(otel.one(name)) is tool_span, otel.tree()
    roots = [s for s in otel.spans if otel.parent_of(s) is None]
    assert [s.name for s in roots] == ["LangGraph"], otel.tree()


def test_one_agent_run_is_one_trace_sync(phoenix: Capture) -> None:
    out = _agent(phoenix).invoke({"messages": [HumanMessage("Paris?")]})
    assert out["messages"][2].content == 'Result (JSON): {"temp_c":21.5,"people":2100000}'
    _check_one_tree(phoenix)


async def test_one_agent_run_is_one_trace_async(phoenix: Capture) -> None:
    out = await _agent(phoenix).ainvoke({"messages": [HumanMessage("Paris?")]})
    assert out["messages"][2].content == 'Result (JSON): {"temp_c":21.5,"people":2100000}'
    _check_one_tree(phoenix)
