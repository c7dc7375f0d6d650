"""A JavaScript session per LangGraph thread, kept in the graph's state: one thread's
scripts share their globals, across turns, across worker processes (a SQLite
checkpointer reopened by another Python process), never across threads; unreadable
snapshots are tool errors. Real parts only: create_agent, ToolNode, checkpointers, the
sandbox; the chat model is scripted."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clambot_tools import ConfigError, Limits, Policy, RunResult, Sandbox
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Command
from lc_helpers import js_call, js_calls, scripted, session_agent
from pydantic import BaseModel

from langchain_clambot import (
    JSSessionRecord,
    JSSessionState,
    SandboxedJSTool,
    langgraph_interrupt_approver,
    merge_js_sessions,
)

HERE = Path(__file__).resolve().parent
NAME = "run_js_sandboxed"


def cfg(thread: str, **extra: Any) -> Any:
    return {"configurable": {"thread_id": thread, **extra}}


def turn(agent: Any, thread: str, *messages: AIMessage, **extra: Any) -> list[ToolMessage]:
    """One user turn of `thread`; the ToolMessages it added. The agent's scripted
    model must have been given `messages` (the tool calls, then a final answer)."""
    config = cfg(thread, **extra)
    before = len(agent.get_state(config).values.get("messages", []))
    out = agent.invoke({"messages": [HumanMessage("go")]}, config)
    return [m for m in out["messages"][before:] if isinstance(m, ToolMessage)]


def results(msgs: list[ToolMessage]) -> list[str]:
    return [str(m.content) for m in msgs]


def the_tool(agent: Any) -> SandboxedJSTool:
    """The agent's SandboxedJSTool (from its ToolNode)."""
    node = agent.nodes["tools"].bound
    js = node.tools_by_name[NAME]
    assert isinstance(js, SandboxedJSTool)
    return js


# -- (1) one thread keeps its globals


def test_one_thread_keeps_its_globals_across_calls_and_turns() -> None:
    model = scripted(
        js_call("let total = 1", "c1"),
        js_call("total + 1", "c2"),
        AIMessage("turn 1"),
        js_call("total += 10; total", "c3"),
        AIMessage("turn 2"),
    )
    agent = session_agent(model, InMemorySaver())
    first = turn(agent, "t1")
    assert [m.status for m in first] == ["success", "success"]
    assert results(first)[1] == "Result (JSON): 2"
    assert isinstance(first[1].artifact, RunResult) and first[1].artifact.value == 2
    assert results(turn(agent, "t1")) == ["Result (JSON): 11"]
    record = agent.get_state(cfg("t1")).values["js_session"][NAME]
    assert record["seq"] == 3 and base64.b64decode(record["snapshot"])


async def test_async_agent_keeps_its_globals() -> None:
    model = scripted(
        js_call("const seen = []; function note(x) { seen.push(x); return seen.length }", "c1"),
        js_call("note('a'); note('b')", "c2"),
        js_call("seen.join('+')", "c3"),
        AIMessage("done"),
    )
    agent = session_agent(model, InMemorySaver())
    out = await agent.ainvoke({"messages": [HumanMessage("go")]}, cfg("a1"))
    msgs = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert results(msgs)[1:] == ["Result (JSON): 2", 'Result (JSON): "a+b"']


def test_the_model_is_told_that_globals_are_kept() -> None:
    assert (
        "kept from one call of this tool to the next" in SandboxedJSTool(sessions=True).description
    )
    assert "Each run starts fresh" in SandboxedJSTool().description


# -- (2) resume on another worker


