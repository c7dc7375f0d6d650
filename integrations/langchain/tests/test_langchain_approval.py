"""Approvals of write tools answered by a human through LangGraph's interrupt, in a
real graph with a checkpointer: pause, resume, re-run."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from clambot_tools import Approval, ApprovalRequest, Limits, Policy, Sandbox, binding
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import Command
from lc_helpers import js_call, scripted

from langchain_clambot import SandboxedJSTool, langgraph_interrupt_approver
from langchain_clambot._adapt import RunState
from langchain_clambot._approval import (
    SessionApprovals,
    approval_payload,
    parse_answer,
    run_approver,
)

LOOKUP_THEN_REFUND = """
const o = await tools.lookup({order_id: 'A1'});
const r = await tools.refund({order_id: 'A1', amount_eur: o.amount_eur});
({refunded: r.refunded, id: o.order_id})
"""


def make_agent(code: str) -> tuple[Any, list[tuple[Any, ...]]]:
    ran: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    @tool
    def lookup(order_id: str) -> dict[str, Any]:
        """Look up an order."""
        with lock:
            ran.append(("lookup", order_id))
        return {"order_id": order_id, "amount_eur": 30}

    @tool
    def refund(order_id: str, amount_eur: float) -> dict[str, Any]:
        """Refund an order."""
        with lock:
            ran.append(("refund", order_id, amount_eur))
        return {"refunded": amount_eur}

    js = SandboxedJSTool(
        tools=[lookup, refund],
        effects={"refund": ["write"]},
        policy=Policy(approve=langgraph_interrupt_approver()),
        limits=Limits(timeout_s=3),
    )
    model = scripted(js_call(code, "c1"), AIMessage(content="done"))
    return create_agent(model, [js], checkpointer=InMemorySaver()), ran


def tool_messages(out: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in out["messages"] if isinstance(m, ToolMessage)]


def test_approved_after_resume() -> None:
    agent, ran = make_agent(LOOKUP_THEN_REFUND)
    cfg: Any = {"configurable": {"thread_id": "approve"}}
    out = agent.invoke({"messages": [HumanMessage("refund A1")]}, cfg)

    (intr,) = out["__interrupt__"]
    assert intr.value["type"] == "clambot_approval"
    assert intr.value["binding"] == "refund"
    assert intr.value["args"] == {"order_id": "A1", "amount_eur": 30}
    assert intr.value["effects"] == ["write"]
    assert "tools.refund" in intr.value["question"]
    assert ran == [("lookup", "A1")]  # paused before the refund
    assert tool_messages(out) == []

    out = agent.invoke(Command(resume=True), cfg)
    assert "__interrupt__" not in out
    (msg,) = tool_messages(out)
    assert msg.status == "success"
    assert msg.content == 'Result (JSON): {"refunded":30,"id":"A1"}'
    # the script ran again from its start: the read twice, the refund once
    assert ran == [("lookup", "A1"), ("lookup", "A1"), ("refund", "A1", 30.0)]
    assert out["messages"][-1].content == "done"


async def test_denied_after_resume_async() -> None:
    agent, ran = make_agent(LOOKUP_THEN_REFUND)
    cfg: Any = {"configurable": {"thread_id": "deny"}}
    out = await agent.ainvoke({"messages": [HumanMessage("refund A1")]}, cfg)
    assert out["__interrupt__"][0].value["binding"] == "refund"

    rid = out["__interrupt__"][0].value["request_id"]
    out = await agent.ainvoke(Command(resume={"decision": "deny", "request_id": rid}), cfg)
    (msg,) = tool_messages(out)
    assert msg.status == "error"
    assert isinstance(msg.content, str)
    assert msg.content.startswith(
        'Error (binding_denied): Error: tools.refund({"order_id":"A1","amount_eur":30}) '
        "was not approved"
    )
    assert ("refund", "A1", 30.0) not in ran
    assert out["messages"][-1].content == "done"


def test_second_approval_in_one_script_is_not_asked() -> None:
    """Resuming re-runs the script: a refund approved before a second pause would run
    twice. So once an approved call went ahead, the next one is refused, not asked."""
    code = (
        "const a = await tools.refund({order_id: 'A', amount_eur: 1});\n"
        "const b = await tools.refund({order_id: 'B', amount_eur: 2});\n[a, b]"
    )
    agent, ran = make_agent(code)
    cfg: Any = {"configurable": {"thread_id": "twice"}}
    out = agent.invoke({"messages": [HumanMessage("refund A and B")]}, cfg)
    assert out["__interrupt__"][0].value["args"]["order_id"] == "A"
    out = agent.invoke(Command(resume=Approval.ALLOW_ONCE.value), cfg)
    assert "__interrupt__" not in out
    (msg,) = tool_messages(out)
    assert msg.status == "error"
    assert isinstance(msg.content, str)
    assert "Error (binding_denied)" in msg.content
    assert "Tool calls that completed before the error: tools.refund x1." in msg.content
    assert "Make that call in a new script." in msg.content
    assert ran == [("refund", "A", 1.0)]  # exactly once


def test_a_plain_sandbox_loses_the_graph_context() -> None:
    """Why SandboxedJSTool wraps the approver: ClamBot calls it on a worker thread,
    where LangGraph's runnable context is gone, so interrupt() cannot work there and a
    plain Sandbox with this approver denies every call."""
    refunds: list[str] = []

    def refund(order_id: str) -> str:
        refunds.append(order_id)
        return "ok"

    sb = Sandbox(
        bindings=[binding(refund, effects=("write",))],
        policy=Policy(approve=langgraph_interrupt_approver()),
    )

    def node(state: MessagesState) -> dict[str, Any]:
        res = sb.run("await tools.refund({order_id: 'A'})")
        assert res.error is not None
        return {"messages": [AIMessage(content=res.error.kind)]}

    graph = StateGraph(MessagesState).add_node("n", node).add_edge(START, "n")
    out = graph.compile(checkpointer=InMemorySaver()).invoke(
        {"messages": [HumanMessage("x")]}, {"configurable": {"thread_id": "plain"}}
    )
    assert "__interrupt__" not in out
    assert out["messages"][-1].content == "binding_denied"
    assert refunds == []


def test_plain_bindings_can_interrupt_too() -> None:
    """A ClamBot binding runs in a copy of the tool's context: it may call interrupt()."""
    from langgraph.types import interrupt

    def ask(question: str) -> str:
        return str(interrupt(question))

    js = SandboxedJSTool(bindings=[ask])
    model = scripted(
        js_call("'answer: ' + await tools.ask({question: 'color?'})", "c1"),
        AIMessage(content="done"),
    )
    agent = create_agent(model, [js], checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "ask"}}
    out = agent.invoke({"messages": [HumanMessage("go")]}, cfg)
    assert out["__interrupt__"][0].value == "color?"
    out = agent.invoke(Command(resume="blue"), cfg)
    (msg,) = tool_messages(out)
    assert msg.content == 'Result (JSON): "answer: blue"'


