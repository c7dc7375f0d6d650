"""SandboxedJSTool(mcp=[...]): an MCP server's tools granted to the scripts of a real
LangChain agent loop (create_agent, scripted model), against a real MCP server process
(the repository's tests/mcp_server.py, over stdio)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from clambot_tools import Approval, ApprovalRequest, Limits, Policy, RunResult
from clambot_tools.mcp import MCPConnection
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from lc_helpers import js_call, scripted

from langchain_clambot import SandboxedJSTool

SERVER = str(Path(__file__).resolve().parents[3] / "tests" / "mcp_server.py")
STDIO = {"command": sys.executable, "args": [SERVER]}

FORECAST = """
const [w, e] = await Promise.all([
  tools.lookup({city: 'Paris', days: 2}),
  tools.echo({text: 'checked'}),
]);
({temp_c: w.temp_c, note: e})
"""
FAILING = "await tools.fail({message: 'the weather service is down'})"
NOTE = "await tools.add_note({text: 'bring an umbrella'})"


def run_agent(js: SandboxedJSTool, *, use_async: bool = False) -> list[Any]:
    model = scripted(
        js_call(FORECAST, "call_1"),
        js_call(FAILING, "call_2"),
        js_call(NOTE, "call_3"),
        AIMessage(content="23.5 °C in Paris; noted."),
    )
    agent = create_agent(model, [js])
    question = HumanMessage("Weather in Paris, and note it?")
    if use_async:
        import asyncio

        out = asyncio.run(agent.ainvoke({"messages": [question]}))
    else:
        out = agent.invoke({"messages": [question]})
    messages: list[Any] = out["messages"]
    return messages


def check(messages: list[Any], asked: list[ApprovalRequest]) -> None:
    forecast, failed, noted = (m for m in messages if isinstance(m, ToolMessage))
    assert forecast.status == "success"
    assert forecast.content == 'Result (JSON): {"temp_c":23.5,"note":"checked"}'
    assert isinstance(forecast.artifact, RunResult) and forecast.artifact.stats.binding_calls == 2
    # isError: the model reads the server's own message and can act on it
    assert failed.status == "error"
    assert isinstance(failed.content, str) and failed.content.startswith("Error (binding_failed)")
    assert "the weather service is down" in failed.content
    # add_note has no annotations: a write, which the approver was asked about
    assert noted.status == "success" and noted.content == 'Result (JSON): "1 notes"'
    assert [(r.binding, dict(r.args)) for r in asked] == [
        ("add_note", {"text": "bring an umbrella"})
    ]
    assert messages[-1].content.startswith("23.5")


def approver(asked: list[ApprovalRequest]) -> Any:
    def approve(req: ApprovalRequest) -> Approval:
        asked.append(req)
        return Approval.ALLOW_ONCE

    return approve


def test_agent_loop_with_an_mcp_server_from_its_config() -> None:
    asked: list[ApprovalRequest] = []
    js = SandboxedJSTool(mcp=[STDIO], policy=Policy(approve=approver(asked)))
    # the model learns the server's tools from the tool's description
    assert "lookup(args: {" in js.description and "Promise<string>" in js.description
    assert "add_note(args: { text: string }): Promise<string>;" in js.description
    check(run_agent(js), asked)


def test_async_agent_loop_with_a_connection() -> None:
    asked: list[ApprovalRequest] = []
    with MCPConnection(**STDIO) as conn:  # type: ignore[arg-type]
        js = SandboxedJSTool(
            mcp=[conn], policy=Policy(approve=approver(asked)), limits=Limits(timeout_s=10)
        )
        check(run_agent(js, use_async=True), asked)
        pid = conn.server_pid
    assert pid is not None
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{pid}").exists()
