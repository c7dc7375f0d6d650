"""A script that returns, logs or throws lone surrogates ('a\\ud800b', which no UTF-8
text can hold) never breaks a LangChain agent: the ToolMessage content always encodes
(what a model provider's request needs) and a real LangGraph checkpointer stores the
messages (its msgpack writer refused the artifact and crashed `graph.invoke`)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from clambot_tools import RunResult
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from lc_helpers import js_call, scripted, session_agent

from langchain_clambot import SandboxedJSTool

RETURNS = "console.log('log \\ud800'); ({['key \\udfff']: ['value \\ud800']})"
THROWS = "const e = new Error('thrown'); e.stack = 'at \\ud800'; throw e"


@pytest.mark.parametrize("sessions", [False, True])
def test_a_checkpointed_graph_takes_lone_surrogates(sessions: bool) -> None:
    saver = SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False))
    model = scripted(js_call(RETURNS, "c1"), js_call(THROWS, "c2"), AIMessage(content="Done."))
    agent: Any = (
        session_agent(model, saver)
        if sessions
        else create_agent(model, [SandboxedJSTool()], checkpointer=saver)
    )
    config = {"configurable": {"thread_id": f"surrogates-{sessions}"}}
    out = agent.invoke({"messages": [HumanMessage("go")]}, config)
    returned, thrown = (m for m in out["messages"] if isinstance(m, ToolMessage))
    assert returned.content == (
        'Result (JSON): {"key \\udfff":["value \\ud800"]}\nConsole output:\nlog \\ud800'
    )
    assert thrown.status == "error" and isinstance(thrown.content, str)
    for msg in (returned, thrown):
        assert isinstance(msg.content, str)
        msg.content.encode("utf-8")  # a provider's request can carry it
    # the artifact encodes too: U+FFFD where the lone surrogates were
    assert isinstance(returned.artifact, RunResult)
    assert returned.artifact.value == {"key \ufffd": ["value \ufffd"]}
    assert returned.artifact.logs[0].message == "log \ufffd"
    # and the checkpoint holds the conversation as it was
    stored = agent.get_state(config).values["messages"]
    assert [m.content for m in stored] == [m.content for m in out["messages"]]
    # (LangGraph rebuilds only the types it is told to allow: else the RunResult's fields)
    artifact = stored[2].artifact
    fields = artifact if isinstance(artifact, dict) else artifact.model_dump()
    assert fields["value"] == {"key \ufffd": ["value \ufffd"]}
    assert out["messages"][-1].content == "Done."
