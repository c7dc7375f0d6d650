"""Saved scripts in real LangChain agent loops (create_agent, LangGraph underneath) with
scripted chat models: the model runs a script, promotes it with save_script (a human
approves through a LangGraph interrupt), and a later agent calls it by name."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from clambot_tools import Limits, Policy, RunResult, ScriptLibrary
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from lc_helpers import js_call, scripted

from langchain_clambot import (
    SandboxedJSTool,
    langgraph_interrupt_approver,
    save_script_tool,
    saved_script_tools,
)
from langchain_clambot._scripts import tools_named_in

REVENUE = """\
const rows = await tools.get_orders({month: args.month});
const total = rows.reduce((sum, r) => sum + r.eur, 0);
({month: args.month, total, orders: rows.length})"""
SCHEMA = {
    "type": "object",
    "properties": {"month": {"type": "string", "description": "YYYY-MM"}},
    "required": ["month"],
}


def _tools() -> tuple[Any, list[str]]:
    asked: list[str] = []
    lock = threading.Lock()

    @tool
    def get_orders(month: str) -> list[dict[str, Any]]:
        """Orders of one month."""
        with lock:
            asked.append(month)
        return [{"id": "A", "eur": 10.5}, {"id": "B", "eur": 32}]

    return get_orders, asked


def _call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}]
    )


def test_the_model_saves_a_script_that_worked_after_a_human_approves(tmp_path: Path) -> None:
    get_orders, _ = _tools()
    library = ScriptLibrary(tmp_path / "scripts")
    js = SandboxedJSTool(
        tools=[get_orders],
        policy=Policy(approve=langgraph_interrupt_approver()),
        limits=Limits(timeout_s=3),
    )
    save = {
        "name": "monthly_revenue",
        "description": "Revenue of one month",
        "code": "```js\n" + REVENUE + "\n```",
        "args_schema": SCHEMA,
    }
    model = scripted(
        js_call(REVENUE.replace("args.month", "'2024-03'"), "c1"),
        _call("save_script", save, "c2"),
        AIMessage(content="Saved it."),
    )
    agent = create_agent(model, [js, save_script_tool(js, library)], checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "t1"}}
    out = agent.invoke({"messages": [HumanMessage("revenue of March, then keep it")]}, cfg)
    (intr,) = out["__interrupt__"]
    assert intr.value["binding"] == "save_script"
    assert intr.value["args"]["source"] == REVENUE  # the human reviews the whole script
    assert intr.value["args"]["bindings"] == ["get_orders"]  # read from the code
    assert library.names() == []
    out = agent.invoke(Command(resume=True), cfg)
    assert "__interrupt__" not in out
    msgs = out["messages"]
    first = next(m for m in msgs if isinstance(m, ToolMessage) and m.tool_call_id == "c1")
    assert '"total":42.5' in first.content  # the run that worked
    saved_msg = next(m for m in msgs if isinstance(m, ToolMessage) and m.tool_call_id == "c2")
    assert saved_msg.status != "error" and "Saved monthly_revenue@1" in saved_msg.content
    assert msgs[-1].content == "Saved it."
    script = library.get("monthly_revenue")
    assert (script.source, script.bindings, script.args_schema) == (
        REVENUE,
        ("get_orders",),
        SCHEMA,
    )


def test_a_refused_save_is_an_error_the_model_reads(tmp_path: Path) -> None:
    get_orders, _ = _tools()
    library = ScriptLibrary(tmp_path / "scripts")
    js = SandboxedJSTool(tools=[get_orders])  # no approver: saving is refused
    save = {"name": "x", "description": "y", "code": "1 + 1"}
    model = scripted(_call("save_script", save, "c1"), AIMessage(content="ok"))
    agent = create_agent(model, [js, save_script_tool(js, library)])
    out = agent.invoke({"messages": [HumanMessage("save")]})
    msg = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert msg.status == "error" and "no approver is set" in msg.content
    assert library.names() == []


@pytest.mark.parametrize("use_async", [False, True])
async def test_saved_scripts_are_tools_an_agent_calls_by_name(
    tmp_path: Path, use_async: bool
) -> None:
    get_orders, asked = _tools()
    library = ScriptLibrary(tmp_path / "scripts")
    js = SandboxedJSTool(tools=[get_orders], policy=Policy(auto_approve=("write",)))
    saver = save_script_tool(js, library)
    saver.invoke(
        {
            **{"name": "monthly_revenue", "description": "Revenue of one month"},
            "code": REVENUE,
            "args_schema": SCHEMA,
        }
    )
    tools = saved_script_tools(js, library)
    assert [(t.name, t.description) for t in tools] == [("monthly_revenue", "Revenue of one month")]
    assert tools[0].tool_call_schema == {**SCHEMA, "description": "Revenue of one month"}
    model = scripted(
        _call("monthly_revenue", {"month": "2024-03"}, "c1"),
        _call("monthly_revenue", {"month": 3}, "c2"),
        AIMessage(content="March: 42.5 EUR"),
    )
    agent = create_agent(model, [js, *tools])
    inputs: Any = {"messages": [HumanMessage("revenue of March")]}
    out = await agent.ainvoke(inputs) if use_async else agent.invoke(inputs)
    msgs = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert msgs[0].status != "error" and '"total":42.5' in msgs[0].content
    assert isinstance(msgs[0].artifact, RunResult)
    assert msgs[1].status == "error"
    assert "invalid arguments for script monthly_revenue: month: must be string" in msgs[1].content
    assert asked == ["2024-03"]  # the bad call never ran
    assert out["messages"][-1].content == "March: 42.5 EUR"


def test_a_failing_saved_script_tells_the_model_not_to_retry(tmp_path: Path) -> None:
    get_orders, _ = _tools()
    library = ScriptLibrary(tmp_path / "scripts")
    js = SandboxedJSTool(tools=[get_orders], policy=Policy(auto_approve=("write",)))
    save_script_tool(js, library).invoke(
        {"name": "broken", "description": "throws", "code": "throw new Error('no data')"}
    )
    [broken] = saved_script_tools(js, library)
    msg = broken.invoke({"type": "tool_call", "id": "1", "name": "broken", "args": {}})
    assert msg.status == "error"
    assert msg.content.startswith("Error (runtime): Error: no data")
    assert "do not retry it unchanged" in msg.content


def test_tools_named_in_code() -> None:
    code = "await tools.a({}); await tools['b-c']({}); tools . d; tools.zzz"
    assert tools_named_in(code, ["a", "b-c", "d", "e"]) == ["a", "b-c", "d"]
