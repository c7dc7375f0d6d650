"""ClamBotToolSpec(mcp=[...]): an MCP server's tools granted to the scripts of a real
LlamaIndex agent (FunctionAgent, scripted model), against a real MCP server process
(the repository's tests/mcp_server.py, over stdio: no network)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from clambot_tools import ConfigError, Limits, Policy, RunResult, Sandbox
from clambot_tools.mcp import MCPConnection
from li_scripted_llm import FunctionCalling, Script
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage

from llama_index.tools.clambot import ClamBotToolSpec

SERVER = str(Path(__file__).resolve().parents[3] / "tests" / "mcp_server.py")

LOOKUP = """const w = await tools.lookup({city: "Lima"});
const n = await tools.add_note({text: `Lima: ${w.temp_c}`});
({temp_c: w.temp_c, notes: n})"""
# a server-side error (isError), read by the model and repaired
FAILING = 'await tools.fail({message: "unknown city: Lmia"})'


def test_function_agent_calls_an_mcp_servers_tools_from_javascript() -> None:
    servers = {"weather": {"command": sys.executable, "args": [SERVER]}}
    # add_note is a write (no annotations): this application lets writes run unasked
    spec = ClamBotToolSpec(
        mcp=servers, policy=Policy(auto_approve=("write",)), limits=Limits(timeout_s=10)
    )

    def repair(messages: Sequence[ChatMessage]) -> ChatMessage:
        seen = FunctionCalling.observation(messages)
        assert "Error (binding_failed)" in seen and "unknown city: Lmia" in seen
        return FunctionCalling.call("run_js_sandboxed", code=LOOKUP)

    def answer(messages: Sequence[ChatMessage]) -> ChatMessage:
        data = json.loads(FunctionCalling.observation(messages).removeprefix("Result (JSON): "))
        return FunctionCalling.answer(f"{data['temp_c']} °C in Lima ({data['notes']}).")

    script = Script(
        lambda m: FunctionCalling.call("run_js_sandboxed", code=FAILING), repair, answer
    )
    agent = FunctionAgent(
        tools=[*spec.to_tool_list()], llm=script.llm(), system_prompt=spec.system_prompt()
    )

    async def main() -> tuple[Any, list[ToolCallResult]]:
        handler = agent.run(user_msg="Weather in Lima? Note it.")
        results = [ev async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)]
        return await handler, results

    out, results = asyncio.run(main())
    assert script.done
    assert str(out.response.content) == "22.5 °C in Lima (1 notes)."
    # the tool's description names the server's tools; the system prompt declares them
    shown = FunctionCalling.tools_shown(script)
    assert "lookup" in shown and "add_note" in shown
    prompt = str(script.calls[0][0][0].content)
    assert "lookup(args: {" in prompt and "add_note(args: { text: string })" in prompt
    failed, ok = (r.tool_output for r in results)
    assert failed.is_error is True
    assert isinstance(ok.raw_output, RunResult) and ok.raw_output.value == {
        "temp_c": 22.5,
        "notes": "1 notes",
    }


def test_spec_takes_a_ready_connection_and_runs_sync() -> None:
    with MCPConnection(command=sys.executable, args=[SERVER]) as conn:
        spec = ClamBotToolSpec(mcp=[conn])
        res = spec.run_js_sandboxed("(await tools.lookup({city: 'Rome'})).city")
        assert res.ok and res.value == "Rome"
        with pytest.raises(ConfigError, match="sandbox= or tools/mcp"):
            ClamBotToolSpec(mcp=[conn], sandbox=Sandbox())