def run_worker(db: Path, thread: str, *codes: str) -> list[list[str]]:
    """Continue `thread` in a new Python process (sharing only the SQLite file)."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "session_worker.py"), str(db), thread, json.dumps(list(codes))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: list[list[str]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[tuple[Path, SqliteSaver]]:
    db = tmp_path / "checkpoints.sqlite"
    conn = sqlite3.connect(db, check_same_thread=False)
    try:
        yield db, SqliteSaver(conn)
    finally:
        conn.close()


def test_resume_on_another_worker(sqlite_db: tuple[Path, SqliteSaver]) -> None:
    db, saver = sqlite_db
    model = scripted(
        js_call(
            "let total = 1; function twice(x) { return 2 * x }\n"
            "const kept = {n: 3, tags: new Set(['a'])}",
            "c1",
        ),
        AIMessage("turn 1"),
        js_call("total = twice(total) + kept.n; total", "c2"),
        AIMessage("turn 3"),
    )
    agent = session_agent(model, saver)
    assert [m.status for m in turn(agent, "w")] == ["success"]

    # Turn 2 runs in another process: it has no live session, only the checkpoint.
    assert run_worker(
        db, "w", "twice(total) + kept.n", "kept.tags.add('b'); total = 100; [...kept.tags]"
    ) == [
        ["success", "Result (JSON): 5"],
        ["success", 'Result (JSON): ["a","b"]'],
    ]

    # Turn 3, back here: this process's live session is from turn 1 and is stale; the
    # tool notices (the state holds another revision) and restores turn 2's.
    assert results(turn(agent, "w")) == ["Result (JSON): 203"]


# -- (3) threads are apart


@pytest.mark.parametrize("max_live", [64, 1])
def test_threads_do_not_see_each_other(max_live: int) -> None:
    """With max_live_sessions=1, each switch of thread evicts the other's live session
    and restores it from the state."""
    model = scripted(
        js_call("let secret = 'A'; secret", "a1"),
        AIMessage("a"),
        js_call("typeof secret", "b1"),
        AIMessage("b"),
        js_call("let secret = 'B'; secret", "b2"),
        AIMessage("b"),
        js_call("secret", "a2"),
        AIMessage("a"),
        js_call("secret", "b3"),
        AIMessage("b"),
    )
    agent = session_agent(model, InMemorySaver(), max_live_sessions=max_live)
    assert results(turn(agent, "A")) == ['Result (JSON): "A"']
    assert results(turn(agent, "B")) == ['Result (JSON): "undefined"']
    assert results(turn(agent, "B")) == ['Result (JSON): "B"']
    assert results(turn(agent, "A")) == ['Result (JSON): "A"']
    assert results(turn(agent, "B")) == ['Result (JSON): "B"']
    assert len(the_tool(agent)._cache or ()) == (1 if max_live == 1 else 2)


# -- (4) unreadable snapshots


def foreign_snapshot() -> str:
    """A real snapshot whose header names another build of the guest."""
    session = Sandbox().session()
    session.run("let total = 1")
    data = session.snapshot()
    session.close()
    magic = b"CLAMBOT-SNAPSHOT\n"
    size = int.from_bytes(data[len(magic) : len(magic) + 4], "little")
    header = json.loads(data[len(magic) + 4 : len(magic) + 4 + size])
    header["guest_sha256"] = "0" * 64
    new = json.dumps(header).encode()
    out = magic + len(new).to_bytes(4, "little") + new + data[len(magic) + 4 + size :]
    return base64.b64encode(out).decode()


@pytest.mark.parametrize(
    "record, says",
    [
        ({"snapshot": foreign_snapshot(), "rev": "x", "seq": 1}, "another build of the guest"),
        (
            {"snapshot": base64.b64encode(b"not a snapshot").decode(), "rev": "x", "seq": 1},
            "not a ClamBot snapshot",
        ),
        ({"snapshot": "%%% not base64", "rev": "x", "seq": 1}, "not base64"),
        ({"snap": "", "rev": "x"}, "fields missing"),
        ("garbage", "not a record"),
    ],
)
def test_an_unreadable_snapshot_is_a_tool_error(record: Any, says: str) -> None:
    model = scripted(js_call("total", "c1"), AIMessage("I could not use the session"))
    agent = session_agent(model, InMemorySaver())
    out = agent.invoke({"messages": [HumanMessage("go")], "js_session": {NAME: record}}, cfg("bad"))
    msg = out["messages"][2]
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    assert isinstance(msg.content, str)
    assert msg.content.startswith(
        "Error (session): the JavaScript session of this conversation could not be restored"
    )
    assert says in msg.content
    assert out["messages"][-1].content == "I could not use the session"
    assert out["js_session"][NAME] == record  # kept: another build may read it


def test_reset_runs_in_a_new_session_and_says_so() -> None:
    record = {"snapshot": foreign_snapshot(), "rev": "x", "seq": 7}
    model = scripted(
        js_call("let fresh = 1; typeof total", "c1"),
        AIMessage("ok"),
        js_call("fresh", "c2"),
        AIMessage("ok"),
    )
    agent = session_agent(model, InMemorySaver(), on_unreadable_session="reset")
    out = agent.invoke({"messages": [HumanMessage("go")], "js_session": {NAME: record}}, cfg("r"))
    msg = out["messages"][2]
    assert msg.status == "success"
    assert msg.content.startswith('Result (JSON): "undefined"\nNote: the JavaScript session')
    assert "another build of the guest" in msg.content and "is gone" in msg.content
    assert out["js_session"][NAME]["seq"] == 8
    assert results(turn(agent, "r")) == ["Result (JSON): 1"]


# -- what a run that fails, pauses or runs beside another leaves behind


def test_a_failed_script_changes_nothing() -> None:
    """A thrown error and a limit both leave the session as it was: the fixed script
    can be sent whole again (no "redeclaration" of what the failed one declared)."""
    model = scripted(
        js_call("let a = 1", "c1"),
        js_call("let b = 2; a = 5; null.x", "c2"),
        js_call("let c = 3; a = 6; while (true) {}", "c3"),
        js_call("let b = 2; [a, b, typeof c]", "c4"),
        js_call("let a = 0", "c5"),
        AIMessage("done"),
    )
    agent = session_agent(model, InMemorySaver(), limits=Limits(timeout_s=0.3))
    msgs = turn(agent, "f")
    assert [m.status for m in msgs] == ["success", "error", "error", "success", "error"]
    assert str(msgs[1].content).startswith("Error (runtime)")
    assert str(msgs[2].content).startswith("Error (timeout)")
    assert results(msgs)[3] == 'Result (JSON): [1,2,"undefined"]'
    assert "redeclaration of 'a'" in results(msgs)[4]
    assert "assign to that name" in results(msgs)[4]


def test_parallel_calls_in_one_step_build_on_each_other() -> None:
    """Two scripts in one AIMessage run in one graph step, one after the other on the
    thread's session; the state keeps the session that has both."""
    bump = "globalThis.n = (globalThis.n ?? 0) + 1; n"
    model = scripted(
        js_calls((bump, "p1"), (bump, "p2")),
        AIMessage("done"),
        js_call("n", "c3"),
        AIMessage("done"),
    )
    agent = session_agent(model, InMemorySaver())
    assert sorted(results(turn(agent, "p"))) == ["Result (JSON): 1", "Result (JSON): 2"]
    the_tool(agent).close_sessions()  # as on another worker: only the state is left
    assert results(turn(agent, "p")) == ["Result (JSON): 2"]