@pytest.mark.parametrize(
    "answer, expected",
    [
        (True, Approval.ALLOW_ONCE),
        (False, Approval.DENY),
        ("allow_session", Approval.ALLOW_SESSION),
        ("approve", Approval.ALLOW_ONCE),
        ("reject", Approval.DENY),
        (Approval.ALLOW_ONCE, Approval.ALLOW_ONCE),
        ({"decision": "allow_once"}, Approval.ALLOW_ONCE),
        ({"type": "approve"}, Approval.ALLOW_ONCE),
        ({"decision": "allow_once", "request_id": "other"}, Approval.DENY),
        ("maybe", Approval.DENY),
        (None, Approval.DENY),
        (1, Approval.DENY),
    ],
)
def test_parse_answer(answer: Any, expected: Approval) -> None:
    assert parse_answer(answer, "rid") == expected


def test_an_answer_for_another_call_denies() -> None:
    """Calls asking at once may ask in another order when the script runs again; an
    answer remembered as given to a different request is never applied."""
    req_a = ApprovalRequest(
        binding="refund",
        description="",
        effects=("write",),
        args={"order_id": "A"},
        code_sha256="sha",
    )
    req_b = ApprovalRequest(
        binding="refund",
        description="",
        effects=("write",),
        args={"order_id": "B"},
        code_sha256="sha",
    )
    session = SessionApprovals()
    conf: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": "tools:1"}}
    session.asked(("t", "tools:1", "sha", "0"), approval_payload(req_a)["request_id"])

    state = RunState(conf)
    approve = run_approver(lambda r: True, state, session)
    assert approve(req_b) == Approval.DENY
    assert state.notes and "another call" in state.notes[0]

    state = RunState(conf)
    approve = run_approver(lambda r: True, state, session)
    assert approve(req_a) is True
    assert state.approved == 1


def test_allow_session_is_remembered_across_runs() -> None:
    asked: list[str] = []

    def human(req: ApprovalRequest) -> Approval:
        asked.append(req.binding)
        return Approval.ALLOW_SESSION

    def write(x: int) -> int:
        return x

    js = SandboxedJSTool(
        bindings=[binding(write, effects=("write",))], policy=Policy(approve=human)
    )
    for _ in range(3):
        assert js.invoke({"code": "await tools.write({x: 1})"}) == "Result (JSON): 1"
    assert asked == ["write"]


async def test_async_approver_runs_in_the_tool_context() -> None:
    seen: list[str] = []

    async def human(req: ApprovalRequest) -> bool:
        from langchain_core.runnables.config import var_child_runnable_config

        cfg = var_child_runnable_config.get()
        seen.append((cfg or {}).get("metadata", {}).get("who", "?"))
        return True

    def write(x: int) -> int:
        return x

    js = SandboxedJSTool(
        bindings=[binding(write, effects=("write",))], policy=Policy(approve=human)
    )
    out = await js.ainvoke({"code": "await tools.write({x: 2})"}, {"metadata": {"who": "me"}})
    assert out == "Result (JSON): 2"
    assert seen == ["me"]
