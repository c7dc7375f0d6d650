"""Agents end to end, offline: a scripted model calls run_js_sandboxed with a script that
calls granted LlamaIndex tools, reads the result (or an error it then repairs) and answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from clambot_tools import RunResult
from li_scripted_llm import FunctionCalling, ReAct, Script, Step, Style
from llama_index.core.agent.workflow import (
    AgentWorkflow,
    FunctionAgent,
    ReActAgent,
    ToolCallResult,
)
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.tools import BaseTool, FunctionTool
from llama_index.core.workflow import Workflow

from llama_index.tools.clambot import ClamBotToolSpec

GOOD = """const order = await tools.get_order({order_id: "A-17"});
const rate = await tools.eur_rate({currency: "USD"});
({usd: order.total_eur * rate, items: order.items.length})"""

# `id` instead of `order_id`: the binding refuses it, the run fails with binding_failed
BAD = """const order = await tools.get_order({id: "A-17"});
order.total_eur"""


class Shop:
    """The host's tools, and what the sandbox asked of them."""

    def __init__(self) -> None:
        self.orders_read: list[str] = []
        self.loops: list[asyncio.AbstractEventLoop] = []

    def tools(self) -> list[FunctionTool]:
        def get_order(order_id: str) -> dict[str, Any]:
            """Look up an order by id."""
            self.orders_read.append(order_id)
            return {"id": order_id, "total_eur": 40.0, "items": ["tea", "cups", "tray"]}

        async def eur_rate(currency: str) -> float:
            """How many units of `currency` one euro buys."""
            self.loops.append(asyncio.get_running_loop())
            return {"USD": 1.25}[currency]

        return [
            FunctionTool.from_defaults(get_order),
            FunctionTool.from_defaults(async_fn=eur_rate),
        ]


def _answer_from(style: type[Style]) -> Step:
    def step(messages: Sequence[ChatMessage]) -> ChatMessage:
        data = json.loads(style.observation(messages).removeprefix("Result (JSON): "))
        return style.answer(f"Order A-17 costs {data['usd']} USD for {data['items']} items.")

    return step


def _repair(style: type[Style]) -> Step:
    def step(messages: Sequence[ChatMessage]) -> ChatMessage:
        seen = style.observation(messages)
        # what the model is told: enough to fix the call, and never its own script back
        assert "Error (binding_failed)" in seen
        assert "has invalid arguments: order_id: Field required" in seen
        assert "At line 1" in seen
        assert "order.total_eur" not in seen  # line 2 of the script is not echoed
        return style.call("run_js_sandboxed", code=f"```js\n{GOOD}\n```")

    return step


def _build(
    kind: str, spec: ClamBotToolSpec, steps: list[Step]
) -> tuple[Workflow, Script, type[Style]]:
    """The agent (or workflow) under test, the coder's script, and its reply style."""
    # to_tool_list() is typed list[FunctionTool] (as in every BaseToolSpec); agents take
    # a list of BaseTool | Callable
    tools: list[BaseTool | Callable[..., Any]] = [*spec.to_tool_list()]
    if kind == "function":
        script = Script(*steps)
        return FunctionAgent(tools=tools, llm=script.llm()), script, FunctionCalling
    if kind == "react":
        script = Script(*steps)
        return ReActAgent(tools=tools, llm=script.llm()), script, ReAct
    assert kind == "workflow"
    triage = Script(
        lambda m: FunctionCalling.call(
            "handoff", to_agent="coder", reason="this needs a computation"
        )
    )
    script = Script(*steps)
    workflow = AgentWorkflow(
        agents=[
            FunctionAgent(
                name="triage",
                description="Routes questions.",
                llm=triage.llm(),
                can_handoff_to=["coder"],
            ),
            FunctionAgent(
                name="coder",
                description="Answers by running JavaScript.",
                tools=tools,
                llm=script.llm(),
            ),
        ],
        root_agent="triage",
    )
    return workflow, script, FunctionCalling


def _steps(style: type[Style], scenario: str) -> list[Step]:
    if scenario == "ok":
        return [lambda m: style.call("run_js_sandboxed", code=GOOD), _answer_from(style)]
    return [lambda m: style.call("run_js_sandboxed", code=BAD), _repair(style), _answer_from(style)]


async def _run(workflow: Workflow, question: str) -> tuple[Any, list[ToolCallResult]]:
    handler = workflow.run(user_msg=question)
    results: list[ToolCallResult] = []
    async for ev in handler.stream_events():
        if isinstance(ev, ToolCallResult):
            results.append(ev)
    return await handler, results


@pytest.mark.parametrize("scenario", ["ok", "repair"])
@pytest.mark.parametrize("kind", ["function", "react", "workflow"])
def test_agent_runs_javascript_that_calls_granted_tools(kind: str, scenario: str) -> None:
    shop = Shop()
    spec = ClamBotToolSpec(shop.tools())
    reply: type[Style] = FunctionCalling if kind != "react" else ReAct
    workflow, script, style = _build(kind, spec, _steps(reply, scenario))

    async def main() -> tuple[Any, list[ToolCallResult], asyncio.AbstractEventLoop]:
        out, results = await _run(workflow, "How much is order A-17 in dollars?")
        return out, results, asyncio.get_running_loop()

    out, results, loop = asyncio.run(main())

    assert script.done
    assert "Order A-17 costs 50 USD for 3 items." in str(out.response.content)
    # the model was told the tool takes JavaScript, and what `tools` holds
    shown = style.tools_shown(script)
    assert "JavaScript" in shown
    assert "get_order(args: {" in shown and "eur_rate(args: {" in shown

    runs = [r for r in results if r.tool_name == "run_js_sandboxed"]
    assert len(runs) == (1 if scenario == "ok" else 2)
    *failed, last = runs
    assert isinstance(last.tool_output.raw_output, RunResult)
    assert last.tool_output.raw_output.value == {"usd": 50.0, "items": 3}
    assert last.tool_output.is_error is False
    for r in failed:
        assert r.tool_output.is_error is True
        err = r.tool_output.raw_output.error
        assert (err.kind, err.line) == ("binding_failed", 1)
    # the good script read the order once; the bad one never reached the function
    assert shop.orders_read == ["A-17"]
    # the async tool ran on the agent's own event loop (the tool's acall used Sandbox.arun)
    assert shop.loops == [loop]


def test_react_agent_gets_a_syntax_error_and_continues() -> None:
    """A script the model wrapped in prose and TypeScript: the error is an observation the
    agent reads; it answers from the next run."""
    spec = ClamBotToolSpec()

    def repair(messages: Sequence[ChatMessage]) -> ChatMessage:
        seen = ReAct.observation(messages)
        assert "Error (syntax)" in seen and "Hint: That is TypeScript" in seen
        return ReAct.call("run_js_sandboxed", code="[1, 2, 3].reduce((a, b) => a + b, 0)")

    script = Script(
        lambda m: ReAct.call("run_js_sandboxed", code="const n: number = 6;\nn"),
        repair,
        lambda m: ReAct.answer(
            f"The sum is {ReAct.observation(m).removeprefix('Result (JSON): ')}."
        ),
    )
    agent = ReActAgent(tools=[*spec.to_tool_list()], llm=script.llm())
    out, results = asyncio.run(_run(agent, "Add 1, 2 and 3."))
    assert str(out.response.content) == "The sum is 6."
    assert [r.tool_output.is_error for r in results] == [True, False]
    assert "No network, files or environment." in ReAct.tools_shown(script)
