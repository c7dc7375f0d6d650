"""Saved scripts in real LlamaIndex agents (FunctionAgent, ReActAgent) with scripted
models: the agent runs a script, saves it (the policy's approver is asked), and a later
agent calls it by name, getting a clear error for arguments that do not fit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from clambot_tools import Approval, ApprovalRequest, Policy, RunResult, ScriptLibrary
from li_scripted_llm import FunctionCalling, ReAct, Script, Style
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.tools import BaseTool, FunctionTool

from llama_index.tools.clambot import (
    ClamBotToolSpec,
    ScriptToolCallResult,
    save_script_tool,
    saved_script_tools,
)

REVENUE = """const rows = await tools.get_orders({month: args.month});
({month: args.month, total: rows.reduce((sum, r) => sum + r.eur, 0)})"""
SCHEMA = {
    "type": "object",
    "properties": {"month": {"type": "string", "description": "YYYY-MM"}},
    "required": ["month"],
}


def _orders(asked: list[str]) -> FunctionTool:
    def get_orders(month: str) -> list[dict[str, Any]]:
        """Orders of one month."""
        asked.append(month)
        return [{"id": "A", "eur": 10.5}, {"id": "B", "eur": 32}]

    return FunctionTool.from_defaults(get_orders)


def _agent(kind: str, tools: list[BaseTool], script: Script) -> Any:
    listed: list[BaseTool | Callable[..., Any]] = [*tools]
    if kind == "function":
        return FunctionAgent(tools=listed, llm=script.llm())
    return ReActAgent(tools=listed, llm=script.llm())


async def _run(agent: Any, question: str) -> tuple[Any, list[ToolCallResult]]:
    """The agent's answer and its own tool calls' results (not those of the tools a
    script called, which reach the stream too)."""
    handler = agent.run(user_msg=question)
    results = [
        ev
        async for ev in handler.stream_events()
        if isinstance(ev, ToolCallResult) and not isinstance(ev, ScriptToolCallResult)
    ]
    return await handler, results


def _expect(style: type[Style], text: str, then: ChatMessage) -> Callable[..., ChatMessage]:
    def step(messages: Sequence[ChatMessage]) -> ChatMessage:
        assert text in style.observation(messages)
        return then

    return step


@pytest.mark.parametrize("kind", ["function", "react"])
def test_the_agent_saves_a_script_that_worked(tmp_path: Path, kind: str) -> None:
    asked: list[str] = []
    requests: list[ApprovalRequest] = []

    async def approve(req: ApprovalRequest) -> Approval:
        requests.append(req)
        return Approval.ALLOW_ONCE

    library = ScriptLibrary(tmp_path / "scripts")
    spec = ClamBotToolSpec([_orders(asked)], policy=Policy(approve=approve))
    style: type[Style] = FunctionCalling if kind == "function" else ReAct
    save_args = {
        "name": "monthly_revenue",
        "description": "Revenue of one month",
        "code": REVENUE,
        "args_schema": SCHEMA,
    }
    script = Script(
        lambda m: style.call("run_js_sandboxed", code=REVENUE.replace("args.month", "'2024-03'")),
        _expect(style, '"total":42.5', style.call("save_script", **save_args)),
        _expect(style, "saved monthly_revenue@1", style.answer("Saved.")),
    )
    agent = _agent(kind, [*spec.to_tool_list(), save_script_tool(spec, library)], script)
    out, results = asyncio.run(_run(agent, "March revenue, and keep the script"))
    assert script.done and "Saved." in str(out.response.content)
    [req] = requests
    assert req.binding == "save_script" and req.args["source"] == REVENUE
    saved = library.get("monthly_revenue")
    assert saved.bindings == ("get_orders",) and saved.args_schema == SCHEMA
    assert [r.tool_name for r in results] == ["run_js_sandboxed", "save_script"]
    assert results[1].tool_output.is_error is False


@pytest.mark.parametrize("kind", ["function", "react"])
def test_saved_scripts_are_tools_the_agent_calls_by_name(tmp_path: Path, kind: str) -> None:
    asked: list[str] = []
    library = ScriptLibrary(tmp_path / "scripts")
    spec = ClamBotToolSpec([_orders(asked)], policy=Policy(auto_approve=("write",)))
    save = save_script_tool(spec, library)
    assert not save.call(
        name="monthly_revenue",
        description="Revenue of one month",
        code=REVENUE,
        args_schema=SCHEMA,
    ).is_error
    tools = saved_script_tools(spec, library)
    assert [t.metadata.name for t in tools] == ["monthly_revenue"]
    assert tools[0].metadata.to_openai_tool()["function"]["parameters"] == SCHEMA
    style: type[Style] = FunctionCalling if kind == "function" else ReAct
    script = Script(
        lambda m: style.call("monthly_revenue", month="2024-03"),
        _expect(style, '"total":42.5', style.call("monthly_revenue", month=3)),
        _expect(
            style,
            "invalid arguments for script monthly_revenue: month: must be string, not a number",
            style.answer("March: 42.5 EUR"),
        ),
    )
    agent = _agent(kind, [*spec.to_tool_list(), *tools], script)
    out, results = asyncio.run(_run(agent, "March revenue"))
    assert script.done and "March: 42.5 EUR" in str(out.response.content)
    ok, bad = results
    assert isinstance(ok.tool_output.raw_output, RunResult) and not ok.tool_output.is_error
    assert bad.tool_output.is_error
    assert asked == ["2024-03"]  # the call with bad arguments never ran


def test_a_save_without_an_approver_is_an_error_output(tmp_path: Path) -> None:
    spec = ClamBotToolSpec()
    save = save_script_tool(spec, ScriptLibrary(tmp_path / "s"))
    out = asyncio.run(save.acall(name="x", description="y", code="1"))
    assert out.is_error and "no approver is set" in out.content
