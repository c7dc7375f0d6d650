"""A real LangChain agent loop (langchain.agents.create_agent, LangGraph underneath)
driven by a scripted chat model: the model runs a script that calls two granted tools
at once, then a broken script, reads the error, repairs it, and answers."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from clambot_tools import Limits, RunResult
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from lc_helpers import js_call, scripted

from langchain_clambot import SandboxedJSTool

PARALLEL = """
const [w, p] = await Promise.all([
  tools.get_weather({city: 'Paris'}),
  tools.get_population({city: 'Paris'}),
]);
({temp_c: w.temp_c, people: p.people})
"""
BROKEN = "```js\nconst w = await tools.get_weather({city: 'Paris'});\nw.forecast.today\n```"
REPAIRED = "```js\nconst w = await tools.get_weather({city: 'Paris'});\nw.temp_c\n```"


class Recorder(BaseCallbackHandler):
    """Records tool runs: name, run id, parent run id."""

    def __init__(self) -> None:
        self.tool_runs: list[tuple[str, uuid.UUID, uuid.UUID | None]] = []
        self._lock = threading.Lock()

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            self.tool_runs.append((serialized["name"], run_id, parent_run_id))


def make_agent() -> tuple[Any, list[tuple[str, str]]]:
    ran: list[tuple[str, str]] = []
    lock = threading.Lock()

    @tool
    def get_weather(city: str) -> dict[str, Any]:
        """Current weather in a city."""
        with lock:
            ran.append(("get_weather", city))
        return {"city": city, "temp_c": 21.5}

    @tool
    async def get_population(city: str) -> dict[str, Any]:
        """Population of a city."""
        with lock:
            ran.append(("get_population", city))
        return {"city": city, "people": 2_100_000}

    js = SandboxedJSTool(tools=[get_weather, get_population], limits=Limits(timeout_s=3))
    model = scripted(
        js_call(PARALLEL, "call_1"),
        js_call(BROKEN, "call_2"),
        js_call(REPAIRED, "call_3"),
        AIMessage(content="It is 21.5 °C in Paris, a city of 2.1 million people."),
    )
    return create_agent(model, [js]), ran


def check_transcript(messages: list[Any], ran: list[tuple[str, str]]) -> None:
    kinds = [type(m).__name__ for m in messages]
    assert kinds == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    first, broken, repaired = (m for m in messages if isinstance(m, ToolMessage))

    assert first.tool_call_id == "call_1" and first.status == "success"
    assert first.content == 'Result (JSON): {"temp_c":21.5,"people":2100000}'
    assert isinstance(first.artifact, RunResult) and first.artifact.ok
    assert first.artifact.stats.binding_calls == 2

    assert broken.tool_call_id == "call_2" and broken.status == "error"
    text = broken.content
    assert isinstance(text, str)
    assert text.startswith("Error (runtime): TypeError: cannot read property 'today' of undefined")
    # line 2 of the script inside the fence, shown with its neighbour, never the rest
    assert "At line 2" in text
    assert "> 2 | w.forecast.today" in text
    assert "  1 | const w = await tools.get_weather({city: 'Paris'});" in text
    assert "```" not in text
    assert "Tool calls that completed before the error: tools.get_weather x1." in text

    assert repaired.tool_call_id == "call_3" and repaired.status == "success"
    assert repaired.content == "Result (JSON): 21.5"
    assert messages[-1].content.startswith("It is 21.5")

    assert sorted(ran) == [
        ("get_population", "Paris"),
        ("get_weather", "Paris"),
        ("get_weather", "Paris"),
        ("get_weather", "Paris"),
    ]


def check_nesting(rec: Recorder) -> None:
    js_runs = {rid for name, rid, _ in rec.tool_runs if name == "run_js_sandboxed"}
    nested = [(name, parent) for name, _, parent in rec.tool_runs if name != "run_js_sandboxed"]
    assert len(js_runs) == 3
    assert len(nested) == 4
    # every granted tool's run is a child of the script's run: tracing sees it there
    assert all(parent in js_runs for _, parent in nested)


def test_agent_loop_sync() -> None:
    agent, ran = make_agent()
    rec = Recorder()
    out = agent.invoke(
        {"messages": [HumanMessage("Weather and population of Paris?")]}, {"callbacks": [rec]}
    )
    check_transcript(out["messages"], ran)
    check_nesting(rec)


async def test_agent_loop_async() -> None:
    agent, ran = make_agent()
    rec = Recorder()
    out = await agent.ainvoke(
        {"messages": [HumanMessage("Weather and population of Paris?")]}, {"callbacks": [rec]}
    )
    check_transcript(out["messages"], ran)
    check_nesting(rec)


@pytest.mark.parametrize(
    "code, kind",
    [
        ("while (true) {}", "timeout"),
        ("const a = []; while (true) a.push(new Array(1e5).fill(1))", "memory"),
        ("function f(n) { return f(n + 1) + 1 } f(0)", "stack"),
        ("await tools.nope({})", "runtime"),
        ("def f():\n  return 1", "syntax"),
        ("throw null", "runtime"),
    ],
)
def test_every_failure_is_a_tool_error_the_loop_survives(code: str, kind: str) -> None:
    js = SandboxedJSTool(limits=Limits(timeout_s=0.3, memory_mb=16))
    model = scripted(js_call(code, "c1"), AIMessage(content="gave up"))
    out = create_agent(model, [js]).invoke({"messages": [HumanMessage("go")]})
    msg = out["messages"][2]
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    assert isinstance(msg.content, str) and msg.content.startswith(f"Error ({kind})")
    assert out["messages"][-1].content == "gave up"