def test_time_travel_sees_the_session_of_that_checkpoint() -> None:
    """The session is part of the thread's state: forking the thread from an earlier
    checkpoint brings back that checkpoint's JavaScript state."""
    model = scripted(
        js_call("let v = 'one'", "c1"),
        AIMessage("1"),
        js_call("v = 'two'", "c2"),
        AIMessage("2"),
        js_call("v", "c3"),
        AIMessage("3"),
    )
    agent = session_agent(model, InMemorySaver())
    turn(agent, "tt")
    after_one = agent.get_state(cfg("tt")).config["configurable"]["checkpoint_id"]
    turn(agent, "tt")
    assert results(turn(agent, "tt", checkpoint_id=after_one)) == ['Result (JSON): "one"']


def test_a_paused_script_runs_again_on_the_session_it_started_from() -> None:
    """An approval pauses the graph; on resume the script runs again from its first
    line, on the session as it was before the paused run (nothing declared twice)."""
    refunds: list[float] = []

    @tool
    def refund(amount_eur: float) -> dict[str, Any]:
        """Refund an amount."""
        refunds.append(amount_eur)
        return {"refunded": amount_eur}

    model = scripted(
        js_call("let r = await tools.refund({amount_eur: 30}); r.refunded", "c1"),
        AIMessage("1"),
        js_call("r.refunded * 2", "c2"),
        AIMessage("2"),
    )
    agent = session_agent(
        model,
        InMemorySaver(),
        tools=[refund],
        effects={"refund": ["write"]},
        policy=Policy(approve=langgraph_interrupt_approver()),
    )
    out = agent.invoke({"messages": [HumanMessage("go")]}, cfg("hitl"))
    assert out["__interrupt__"][0].value["binding"] == "refund"
    out = agent.invoke(Command(resume=True), cfg("hitl"))
    assert [str(m.content) for m in out["messages"] if isinstance(m, ToolMessage)] == [
        "Result (JSON): 30"
    ]
    assert refunds == [30]
    assert results(turn(agent, "hitl")) == ["Result (JSON): 60"]


# -- configuration


def test_a_graph_without_the_state_key_is_a_clear_error() -> None:
    js = SandboxedJSTool(sessions=True)
    agent = create_agent(scripted(js_call("1", "c1"), AIMessage("x")), [js])
    with pytest.raises(ConfigError, match="JSSessionMiddleware"):
        agent.invoke({"messages": [HumanMessage("go")]}, cfg("none"))


class MixinState(MessagesState, JSSessionState):
    """A custom graph's state with the session key."""


def tool_graph(js: SandboxedJSTool) -> Any:
    """START -> a ToolNode running `js`, with a checkpointer."""
    return (
        StateGraph(MixinState)
        .add_node("tools", ToolNode([js]))
        .add_edge(START, "tools")
        .compile(checkpointer=InMemorySaver())
    )


def test_a_custom_state_graph_with_the_mixin() -> None:
    """A plain ToolNode runs the calls of one message in one task: parallel calls are
    told apart by their tool call ids."""
    js = SandboxedJSTool(sessions=True)
    graph = tool_graph(js)
    bump = "globalThis.n = (globalThis.n ?? 20) + 1; n"
    graph.invoke({"messages": [js_calls((bump, "p1"), (bump, "p2"))]}, cfg("g"))
    js.close_sessions()
    out = graph.invoke({"messages": [js_call("n + 100", "c2")]}, cfg("g"))
    assert out["messages"][-1].content == "Result (JSON): 122"


async def test_a_cancelled_run_changes_nothing() -> None:
    js = SandboxedJSTool(sessions=True, limits=Limits(timeout_s=3))
    graph = tool_graph(js)
    await graph.ainvoke({"messages": [js_call("let x = 1", "c0")]}, cfg("c"))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(
            graph.ainvoke({"messages": [js_call("x = 2; while (true) {}", "c1")]}, cfg("c")), 0.2
        )
    out = await graph.ainvoke({"messages": [js_call("x", "c2")]}, cfg("c"))
    assert out["messages"][-1].content == "Result (JSON): 1"


def test_session_tool_options() -> None:
    with pytest.raises(ConfigError, match="Command"):
        SandboxedJSTool(sessions=True, response_format="content_and_artifact")
    js = SandboxedJSTool(sessions=True)
    schema = js.tool_call_schema
    assert isinstance(schema, type) and issubclass(schema, BaseModel)
    assert set(schema.model_json_schema()["properties"]) == {"code"}
    with pytest.raises(ValueError, match="ToolCall"):
        js.invoke({"code": "1"})


def test_merge_js_sessions() -> None:
    a1 = JSSessionRecord(snapshot="", rev="a1", seq=1)
    a2 = JSSessionRecord(snapshot="", rev="a2", seq=2)
    b1 = JSSessionRecord(snapshot="", rev="b1", seq=1)
    assert merge_js_sessions({}, {"a": a2}) == {"a": a2}
    assert merge_js_sessions({"a": a2}, {"a": a1}) == {"a": a2}
    assert merge_js_sessions({"a": a1}, {"a": a2, "b": b1}) == {"a": a2, "b": b1}
    assert merge_js_sessions({"a": a1, "b": b1}, {"a": None}) == {"b": b1}
    assert merge_js_sessions({"a": a1}, None) == {}
